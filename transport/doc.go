// Package transport turns the string service into Go kit endpoints and serves
// them as JSON over HTTP. It also holds the HTTP client side: a
// service.StringService that talks to another instance, and the sd.Factory
// that builds one guarded client endpoint (circuit breaker and rate limiter)
// per discovered instance.
//
// It must not know about Consul or import package discovery or its lb:
// instances arrive as "host:port" strings, and cmd hands each Guard to the
// pool as its lb.Health.
package transport
