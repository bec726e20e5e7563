// Package load is the in-repo load generator used by the fault tests and
// the benchmark. It is closed-loop: a fixed number of workers, each sending
// its next request when the last one is answered, optionally paced. Every
// run is bounded in count and in time, and counts what it sent, what
// succeeded and what failed, by kind.
//
// It sits in the root module's internal/ so that both the service's own
// tests and the end-to-end module at internal/e2e (whose path lies below
// the root's) can import it. It imports only the standard library.
package load
