package consultest

import (
	"os"
	"testing"
	"time"

	"github.com/kitmesh/stringsvc/internal/devconsul"
	"github.com/kitmesh/stringsvc/internal/poll"
)

// Agent is a real dev agent started for a test (see internal/devconsul).
type Agent struct {
	*devconsul.Agent
	t testing.TB
}

// Binary returns the path of the Consul binary. Without one it skips t,
// or fails it under CI=true.
func Binary(t testing.TB) string {
	t.Helper()
	b, err := devconsul.Binary()
	if err == nil {
		return b
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%v (CI must not skip this test)", err)
	}
	t.Skip(err)
	return ""
}

// Start starts an agent and stops it when the test ends; a failed test
// gets the agent's log.
func Start(t testing.TB) *Agent {
	t.Helper()
	return StartWith(t, devconsul.Options{})
}

// StartWith is Start with options: ACLs, TLS.
func StartWith(t testing.TB, o devconsul.Options) *Agent {
	t.Helper()
	a, err := devconsul.StartWith(Binary(t), nil, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		a.Stop()
		if t.Failed() {
			t.Logf("consul log:\n%s", a.Log())
		}
	})
	return &Agent{Agent: a, t: t}
}

// Start starts a stopped agent again on the same ports.
func (a *Agent) Start() {
	a.t.Helper()
	if err := a.Agent.Start(); err != nil {
		a.t.Fatal(err)
	}
}

// Restart stops the agent and starts a fresh one on the same ports.
func (a *Agent) Restart() {
	a.t.Helper()
	if err := a.Agent.Restart(); err != nil {
		a.t.Fatal(err)
	}
}

// FreePort returns a free loopback port below the ephemeral range.
func FreePort(t testing.TB) int {
	t.Helper()
	p, err := devconsul.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Eventually polls cond every 20ms until it returns nil or timeout passes,
// then fails t with cond's last error.
func Eventually(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	if err := poll.Until(timeout, 20*time.Millisecond, cond); err != nil {
		t.Fatal(err)
	}
}
