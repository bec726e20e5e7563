package discovery_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-kit/kit/sd"
	"github.com/hashicorp/consul/api"

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

// filterSeen records the filter parameter of every health query.
type filterSeen struct {
	mu      sync.Mutex
	filters []string
}

func (f *filterSeen) RoundTrip(r *http.Request) (*http.Response, error) {
	if strings.HasPrefix(r.URL.Path, "/v1/health/") {
		f.mu.Lock()
		f.filters = append(f.filters, r.URL.Query().Get("filter"))
		f.mu.Unlock()
	}
	return http.DefaultTransport.RoundTrip(r)
}

// A subset's instancer asks Consul for the subset only: the filter goes
// with every query, and only the matching instance arrives.
func TestInstancerFiltersAtConsul(t *testing.T) {
	agent := consultest.Start(t)
	seen := &filterSeen{}
	client := newClient(t, agent.Addr, seen)
	for i, tag := range []string{"v1", "v2"} {
		if err := client.Agent().ServiceRegister(&api.AgentServiceRegistration{
			ID: "web-" + tag, Name: "web", Address: "127.0.0.1", Port: 9000 + i, Tags: []string{tag},
		}); err != nil {
			t.Fatal(err)
		}
	}
	const filter = `"v2" in Service.Tags`
	inst := discovery.NewInstancer(client, "web", nil, discovery.InstancerOptions{Filter: filter})
	defer inst.Stop()
	events := make(chan sd.Event, 10)
	inst.Register(events)
	defer inst.Deregister(events)
	deadline := time.After(10 * time.Second)
	for {
		select {
		case ev := <-events:
			if len(ev.Instances) == 1 && ev.Instances[0] == "127.0.0.1:9001" {
				seen.mu.Lock()
				defer seen.mu.Unlock()
				for _, f := range seen.filters {
					if f != filter {
						t.Errorf("a health query without the subset's filter: %q", f)
					}
				}
				return
			}
		case <-deadline:
			t.Fatal("no event with only the v2 instance")
		}
	}
}
