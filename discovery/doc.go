// Package discovery connects a member to Consul: it registers the member and
// keeps that registration alive, watches the passing instances of the
// service through Go kit's sd/consul Instancer and sd.Endpointer, and
// chooses among them with a balancer and a disciplined retry.
//
// It takes an sd.Factory to build one endpoint per instance and must not
// know how that endpoint talks to the instance (it never imports transport).
package discovery
