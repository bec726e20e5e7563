package client

import (
	"context"
	"maps"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-kit/kit/sd"

	"github.com/kitmesh/stringsvc/discovery"
	"github.com/kitmesh/stringsvc/discovery/lb"
	"github.com/kitmesh/stringsvc/transport/endpoints"
)

// instancers hands out one fixed instancer per target, an HTTP server
// that answers every Uppercase with the target's subset, and counts how
// often each was built and stopped.
type instancers struct {
	t       *testing.T
	mu      sync.Mutex
	built   map[string]int
	stopped map[string]int
}

type countedInstancer struct {
	sd.FixedInstancer
	stop func()
}

func (c countedInstancer) Stop() { c.stop() }

func (in *instancers) make(target discovery.Target) sd.Instancer {
	name := target.Subset
	if name == "" {
		name = "self"
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte(`{"v":"` + name + `"}`))
	}))
	in.t.Cleanup(srv.Close)
	in.mu.Lock()
	defer in.mu.Unlock()
	in.built[name]++
	return countedInstancer{
		FixedInstancer: sd.FixedInstancer{strings.TrimPrefix(srv.URL, "http://")},
		stop: func() {
			in.mu.Lock()
			defer in.mu.Unlock()
			in.stopped[name]++
		},
	}
}

func (in *instancers) counts() (built, stopped map[string]int) {
	in.mu.Lock()
	defer in.mu.Unlock()
	return maps.Clone(in.built), maps.Clone(in.stopped)
}

// subsetPlan is a plan with one target per subset, routing everything to
// the first.
func subsetPlan(subsets ...string) *discovery.Plan {
	p := &discovery.Plan{Targets: map[string]discovery.Target{}}
	for _, s := range subsets {
		t := discovery.Target{ID: s + ".svc.default.default.dc1", Service: "svc", Subset: s, Local: true, Filter: `"` + s + `" in Service.Tags`}
		p.Targets[t.ID] = t
	}
	// Everything to the first subset.
	p.Routes = []discovery.Route{{Splits: []discovery.Split{{Weight: 100, Target: subsets[0] + ".svc.default.default.dc1"}}}}
	return p
}

// A new plan reuses the chains of the targets it keeps, builds the new
// ones, and retires the rest only after the grace period; Close stops
// every instancer once, retired ones included.
func TestRouterPlanChangesAndClose(t *testing.T) {
	in := &instancers{t: t, built: map[string]int{}, stopped: map[string]int{}}
	r, err := NewRouter(RouterOptions{
		Service:   "svc",
		Instancer: in.make,
		Chain:     ChainOptions{Retry: lb.RetryOptions{MaxAttempts: 1, Timeout: time.Second, AttemptTimeout: time.Second}},
	})
	if err != nil {
		t.Fatal(err)
	}
	call := func() string {
		t.Helper()
		resp, err := r.Endpoint()(context.Background(), endpoints.UppercaseRequest{S: "x"})
		if err != nil {
			t.Fatal(err)
		}
		return resp.(endpoints.UppercaseResponse).V
	}
	if got := call(); got != "self" {
		t.Fatalf("without a plan: want the service itself, have %q", got)
	}

	if err := r.apply(subsetPlan("v1", "v2")); err != nil {
		t.Fatal(err)
	}
	if got := call(); got != "v1" {
		t.Fatalf("plan v1, v2: want v1, have %q", got)
	}
	if err := r.apply(subsetPlan("v3", "v1")); err != nil {
		t.Fatal(err)
	}
	if got := call(); got != "v3" {
		t.Fatalf("plan v3, v1: want v3, have %q", got)
	}
	built, stopped := in.counts()
	if want := map[string]int{"self": 1, "v1": 1, "v2": 1, "v3": 1}; !maps.Equal(built, want) {
		t.Errorf("built: want %v (v1 reused), have %v", want, built)
	}
	if len(stopped) != 0 {
		t.Errorf("before the grace period: want nothing stopped, have %v", stopped)
	}
	r.mu.Lock()
	retired := len(r.retired)
	r.mu.Unlock()
	if retired != 2 { // self and v2
		t.Errorf("want 2 chains retired, waiting out the grace period; have %d", retired)
	}

	r.Close()
	built, stopped = in.counts()
	if !maps.Equal(stopped, built) {
		t.Errorf("after Close: want every instancer stopped once (%v), have %v", built, stopped)
	}
}
