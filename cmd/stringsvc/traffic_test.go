package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/kitmesh/stringsvc/discovery/consultest"
	"github.com/kitmesh/stringsvc/internal/clustertest"
	"github.com/kitmesh/stringsvc/internal/devconsul"
	"github.com/kitmesh/stringsvc/internal/member"
	"github.com/kitmesh/stringsvc/internal/poll"
	"github.com/kitmesh/stringsvc/internal/probe"
)

// targetShare is what the entry counted per subset of the chain's targets.
func targetShare(n *clustertest.Node, subset string) float64 {
	return n.Metric(fmt.Sprintf(`stringsvc_proxy_target_requests_total{datacenter="dc1",service="%s",subset="%s"}`, clustertest.ServiceName, subset))
}

// trafficView reads the entry's /debug/mesh traffic section.
func trafficView(t *testing.T, n *clustertest.Node) member.View {
	t.Helper()
	_, body := clustertest.Request(t, http.MethodGet, n.Addr, "/debug/mesh", "")
	var v member.View
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatalf("/debug/mesh: %v", err)
	}
	return v
}

// trafficCluster starts Consul and one member per args, named A, B, ...;
// the first is the entry the test sends to. It waits until the entry sees
// them all.
func trafficCluster(t *testing.T, args ...[]string) (*api.Client, []*clustertest.Node) {
	t.Helper()
	if testing.Short() {
		t.Skip("process-level test")
	}
	return trafficClusterOn(t, consultest.Start(t), args...)
}

// trafficClusterOn is trafficCluster on a running agent.
func trafficClusterOn(t *testing.T, agent *consultest.Agent, args ...[]string) (*api.Client, []*clustertest.Node) {
	t.Helper()
	consul, err := api.NewClient(&api.Config{Address: agent.Addr})
	if err != nil {
		t.Fatal(err)
	}
	var nodes []*clustertest.Node
	for i, a := range args {
		// Request logs are off unless a node's own arguments turn them on.
		nodes = append(nodes, clustertest.StartNode(t, string(rune('A'+i)), agent.Addr, a...))
	}
	clustertest.WaitPassing(t, agent.Addr, 20*time.Second, nodes...)
	waitUpstreams(t, len(nodes), nodes[0])
	return consul, nodes
}

// writeEntries writes config entries, as `consul config write` does.
func writeEntries(t *testing.T, consul *api.Client, entries ...api.ConfigEntry) {
	t.Helper()
	for _, e := range entries {
		if _, _, err := consul.ConfigEntries().Set(e, nil); err != nil {
			t.Fatal(err)
		}
	}
}

// deleteEntries deletes the service's entries of kinds, in order.
func deleteEntries(t *testing.T, consul *api.Client, kinds ...string) {
	t.Helper()
	for _, kind := range kinds {
		if _, err := consul.ConfigEntries().Delete(kind, clustertest.ServiceName, nil); err != nil {
			t.Fatal(err)
		}
	}
}

// tagSubsets is one resolver subset per tag, holding the members that
// carry it.
func tagSubsets(tags ...string) map[string]api.ServiceResolverSubset {
	out := map[string]api.ServiceResolverSubset{}
	for _, tag := range tags {
		out[tag] = api.ServiceResolverSubset{Filter: fmt.Sprintf("%q in Service.Tags", tag)}
	}
	return out
}

// httpDefaults makes the service's protocol http, which routes and splits
// need.
func httpDefaults() api.ConfigEntry {
	return &api.ServiceConfigEntry{Kind: api.ServiceDefaults, Name: clustertest.ServiceName, Protocol: "http"}
}

// Consul's splitter, router and resolver, written with the API as an
// operator writes them with `consul config write`, steer the entry's
// forwards: 90/10 within 2 points over 10,000 requests, a header route to
// v2, what is not applied said, and back to plain balancing when the
// entries go.
func TestTrafficManagement(t *testing.T) {
	consul, nodes := trafficCluster(t,
		[]string{"-service.tags", "v1", "-proxy.balancer", "roundrobin"},
		[]string{"-service.tags", "v1"},
		[]string{"-service.tags", "v2"},
		[]string{"-service.tags", "slow", "-debug.delay", "150ms"})
	entry, canary := nodes[0], nodes[2]
	set := func(entries ...api.ConfigEntry) { t.Helper(); writeEntries(t, consul, entries...) }
	name := clustertest.ServiceName
	set(httpDefaults(),
		&api.ServiceResolverConfigEntry{Kind: api.ServiceResolver, Name: name, DefaultSubset: "v1", Subsets: tagSubsets("v1", "v2", "slow")},
		&api.ServiceSplitterConfigEntry{Kind: api.ServiceSplitter, Name: name, Splits: []api.ServiceSplit{
			{Weight: 90, ServiceSubset: "v1"}, {Weight: 10, ServiceSubset: "v2"},
		}})
	written := time.Now()
	consultest.Eventually(t, 2*time.Second, func() error {
		v := trafficView(t, entry).Traffic
		if v == nil || v.Plan.Default || len(v.Targets) != 2 { // the splitter's; "slow" is no route's yet
			return fmt.Errorf("want the splitter's two targets applied, have %+v", v)
		}
		for id, tv := range v.Targets {
			if want := map[string]int{"v1": 2, "v2": 1}[tv.Target.Subset]; len(tv.Upstreams) != want {
				return fmt.Errorf("target %s: want %d instances, have %d", id, want, len(tv.Upstreams))
			}
		}
		return nil
	})
	t.Logf("splitter applied, with both subsets' pools filled, %v after the write", time.Since(written).Round(time.Millisecond))

	const requests = 10000
	v1, v2 := targetShare(entry, "v1"), targetShare(entry, "v2")
	var failed int
	for i := 0; i < requests; i++ {
		resp, err := probe.Do(http.MethodPost, "http://"+entry.Addr+"/uppercase", `{"s":"split"}`, nil)
		if err != nil || resp.Status != 200 {
			failed++
		}
	}
	d1, d2 := targetShare(entry, "v1")-v1, targetShare(entry, "v2")-v2
	share := 100 * d2 / (d1 + d2)
	t.Logf("%d requests: %d failed; v1 %.0f, v2 %.0f: v2's share %.2f%%", requests, failed, d1, d2, share)
	if failed != 0 || d1+d2 != requests || share < 8 || share > 12 {
		t.Errorf("want 0 failed and v2 at 10%% ± 2 of %d, have %d failed, %.0f counted, %.2f%%", requests, failed, d1+d2, share)
	}

	set(&api.ServiceRouterConfigEntry{Kind: api.ServiceRouter, Name: name, Routes: []api.ServiceRoute{
		{Match: &api.ServiceRouteMatch{HTTP: &api.ServiceRouteHTTPMatch{Header: []api.ServiceRouteHTTPMatchHeader{{Name: "x-canary", Exact: "1"}}}},
			Destination: &api.ServiceRouteDestination{ServiceSubset: "v2"}},
		{Match: &api.ServiceRouteMatch{HTTP: &api.ServiceRouteHTTPMatch{Header: []api.ServiceRouteHTTPMatchHeader{{Name: "x-slow", Exact: "patient"}}}},
			Destination: &api.ServiceRouteDestination{ServiceSubset: "slow"}},
		{Match: &api.ServiceRouteMatch{HTTP: &api.ServiceRouteHTTPMatch{Header: []api.ServiceRouteHTTPMatchHeader{{Name: "x-slow", Exact: "hasty"}}}},
			Destination: &api.ServiceRouteDestination{ServiceSubset: "slow", RequestTimeout: 50 * time.Millisecond, NumRetries: 1}},
		{Match: &api.ServiceRouteMatch{HTTP: &api.ServiceRouteHTTPMatch{PathExact: "/uppercase", Header: []api.ServiceRouteHTTPMatchHeader{{Name: "x-rewrite", Present: true}}}},
			Destination: &api.ServiceRouteDestination{PrefixRewrite: "/count"}},
	}})
	consultest.Eventually(t, 2*time.Second, func() error {
		v := trafficView(t, entry).Traffic
		if v == nil || len(v.Plan.Routes) < 2 || len(v.Plan.Unsupported) == 0 {
			return fmt.Errorf("want the router applied with PrefixRewrite unsupported, have %+v", v)
		}
		return nil
	})
	if u := trafficView(t, entry).Traffic.Plan.Unsupported; !strings.Contains(strings.Join(u, " "), "PrefixRewrite") {
		t.Errorf("want PrefixRewrite shown as not applied, have %q", u)
	}
	if n := strings.Count(entry.Log(), "PrefixRewrite"); n != 1 {
		t.Errorf("want the unsupported feature logged once, have %d", n)
	}
	before := clustertest.Served(canary)[0]
	v2 = targetShare(entry, "v2")
	const routed = 200
	for i := 0; i < routed; i++ {
		resp, err := probe.Do(http.MethodPost, "http://"+entry.Addr+"/uppercase", `{"s":"canary"}`, http.Header{"X-Canary": {"1"}})
		if err != nil || resp.Status != 200 || resp.Body != `{"v":"CANARY"}`+"\n" {
			t.Fatalf("header route, request %d: %v %+v", i, err, resp)
		}
	}
	if got, served := targetShare(entry, "v2")-v2, clustertest.Served(canary)[0]-before; got != routed || served != routed {
		t.Errorf("x-canary: 1: want all %d to v2 and served by the canary, have %.0f routed and %.0f served", routed, got, served)
	}
	// A route's RequestTimeout overrides the member's: the slow member
	// (150 ms) answers a patient route, and a hasty one (50 ms) gives up
	// on it and the entry serves the request itself.
	consultest.Eventually(t, 5*time.Second, func() error {
		if tv := trafficView(t, entry).Traffic.Targets; len(tv) < 3 {
			return fmt.Errorf("want the slow subset's pool too, have %d targets", len(tv))
		}
		return nil
	})
	// (The slow member gets the route's deadline in X-Stringsvc-Timeout-Ms
	// and answers 504 just before the entry's own timer fires. The entry
	// then serves the request itself: upstreams_failed while the slow
	// member's breaker is closed, no_upstreams once it has opened.)
	fallbacks := func() float64 {
		return entry.Metric(`stringsvc_fallbacks_total{reason="upstreams_failed"}`) + entry.Metric(`stringsvc_fallbacks_total{reason="no_upstreams"}`)
	}
	for _, tc := range []struct {
		header       string
		wantFallback float64
	}{{"patient", 0}, {"hasty", 10}} {
		f := fallbacks()
		for i := 0; i < 10; i++ {
			resp, err := probe.Do(http.MethodPost, "http://"+entry.Addr+"/uppercase", `{"s":"slow"}`, http.Header{"X-Slow": {tc.header}})
			if err != nil || resp.Body != `{"v":"SLOW"}`+"\n" {
				t.Fatalf("x-slow: %s: %v %+v", tc.header, err, resp)
			}
		}
		if got := fallbacks() - f; got != tc.wantFallback {
			t.Errorf("x-slow: %s: want %v of 10 served by the entry after the route's timeout, have %v", tc.header, tc.wantFallback, got)
		}
	}
	// The unsupported route's requests take the default route, never
	// another target: the rewrite is not done, Uppercase answers.
	resp, err := probe.Do(http.MethodPost, "http://"+entry.Addr+"/uppercase", `{"s":"rewrite"}`, http.Header{"X-Rewrite": {"1"}})
	if err != nil || resp.Body != `{"v":"REWRITE"}`+"\n" {
		t.Errorf("a route that is not applied: want the default route's answer, have %v %+v", err, resp)
	}

	deleteEntries(t, consul, api.ServiceRouter, api.ServiceSplitter, api.ServiceResolver, api.ServiceDefaults)
	consultest.Eventually(t, 2*time.Second, func() error {
		if v := trafficView(t, entry).Traffic; v == nil || !v.Plan.Default || len(v.Targets) != 1 {
			return fmt.Errorf("after the entries went: want plain balancing, have %+v", v)
		}
		return nil
	})
}

// A route's NumRetries overrides the member's attempts, and a path route
// takes what its path matches; the request log line names the target a
// forward took, and why the entry served it itself when it did.
func TestTrafficRoutes(t *testing.T) {
	consul, nodes := trafficCluster(t,
		[]string{"-service.tags", "entry", "-proxy.balancer", "roundrobin", "-proxy.max-attempts", "1", "-proxy.breaker-failures", "1000", "-proxy.retry-min", "1000", "-log.requests=true"},
		[]string{"-service.tags", "v1"},
		[]string{"-service.tags", "v2"})
	entry, v2 := nodes[0], nodes[2]
	// A v1 instance that answers every request with a 500: round robin
	// sends it every other forward, and its breaker never opens.
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, `{"error":"broken"}`, http.StatusInternalServerError)
	}))
	t.Cleanup(broken.Close)
	host, port, _ := net.SplitHostPort(broken.Listener.Addr().String())
	p, _ := strconv.Atoi(port)
	if err := consul.Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID: "broken", Name: clustertest.ServiceName, Tags: []string{"v1"}, Address: host, Port: p,
	}); err != nil {
		t.Fatal(err)
	}
	name := clustertest.ServiceName
	writeEntries(t, consul, httpDefaults(),
		&api.ServiceResolverConfigEntry{Kind: api.ServiceResolver, Name: name, DefaultSubset: "v1", Subsets: tagSubsets("v1", "v2")},
		&api.ServiceRouterConfigEntry{Kind: api.ServiceRouter, Name: name, Routes: []api.ServiceRoute{
			{Match: &api.ServiceRouteMatch{HTTP: &api.ServiceRouteHTTPMatch{Header: []api.ServiceRouteHTTPMatchHeader{{Name: "x-retry", Present: true}}}},
				Destination: &api.ServiceRouteDestination{ServiceSubset: "v1", NumRetries: 2}},
		}})
	consultest.Eventually(t, 5*time.Second, func() error {
		v := trafficView(t, entry).Traffic
		if v == nil || len(v.Plan.Routes) != 2 {
			return fmt.Errorf("want the router's route and the default one, have %+v", v)
		}
		for _, tv := range v.Targets {
			if tv.Target.Subset == "v1" && len(tv.Upstreams) == 2 {
				return nil
			}
		}
		return fmt.Errorf("want v1's two instances in its pool, have %+v", v.Targets)
	})
	fallbacks := func() float64 { return entry.Metric(`stringsvc_fallbacks_total{reason="upstreams_failed"}`) }
	const n = 20
	for _, tc := range []struct {
		header http.Header
		min    float64 // fallbacks
		max    float64
	}{
		{nil, n/2 - 1, n/2 + 1}, // one attempt: every other one meets the broken instance
		{http.Header{"X-Retry": {"1"}}, 0, 0},
	} {
		f := fallbacks()
		for i := 0; i < n; i++ {
			resp, err := probe.Do(http.MethodPost, "http://"+entry.Addr+"/uppercase", `{"s":"retry"}`, tc.header)
			if err != nil || resp.Body != `{"v":"RETRY"}`+"\n" {
				t.Fatalf("header %v, request %d: %v %+v", tc.header, i, err, resp)
			}
		}
		if got := fallbacks() - f; got < tc.min || got > tc.max {
			t.Errorf("header %v: want %v to %v of %d served by the entry, have %v", tc.header, tc.min, tc.max, n, got)
		}
	}
	// The log lines name the v1 target, and the fallbacks say so. They
	// are written from a buffer: wait for all of them.
	v1ID := "v1." + name + ".default.default.dc1"
	var named, fellBack int
	consultest.Eventually(t, 5*time.Second, func() error {
		named, fellBack = 0, 0
		for _, l := range strings.Split(entry.Log(), "\n") {
			if strings.Contains(l, "method=uppercase") && strings.Contains(l, "target="+v1ID) {
				named++
				if strings.Contains(l, "fallback=upstreams_failed") {
					fellBack++
				}
			}
		}
		if named < 2*n {
			return fmt.Errorf("%d request lines name %s so far", named, v1ID)
		}
		return nil
	})
	if named != 2*n || fellBack < n/2-1 || fellBack > n/2+1 {
		t.Errorf("want %d request lines naming %s, about %d of them fallbacks; have %d and %d", 2*n, v1ID, n/2, named, fellBack)
	}

	// A path route: a regex on the path and a method send every
	// Uppercase to v2; the exact path before it, with a trailing slash,
	// does not match "/uppercase" (were it matched as a prefix, v1 would
	// get the requests).
	writeEntries(t, consul, &api.ServiceRouterConfigEntry{Kind: api.ServiceRouter, Name: name, Routes: []api.ServiceRoute{
		{Match: &api.ServiceRouteMatch{HTTP: &api.ServiceRouteHTTPMatch{PathExact: "/uppercase/"}},
			Destination: &api.ServiceRouteDestination{ServiceSubset: "v1"}},
		{Match: &api.ServiceRouteMatch{HTTP: &api.ServiceRouteHTTPMatch{PathRegex: "/upper(case)?", Methods: []string{"POST"}}},
			Destination: &api.ServiceRouteDestination{ServiceSubset: "v2"}},
	}})
	consultest.Eventually(t, 5*time.Second, func() error {
		v := trafficView(t, entry).Traffic
		if v == nil || len(v.Plan.Routes) != 3 || len(v.Targets[v1ID].Upstreams) == 0 {
			return fmt.Errorf("want the path routes applied, have %+v", v)
		}
		for _, tv := range v.Targets {
			if tv.Target.Subset == "v2" && len(tv.Upstreams) == 1 {
				return nil
			}
		}
		return fmt.Errorf("want v2's pool filled, have %+v", v.Targets)
	})
	before, share := clustertest.Served(v2)[0], targetShare(entry, "v2")
	for i := 0; i < n; i++ {
		resp, err := probe.Do(http.MethodPost, "http://"+entry.Addr+"/uppercase", `{"s":"path"}`, nil)
		if err != nil || resp.Body != `{"v":"PATH"}`+"\n" {
			t.Fatalf("path route, request %d: %v %+v", i, err, resp)
		}
	}
	if routed, served := targetShare(entry, "v2")-share, clustertest.Served(v2)[0]-before; routed != n || served != n {
		t.Errorf("path route: want all %d to v2 and served there, have %.0f routed and %.0f served", n, routed, served)
	}
}

// When every v1 member is killed -9 under load, the resolver's failover
// sends v1's requests to v2: none fails, and the entry does not have to
// serve them itself.
func TestTrafficFailover(t *testing.T) {
	consul, nodes := trafficCluster(t, []string{"-service.tags", "entry"}, []string{"-service.tags", "v1"}, []string{"-service.tags", "v2"})
	entry, v1, v2 := nodes[0], nodes[1], nodes[2]
	writeEntries(t, consul, httpDefaults(), &api.ServiceResolverConfigEntry{
		Kind: api.ServiceResolver, Name: clustertest.ServiceName, DefaultSubset: "v1", Subsets: tagSubsets("v1", "v2"),
		Failover: map[string]api.ServiceResolverFailover{"v1": {ServiceSubset: "v2"}},
	})
	consultest.Eventually(t, 5*time.Second, func() error {
		v := trafficView(t, entry).Traffic
		if v == nil || len(v.Targets) != 2 {
			return fmt.Errorf("want v1 and its failover target, have %+v", v)
		}
		for id, tv := range v.Targets {
			if len(tv.Upstreams) != 1 {
				return fmt.Errorf("target %s: want 1 instance, have %d", id, len(tv.Upstreams))
			}
		}
		return nil
	})
	killUnderLoad(t, entry, v1, v2)
}

// killUnderLoad sends paced load to entry until primary has served 200,
// kills primary -9, and stops once 500 more requests were answered. It
// checks that none failed, that backup served at least 400 of them and the
// entry itself at most 5, and returns what backup served after the kill.
func killUnderLoad(t *testing.T, entry, primary, backup *clustertest.Node) float64 {
	t.Helper()
	servedBy := func(n *clustertest.Node) float64 { return clustertest.Served(n)[0] }
	fallbacks := func() float64 {
		return entry.Metric(`stringsvc_fallbacks_total{reason="upstreams_failed"}`) + entry.Metric(`stringsvc_fallbacks_total{reason="no_upstreams"}`)
	}
	progress, stop := background(t, []*clustertest.Node{entry}, time.Millisecond)
	consultest.Eventually(t, 10*time.Second, func() error {
		if b := servedBy(primary); b < 200 {
			return fmt.Errorf("%s has served %v so far", primary.Name, b)
		}
		return nil
	})
	b0, f0, at := servedBy(backup), fallbacks(), progress.Succeeded.Load()
	primary.Kill(syscall.SIGKILL)
	consultest.Eventually(t, 10*time.Second, func() error {
		if s := progress.Succeeded.Load(); s < at+500 {
			return fmt.Errorf("only %d answered since the kill", s-at)
		}
		return nil
	})
	res := stop()
	b, f := servedBy(backup)-b0, fallbacks()-f0
	t.Logf("load: sent %d, succeeded %d, failed %d; after the kill: %.0f served by %s, %.0f by the entry itself", res.Sent, res.Succeeded, res.Failed, b, backup.Name, f)
	if res.Failed != 0 {
		t.Errorf("want 0 failed, have %d of %d: %v", res.Failed, res.Sent, res.Errors)
	}
	if b < 400 || f > 5 {
		t.Errorf("want %s's requests failed over to %s, have %.0f served there and %.0f by the entry", primary.Name, backup.Name, b, f)
	}
	return b
}

// The resolver's Failover to another datacenter: two dev servers on
// loopback, dc1 and dc2, WAN-joined. When dc1's only v1 member is killed
// -9 under load, the entry's forwards go to v1 in dc2 (asked through its
// own agent with ?dc=dc2): none fails, and the entry does not have to
// serve them itself.
func TestTrafficFailoverToDatacenter(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	dc1 := consultest.Start(t)
	consul, nodes := trafficClusterOn(t, dc1, []string{"-service.tags", "entry"}, []string{"-service.tags", "v1"})
	entry, v1 := nodes[0], nodes[1]
	dc2 := consultest.StartWith(t, devconsul.Options{HCL: `datacenter = "dc2"`})
	if resp, err := probe.Do(http.MethodPut, "http://"+dc2.Addr+"/v1/agent/join/"+dc1.WANAddr()+"?wan=1", "", nil); err != nil || resp.Status != 200 {
		t.Fatalf("WAN join: %v %+v", err, resp)
	}
	consultest.Eventually(t, 10*time.Second, func() error {
		dcs, err := consul.Catalog().Datacenters()
		if err != nil || len(dcs) != 2 {
			return fmt.Errorf("dc1 knows datacenters %v (%v)", dcs, err)
		}
		return nil
	})
	remote := clustertest.StartNode(t, "R", dc2.Addr, "-service.tags", "v1")
	clustertest.WaitPassing(t, dc2.Addr, 20*time.Second, remote)
	writeEntries(t, consul, httpDefaults(), &api.ServiceResolverConfigEntry{
		Kind: api.ServiceResolver, Name: clustertest.ServiceName, DefaultSubset: "v1", Subsets: tagSubsets("v1"),
		Failover: map[string]api.ServiceResolverFailover{"v1": {Datacenters: []string{"dc2"}}},
	})
	remoteID := "v1." + clustertest.ServiceName + ".default.default.dc2"
	consultest.Eventually(t, 10*time.Second, func() error {
		v := trafficView(t, entry).Traffic
		if v == nil || len(v.Targets) != 2 || len(v.Targets[remoteID].Upstreams) != 1 {
			return fmt.Errorf("want v1 here and v1 in dc2 with one instance each, have %+v", v)
		}
		return nil
	})
	killUnderLoad(t, entry, v1, remote)
	t.Logf("%.0f forwards counted on dc2's target in all", entry.Metric(`stringsvc_proxy_target_requests_total{datacenter="dc2",service="`+clustertest.ServiceName+`",subset="v1"}`))
}

// Config entries written, changed and deleted under load take effect
// without a restart, and not one request fails on the way.
func TestTrafficLiveChange(t *testing.T) {
	consul, nodes := trafficCluster(t, []string{"-service.tags", "entry"}, []string{"-service.tags", "v1"}, []string{"-service.tags", "v2"})
	entry, v1, v2 := nodes[0], nodes[1], nodes[2]
	split := func(w1, w2 float32) {
		t.Helper()
		writeEntries(t, consul, httpDefaults(),
			&api.ServiceResolverConfigEntry{Kind: api.ServiceResolver, Name: clustertest.ServiceName, DefaultSubset: "v1", Subsets: tagSubsets("v1", "v2")},
			&api.ServiceSplitterConfigEntry{Kind: api.ServiceSplitter, Name: clustertest.ServiceName, Splits: []api.ServiceSplit{
				{Weight: w1, ServiceSubset: "v1"}, {Weight: w2, ServiceSubset: "v2"},
			}})
	}
	// onlyTo waits until the next requests all reach one member.
	onlyTo := func(n *clustertest.Node, others ...*clustertest.Node) {
		t.Helper()
		consultest.Eventually(t, 5*time.Second, func() error {
			before, rest := clustertest.Served(n)[0], clustertest.Served(others...)
			time.Sleep(200 * time.Millisecond) // a window of the running load
			after, restAfter := clustertest.Served(n)[0], clustertest.Served(others...)
			for i := range rest {
				if restAfter[i] != rest[i] {
					return fmt.Errorf("%s still served %v", others[i].Name, restAfter[i]-rest[i])
				}
			}
			if after == before {
				return fmt.Errorf("%s served nothing", n.Name)
			}
			return nil
		})
	}
	// firstOn writes and returns how long it took until n served its
	// first request since, polled every 5 ms: a measurement, logged, not
	// a bound (the bound is onlyTo's).
	firstOn := func(n *clustertest.Node, write func()) time.Duration {
		t.Helper()
		before := clustertest.Served(n)[0]
		written := time.Now()
		write()
		var took time.Duration
		if err := poll.Until(10*time.Second, 5*time.Millisecond, func() error {
			if clustertest.Served(n)[0] == before {
				return fmt.Errorf("%s has served nothing since the write", n.Name)
			}
			took = time.Since(written)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return took
	}
	_, stop := background(t, []*clustertest.Node{entry}, time.Millisecond)
	toV2 := firstOn(v2, func() { split(0, 100) })
	onlyTo(v2, v1)
	toV1 := firstOn(v1, func() { split(100, 0) })
	onlyTo(v1, v2)
	t.Logf("from the write to the first forward on the new target: %v (a new chain: 0/100), %v (a changed splitter: 100/0)", toV2.Round(time.Millisecond), toV1.Round(time.Millisecond))
	deleteEntries(t, consul, api.ServiceSplitter, api.ServiceResolver, api.ServiceDefaults)
	consultest.Eventually(t, 5*time.Second, func() error {
		before := clustertest.Served(v1, v2)
		time.Sleep(300 * time.Millisecond)
		after := clustertest.Served(v1, v2)
		if after[0] == before[0] || after[1] == before[1] {
			return fmt.Errorf("want plain balancing over all again, have v1 +%v, v2 +%v", after[0]-before[0], after[1]-before[1])
		}
		return nil
	})
	res := stop()
	t.Logf("load across three changes: sent %d, succeeded %d, failed %d", res.Sent, res.Succeeded, res.Failed)
	if res.Failed != 0 {
		t.Errorf("want 0 failed, have %d of %d: %v", res.Failed, res.Sent, res.Errors)
	}
}
