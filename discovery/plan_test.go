package discovery_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/kitmesh/stringsvc/discovery"
	"github.com/kitmesh/stringsvc/discovery/consultest"
)

// A chain compiled by a real agent from a resolver with subsets, a 90/10
// splitter and a router becomes a Plan: the routes in order, the splits
// with their weights, the subsets as filters, and what is unsupported
// said and left out.
func TestCompilePlanFromARealChain(t *testing.T) {
	agent := consultest.Start(t)
	client := newClient(t, agent.Addr, nil)
	for _, e := range []api.ConfigEntry{
		&api.ServiceConfigEntry{Kind: api.ServiceDefaults, Name: "web", Protocol: "http"},
		&api.ServiceResolverConfigEntry{Kind: api.ServiceResolver, Name: "web", DefaultSubset: "v1",
			Subsets: map[string]api.ServiceResolverSubset{
				"v1": {Filter: "Service.Meta.version == v1"},
				"v2": {Filter: "Service.Meta.version == v2", OnlyPassing: true},
			},
			Failover: map[string]api.ServiceResolverFailover{"v1": {ServiceSubset: "v2"}},
		},
		&api.ServiceSplitterConfigEntry{Kind: api.ServiceSplitter, Name: "web", Splits: []api.ServiceSplit{
			{Weight: 90, ServiceSubset: "v1"}, {Weight: 10, ServiceSubset: "v2"},
		}},
		&api.ServiceRouterConfigEntry{Kind: api.ServiceRouter, Name: "web", Routes: []api.ServiceRoute{
			{Match: &api.ServiceRouteMatch{HTTP: &api.ServiceRouteHTTPMatch{Header: []api.ServiceRouteHTTPMatchHeader{{Name: "x-canary", Exact: "1"}}}},
				Destination: &api.ServiceRouteDestination{ServiceSubset: "v2", NumRetries: 5, RetryOnConnectFailure: true, RequestTimeout: 3 * time.Second}},
			{Match: &api.ServiceRouteMatch{HTTP: &api.ServiceRouteHTTPMatch{PathPrefix: "/count", Methods: []string{"GET"}}},
				Destination: &api.ServiceRouteDestination{ServiceSubset: "v2"}},
			{Match: &api.ServiceRouteMatch{HTTP: &api.ServiceRouteHTTPMatch{PathExact: "/rewrite"}},
				Destination: &api.ServiceRouteDestination{PrefixRewrite: "/uppercase"}},
			{Match: &api.ServiceRouteMatch{HTTP: &api.ServiceRouteHTTPMatch{QueryParam: []api.ServiceRouteHTTPMatchQueryParam{{Name: "v", Exact: "2"}}}},
				Destination: &api.ServiceRouteDestination{ServiceSubset: "v2"}},
		}},
	} {
		if _, _, err := client.ConfigEntries().Set(e, nil); err != nil {
			t.Fatal(err)
		}
	}
	resp, _, err := client.DiscoveryChain().Get("web", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	p := discovery.CompilePlan(resp.Chain)
	if p.Default {
		t.Error("want a shaped chain, have Default")
	}
	if len(p.Routes) != 4 {
		t.Errorf("want 4 routes (the canary header, path and method, the query, the catch-all), have %d: %+v", len(p.Routes), p.Routes)
	}
	if len(p.Unsupported) != 1 || !strings.Contains(p.Unsupported[0], "PrefixRewrite") {
		t.Errorf("want PrefixRewrite said unsupported, have %q", p.Unsupported)
	}
	target := func(r discovery.Request, roll float32) (discovery.Route, discovery.Target) {
		rt := p.Route(r)
		if rt == nil {
			t.Fatalf("%+v: no route", r)
		}
		return *rt, p.Targets[rt.Pick(roll).Target]
	}
	for _, tc := range []struct {
		name   string
		req    discovery.Request
		roll   float32
		subset string
	}{
		{"the splitter's 90", discovery.Request{Method: "POST", Path: "/uppercase"}, 89.9, "v1"},
		{"the splitter's 10", discovery.Request{Method: "POST", Path: "/uppercase"}, 90, "v2"},
		{"the canary header", discovery.Request{Method: "POST", Path: "/uppercase", Header: http.Header{"X-Canary": {"1"}}}, 0, "v2"},
		{"a header that differs", discovery.Request{Method: "POST", Path: "/uppercase", Header: http.Header{"X-Canary": {"0"}}}, 0, "v1"},
		{"path and method", discovery.Request{Method: "GET", Path: "/count"}, 0, "v2"},
		{"path, not the method", discovery.Request{Method: "POST", Path: "/count"}, 0, "v1"},
		{"the dropped route takes the default", discovery.Request{Method: "POST", Path: "/rewrite"}, 0, "v1"},
		{"a query parameter", discovery.Request{Method: "POST", Path: "/uppercase", Query: url.Values{"v": {"2"}}}, 0, "v2"},
	} {
		_, tg := target(tc.req, tc.roll)
		if tg.Subset != tc.subset {
			t.Errorf("%s: want subset %s, have %+v", tc.name, tc.subset, tg)
		}
	}
	rt, tg := target(discovery.Request{Path: "/uppercase", Header: http.Header{"X-Canary": {"1"}}}, 0)
	if rt.NumRetries != 5 || !rt.RetryOnConnectFailure || rt.RequestTimeout != 3*time.Second {
		t.Errorf("the canary route's overrides: have %+v", rt)
	}
	if tg.Filter != "Service.Meta.version == v2" || !tg.OnlyPassing {
		t.Errorf("subset v2: want its filter and OnlyPassing, have %+v", tg)
	}
	rt, tg = target(discovery.Request{Path: "/uppercase"}, 0)
	if tg.Subset != "v1" || len(rt.Splits) != 2 || rt.Splits[0].Weight != 90 || len(rt.Splits[0].Failover) != 1 || p.Targets[rt.Splits[0].Failover[0]].Subset != "v2" {
		t.Errorf("the default route: want 90/10 with v1 failing over to v2, have %+v", rt)
	}
}

// Without config entries the plan is one route to the service itself.
func TestCompilePlanOfTheDefaultChain(t *testing.T) {
	agent := consultest.Start(t)
	client := newClient(t, agent.Addr, nil)
	resp, _, err := client.DiscoveryChain().Get("web", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	p := discovery.CompilePlan(resp.Chain)
	if !p.Default || len(p.Routes) != 1 || len(p.Targets) != 1 || len(p.Unsupported) != 0 {
		t.Fatalf("want one route to one target, nothing unsupported, have %+v", p)
	}
	if tg := p.Targets[p.Route(discovery.Request{Path: "/uppercase"}).Pick(50).Target]; tg.Service != "web" || tg.Subset != "" || tg.Filter != "" {
		t.Errorf("want the whole service, have %+v", tg)
	}
}
