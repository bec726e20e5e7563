package discovery_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/go-kit/kit/sd"

	"github.com/kitmesh/stringsvc/discovery"
	"github.com/kitmesh/stringsvc/discovery/consultest"
)

// TestInstancer watches real registrations come and go, including the empty
// set, through Go kit's Endpointer.
func TestInstancer(t *testing.T) {
	agent := consultest.Start(t)
	rt := &countingTransport{}
	client := newClient(t, agent.Addr, rt)
	inst := discovery.NewInstancer(client, "stringsvc-test", nil, discovery.InstancerOptions{})

	events := make(chan sd.Event, 100)
	inst.Register(events)
	waitFor := func(want int) {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for {
			select {
			case ev := <-events:
				if ev.Err == nil && len(ev.Instances) == want {
					return
				}
			case <-deadline:
				t.Fatalf("no event with %d instances", want)
			}
		}
	}
	waitFor(0)
	regClient := newClient(t, agent.Addr, nil)
	a, b := healthServer(t), healthServer(t)
	ra := startRegistrar(t, regClient, a)
	startRegistrar(t, regClient, b)
	waitFor(2)
	ra.Stop()
	ra.Deregister(context.Background())
	waitFor(1)

	// Stop must cancel the blocking query in flight, not leave it waiting
	// for minutes.
	consultest.Eventually(t, 5*time.Second, func() error {
		if rt.inFlight.Load() == 0 {
			return errors.New("no blocking query in flight yet")
		}
		return nil
	})
	inst.Stop()
	consultest.Eventually(t, 3*time.Second, func() error {
		if n := rt.inFlight.Load(); n != 0 {
			return fmt.Errorf("want 0 queries in flight after Stop, have %d", n)
		}
		return nil
	})
}
