package discovery

import (
	"testing"

	"github.com/hashicorp/consul/api"
)

// While a quorum is lost, each answer names another server: the reason,
// and so the log line, stays one.
func TestDescribeIsTheSameAcrossServers(t *testing.T) {
	a := describe("discover", "stringsvc", api.StatusError{Code: 500, Body: "rpc error getting client: failed to get conn: dial tcp 10.0.0.3:8300: connect: connection refused"})
	b := describe("discover", "stringsvc", api.StatusError{Code: 500, Body: "rpc error getting client: failed to get conn: dial tcp 10.0.0.4:8300: connect: connection refused"})
	c := describe("discover", "stringsvc", api.StatusError{Code: 500, Body: "rpc error getting client: failed to get conn: dial tcp [fd00::4]:8300: connect: connection refused"})
	if a != b || a != c {
		t.Errorf("want one reason, have %q, %q and %q", a, b, c)
	}
	for _, body := range []string{"No cluster leader", "rpc error making call: No cluster leader"} {
		if have, want := describe("register", "stringsvc", api.StatusError{Code: 500, Body: body}), "Consul has no leader (it answered 500 to register)"; have != want {
			t.Errorf("%q: want %q, have %q", body, want, have)
		}
	}
}
