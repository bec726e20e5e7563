// Package discovery connects a member to Consul, as Go kit's sd/consul does:
// it registers the member and keeps that registration alive (registrar.go),
// chooses the address to advertise (address.go), and watches the passing
// instances of a service through Go kit's sd/consul Instancer
// (instancer.go, watch.go), logging once per change whether Consul answers
// (reachability.go).
//
// What to do with the instances, balancing and retries, is package
// discovery/lb. This package must not import discovery/lb, transport or
// service: instances leave it as "host:port" strings on an sd.Instancer.
package discovery
