// Package clustertest holds the helpers of the process-level and container
// tests: the member built once with the race detector, started as real
// processes on loopback (Node), and what the tests ask of members and of
// Consul. It serves both the service's own tests in cmd/stringsvc and the
// end-to-end module at internal/e2e, so that neither keeps a copy.
//
// It never imports cmd/: the member is built by import path and run as a
// process, as a user runs it.
package clustertest
