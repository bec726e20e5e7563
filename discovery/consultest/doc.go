// Package consultest starts a real Consul agent in dev mode for tests.
//
// It looks for the binary in $CONSUL_BIN, then bin/consul at the top of the
// repository (built by `make consul`), then $PATH. Without one, a test is
// skipped, except under CI=true, where it fails: CI must never pass by not
// testing.
package consultest
