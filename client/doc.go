// Package client is the mesh's client side, modelled on Go kit's
// profilesvc/client: give it a Consul address, or a fixed list of
// instances, and get StringService back, balanced and retried across the
// instances, with a breaker and a limiter per instance. Members forward
// through the same Chain.
//
// It knows Consul only through package discovery, and HTTP only through
// package transport.
package client
