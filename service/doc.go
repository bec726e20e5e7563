// Package service is the business of the mesh member: a tiny string service
// and the middlewares that wrap it, one file each: logging, instrumenting,
// proxying, and delay (for drills only).
//
// The proxying middleware sees other instances only as a Forwarder function
// that cmd wires to the discovery/lb and transport packages.
//
// It must not know about HTTP, JSON or Consul: it imports only the standard
// library and Go kit's log and metrics interfaces (internal/archtest checks
// the rule).
package service
