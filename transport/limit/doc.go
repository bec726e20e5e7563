// Package limit decides how many requests a server lets in at once. The
// number follows measured latency, as Netflix's concurrency-limits and
// Envoy's adaptive concurrency filter do: while requests come back about as
// fast as they do unloaded the limit grows, and once they queue (latency
// rises) it shrinks. (The algorithms also take drops, which a caller may
// report; the mesh member reports none: see transport.) The requests in
// service stay few, so their latency stays near the unloaded one; the
// excess waits in a
// bounded first-come-first-served queue (SetQueue, Wait), forwards from
// peers first, and is refused when the queue is full or its wait runs out.
//
// A Limiter admits and releases requests; an Algorithm (gradient, vegas,
// aimd, or fixed for the old constant cap) turns each finished request into
// a new limit.
//
// The package knows nothing of HTTP, Consul or metrics libraries: the caller
// decides what a response means (Success, Dropped or Ignore), what a refusal
// looks like on the wire, and exports Limit, InFlight and Waiting itself.
// That keeps the algorithms testable with plain numbers and a fake clock.
package limit
