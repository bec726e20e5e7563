package discovery_test

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/kitmesh/stringsvc/discovery/consultest"
)

func TestRegistrarRegistersAndHeals(t *testing.T) {
	agent := consultest.Start(t)
	client := newClient(t, agent.Addr, nil)
	addr := healthServer(t)
	r := startRegistrar(t, client, addr)

	host, port, _ := net.SplitHostPort(addr)
	want := fmt.Sprintf("stringsvc-test-%s-%s %s:%s", host, port, host, port)
	waitPassing := func(why string) {
		t.Helper()
		consultest.Eventually(t, 10*time.Second, func() error {
			if have := passing(t, client, "stringsvc-test"); len(have) != 1 || have[0] != want {
				return fmt.Errorf("%s: want [%s] passing, have %v", why, want, have)
			}
			return nil
		})
	}
	waitPassing("first registration")
	if !r.Registered() {
		t.Error("Registered: want true")
	}

	// The agent loses the registration behind our back.
	if err := client.Agent().ServiceDeregister(r.ID()); err != nil {
		t.Fatal(err)
	}
	waitPassing("after the agent lost it")

	// A dev agent restarted on the same ports has lost everything.
	agent.Restart()
	waitPassing("after a Consul restart")

	// Deregister is immediate, not a wait for the check to fail.
	r.Stop()
	if err := r.Deregister(context.Background()); err != nil {
		t.Fatal(err)
	}
	if have := passing(t, client, "stringsvc-test"); len(have) != 0 {
		t.Errorf("after Deregister: want none, have %v", have)
	}
}

func TestRegistrarWaitsForConsul(t *testing.T) {
	agent := consultest.Start(t)
	agent.Stop()
	rt := &countingTransport{}
	client := newClient(t, agent.Addr, rt)
	addr := healthServer(t)
	r := startRegistrar(t, client, addr)
	// Wait until it has tried and failed a few times.
	consultest.Eventually(t, 10*time.Second, func() error {
		if n := rt.total.Load(); n < 3 {
			return fmt.Errorf("%d attempts so far", n)
		}
		return nil
	})
	if r.Registered() {
		t.Fatal("registered while Consul is down")
	}
	agent.Start()
	began := time.Now()
	consultest.Eventually(t, 10*time.Second, func() error {
		if have := passing(t, client, "stringsvc-test"); len(have) != 1 {
			return fmt.Errorf("want 1 passing, have %v", have)
		}
		return nil
	})
	t.Logf("registered %v after Consul answered", time.Since(began))
}
