// Package consultest holds the Consul helpers of the tests: a real dev
// agent per test (through internal/devconsul), a free-port helper, the
// poll-until-deadline helper, and Fake, an httptest stand-in for the few
// Consul endpoints a member uses, for unit tests of our own Consul logic.
//
// The real agent's binary comes from $CONSUL_BIN, then bin/consul at the
// top of the repository (built by `make consul`), then $PATH. Without one,
// a test is skipped, except under CI=true, where it fails: CI must never
// pass by not testing.
package consultest
