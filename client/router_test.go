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

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/sd"
	"github.com/hashicorp/consul/api"

	"github.com/kitmesh/stringsvc/discovery"
	"github.com/kitmesh/stringsvc/discovery/lb"
	"github.com/kitmesh/stringsvc/transport"
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

	// A plan whose target has the chain of the service itself under
	// another ID (Consul's): the chain is reused, and the log line names
	// the plan's ID, not the one the chain was built for.
	whole := &discovery.Plan{
		Targets: map[string]discovery.Target{"svc.default.default.dc1": {ID: "svc.default.default.dc1", Service: "svc", Datacenter: "dc1", Local: true}},
		Routes:  []discovery.Route{{Splits: []discovery.Split{{Weight: 100, Target: "svc.default.default.dc1"}}}},
	}
	if err := r.apply(whole); err != nil {
		t.Fatal(err)
	}
	ctx := requestContext(t)
	if resp, err := r.Endpoint()(ctx, endpoints.UppercaseRequest{S: "x"}); err != nil || resp.(endpoints.UppercaseResponse).V != "self" {
		t.Fatalf("the whole service again: want the first chain's answer, have %v %v", resp, err)
	}
	if target, _ := transport.Noted(ctx); target == nil || *target != "svc.default.default.dc1" {
		have := "none"
		if target != nil {
			have = *target
		}
		t.Errorf("noted target: want the plan's ID svc.default.default.dc1, have %s", have)
	}
	if built, _ := in.counts(); built["self"] != 1 {
		t.Errorf("want the service's chain reused, have it built %d times", built["self"])
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

// BenchmarkRouterOverhead is what the Router adds to a forward over the
// chain it wraps, with the instance answering in-process so that nothing
// else is measured: without config entries, and with a router (one header
// route, not taken), a 50/50 splitter and two subset targets.
func BenchmarkRouterOverhead(b *testing.B) {
	local := func(context.Context, interface{}) (interface{}, error) {
		return endpoints.UppercaseResponse{V: "X"}, nil
	}
	opts := ChainOptions{
		Upstream: UpstreamOptions{Self: func() string { return "self:1" }, Local: local},
		Retry:    lb.RetryOptions{MaxAttempts: 3, Timeout: time.Second, AttemptTimeout: 250 * time.Millisecond, Budget: lb.NewBudget(0.2, 10)},
	}
	fixed := func(discovery.Target) sd.Instancer {
		return countedInstancer{FixedInstancer: sd.FixedInstancer{"self:1"}, stop: func() {}}
	}
	// The chain Consul compiles from a router with one header route, a
	// 50/50 splitter and a resolver with subsets v1 and v2.
	target := func(subset string) *api.DiscoveryTarget {
		return &api.DiscoveryTarget{ID: subset + ".svc.default.default.dc1", Service: "svc", ServiceSubset: subset, Datacenter: "dc1",
			Subset: api.ServiceResolverSubset{Filter: `"` + subset + `" in Service.Tags`}}
	}
	resolver := func(subset string) *api.DiscoveryGraphNode {
		return &api.DiscoveryGraphNode{Type: api.DiscoveryGraphNodeTypeResolver, Resolver: &api.DiscoveryResolver{Target: subset + ".svc.default.default.dc1"}}
	}
	withChain := discovery.CompilePlan(&api.CompiledDiscoveryChain{
		ServiceName: "svc", Datacenter: "dc1", Protocol: "http", StartNode: "router:svc",
		Nodes: map[string]*api.DiscoveryGraphNode{
			"router:svc": {Type: api.DiscoveryGraphNodeTypeRouter, Routes: []*api.DiscoveryRoute{
				{Definition: &api.ServiceRoute{Match: &api.ServiceRouteMatch{HTTP: &api.ServiceRouteHTTPMatch{Header: []api.ServiceRouteHTTPMatchHeader{{Name: "x-canary", Exact: "1"}}}}}, NextNode: "resolver:v2"},
				{Definition: &api.ServiceRoute{Match: &api.ServiceRouteMatch{HTTP: &api.ServiceRouteHTTPMatch{PathPrefix: "/"}}}, NextNode: "splitter:svc"},
			}},
			"splitter:svc": {Type: api.DiscoveryGraphNodeTypeSplitter, Splits: []*api.DiscoverySplit{{Weight: 50, NextNode: "resolver:v1"}, {Weight: 50, NextNode: "resolver:v2"}}},
			"resolver:v1":  resolver("v1"),
			"resolver:v2":  resolver("v2"),
		},
		Targets: map[string]*api.DiscoveryTarget{"v1.svc.default.default.dc1": target("v1"), "v2.svc.default.default.dc1": target("v2")},
	})
	if len(withChain.Routes) != 2 || len(withChain.Routes[1].Splits) != 2 || len(withChain.Unsupported) != 0 {
		b.Fatalf("want a header route and a 50/50 default route, have %+v", withChain)
	}
	// The context of a real HTTP request, so that matching reads the
	// request and the target is noted.
	ctx := requestContext(b)
	run := func(b *testing.B, ep endpoint.Endpoint) {
		req := endpoints.UppercaseRequest{S: "x"}
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, err := ep(ctx, req); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("chain", func(b *testing.B) {
		c, err := NewChain(fixed(discovery.Target{}), opts)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		run(b, c.Endpoint())
	})
	for _, tc := range []struct {
		name string
		plan *discovery.Plan
	}{{"router_no_entries", nil}, {"router_with_chain", withChain}} {
		b.Run(tc.name, func(b *testing.B) {
			r, err := NewRouter(RouterOptions{Service: "svc", Instancer: fixed, Chain: opts})
			if err != nil {
				b.Fatal(err)
			}
			defer r.Close()
			if tc.plan != nil {
				if err := r.apply(tc.plan); err != nil {
					b.Fatal(err)
				}
			}
			run(b, r.Endpoint())
		})
	}
}

// requestContext is the context of an endpoint call as the member's HTTP
// server makes it, with the request kept in it.
func requestContext(tb testing.TB) context.Context {
	tb.Helper()
	var ctx context.Context
	capture := func(c context.Context, _ interface{}) (interface{}, error) {
		ctx = c
		return endpoints.UppercaseResponse{V: "X"}, nil
	}
	h := transport.NewHTTPHandler(endpoints.Set{UppercaseEndpoint: capture, CountEndpoint: capture}, transport.HandlerOptions{})
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodPost, "/uppercase", strings.NewReader(`{"s":"x"}`)))
	if transport.RequestFrom(ctx) == nil {
		tb.Fatal("no request in the captured context")
	}
	return ctx
}
