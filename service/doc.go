// Package service is the business of the mesh member: a tiny string service
// and the middlewares that wrap it (logging, instrumenting, proxying).
//
// It must not know about HTTP, JSON or Consul. The proxying middleware sees
// other instances only as a Forwarder function that cmd wires to the
// discovery and transport packages.
package service
