package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kitmesh/stringsvc/discovery/consultest"
	"github.com/kitmesh/stringsvc/internal/clustertest"
	"github.com/kitmesh/stringsvc/internal/load"
	"github.com/kitmesh/stringsvc/internal/member"
	"github.com/kitmesh/stringsvc/internal/probe"
)

// The fault tests: each starts its own Consul and members, puts them under
// a bounded load from the in-repo generator, breaks something, and asserts
// on what the load counted. Times are generous bounds, not measurements.

// cluster starts Consul and n members, and waits until every member is
// passing and sees all of them.
func cluster(t *testing.T, n int, extra ...string) (*consultest.Agent, []*clustertest.Node) {
	t.Helper()
	if testing.Short() {
		t.Skip("process-level test")
	}
	agent := consultest.Start(t)
	var nodes []*clustertest.Node
	for i := 0; i < n; i++ {
		nodes = append(nodes, clustertest.StartNode(t, string(rune('A'+i)), agent.Addr, extra...))
	}
	clustertest.WaitPassing(t, agent.Addr, 20*time.Second, nodes...)
	waitUpstreams(t, n, nodes...)
	return agent, nodes
}

func waitUpstreams(t *testing.T, want int, nodes ...*clustertest.Node) {
	t.Helper()
	consultest.Eventually(t, 15*time.Second, func() error {
		for _, n := range nodes {
			if u := n.Upstreams(); u != want {
				return fmt.Errorf("%s sees %d upstreams, want %d", n.Name, u, want)
			}
		}
		return nil
	})
}

// background runs a paced load on targets until stop is called, bounded by
// 60,000 requests and 3 minutes, and returns the result from stop.
func background(t *testing.T, targets []*clustertest.Node, pace time.Duration) (progress *load.Progress, stop func() load.Result) {
	t.Helper()
	progress = &load.Progress{}
	opts := clustertest.UpperLoad(targets[0], 60000, pace, progress)
	opts.Duration = 3 * time.Minute
	opts.Targets = nil
	for _, n := range targets {
		opts.Targets = append(opts.Targets, "http://"+n.Addr+"/uppercase")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan load.Result, 1)
	go func() { done <- load.Run(ctx, opts) }()
	consultest.Eventually(t, 30*time.Second, func() error {
		if s := progress.Succeeded.Load(); s < 100 {
			return fmt.Errorf("only %d requests answered so far", s)
		}
		return nil
	})
	return progress, func() load.Result {
		cancel()
		return <-done
	}
}

func alive(t *testing.T, nodes ...*clustertest.Node) {
	t.Helper()
	for _, n := range nodes {
		select {
		case <-n.Done():
			t.Errorf("%s exited: %v", n.Name, n.Err())
		default:
		}
	}
}

func TestFaultConsulRestart(t *testing.T) {
	agent, nodes := cluster(t, 3)
	_, stop := background(t, nodes, 20*time.Millisecond)
	agent.Restart() // dev mode: every registration is gone
	restarted := time.Now()
	clustertest.WaitPassing(t, agent.Addr, 15*time.Second, nodes...)
	took := time.Since(restarted)
	waitUpstreams(t, 3, nodes...)
	res := stop()
	t.Logf("Consul restart: all members passing again %v after the new agent had a leader; load %s", took.Round(time.Millisecond), res)
	if res.Failed != 0 {
		t.Errorf("want 0 failed requests, have %s", res)
	}
	alive(t, nodes...)
}

func TestFaultConsulOutage(t *testing.T) {
	agent, nodes := cluster(t, 3)
	a := nodes[0]
	_, stop := background(t, nodes, 20*time.Millisecond)
	agent.Stop()
	stopped := time.Now()
	// Halfway through the outage every member still balances over all.
	time.Sleep(10 * time.Second) // the outage itself, not synchronisation
	for _, n := range nodes {
		if u := n.Upstreams(); u != 3 {
			t.Errorf("%s during the outage: want the last set of 3 upstreams kept, have %d", n.Name, u)
		}
	}
	time.Sleep(time.Until(stopped.Add(20 * time.Second)))
	agent.Start()
	clustertest.WaitPassing(t, agent.Addr, 15*time.Second, nodes...)
	res := stop()
	t.Logf("Consul down 20s: load %s", res)
	if res.Failed != 0 {
		t.Errorf("want 0 failed requests, have %s", res)
	}
	for _, n := range nodes {
		log := n.Log()
		if c := strings.Count(log, "consul=unreachable"); c != 1 {
			t.Errorf("%s logged consul=unreachable %d times, want once", n.Name, c)
		}
		if c := strings.Count(log, "consul=reachable"); c != 1 {
			t.Errorf("%s logged consul=reachable %d times, want once", n.Name, c)
		}
	}
	if f := a.Metric(`stringsvc_fallbacks_total{reason="upstreams_failed"}`); f != 0 {
		t.Errorf("A fell back %v times: the kept upstreams should have served", f)
	}
}

func TestFaultMemberBeforeConsul(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	agent := consultest.Start(t)
	agent.Stop()
	e := clustertest.StartNode(t, "E", agent.Addr)
	if code, body := clustertest.Request(t, "POST", e.Addr, "/uppercase", `{"s":"hello, world"}`); code != 200 || !strings.Contains(body, "HELLO, WORLD") {
		t.Fatalf("without Consul: want 200 HELLO, WORLD served locally, have %d %s", code, body)
	}
	if f := e.Metric(`stringsvc_fallbacks_total{reason="no_upstreams"}`); f != 1 {
		t.Errorf("want the local fallback counted once, have %v", f)
	}
	time.Sleep(3 * time.Second) // Consul stays away a while; the member must keep trying
	agent.Start()
	up := time.Now()
	consultest.Eventually(t, 5*time.Second, func() error {
		ids, err := clustertest.Catalog(t, agent.Addr, false)
		if err != nil || strings.Join(ids, ",") != e.ID() {
			return fmt.Errorf("want %s registered, have %v (%v)", e.ID(), ids, err)
		}
		return nil
	})
	registered := time.Since(up)
	// Consul runs a new check first at a random point within its interval.
	clustertest.WaitPassing(t, agent.Addr, 15*time.Second, e)
	t.Logf("member started before Consul: registered %v and passing %v after Consul came up",
		registered.Round(time.Millisecond), time.Since(up).Round(time.Millisecond))
}

// TestFaultRollingRestart restarts every upstream member with SIGTERM, one
// at a time, while an edge member that is not restarted takes the load and
// forwards it across them.
func TestFaultRollingRestart(t *testing.T) {
	agent, nodes := cluster(t, 4)
	edge, members := nodes[3], nodes[:3]
	_, stop := background(t, []*clustertest.Node{edge}, 10*time.Millisecond)
	for _, n := range members {
		n.Kill(syscall.SIGTERM)
		if err := n.Wait(20 * time.Second); err != nil {
			t.Fatalf("%s: %v", n.Name, err)
		}
		n.Start()
		n.WaitServing()
		clustertest.WaitPassing(t, agent.Addr, 15*time.Second, nodes...)
		waitUpstreams(t, 4, edge)
	}
	// A member that rejoins starts at the balancer's default latency and
	// gets its share within seconds, not at once (so that a flapping one
	// gets no burst); keep the load on until the last one has some.
	consultest.Eventually(t, 15*time.Second, func() error {
		for _, n := range members {
			if n.Metric(clustertest.ServedUppercase) == 0 {
				return fmt.Errorf("%s has served nothing since its restart", n.Name)
			}
		}
		return nil
	})
	res := stop()
	t.Logf("rolling restart of 3 members behind the edge: %s", res)
	if res.Failed != 0 {
		t.Errorf("want 0 failed requests, have %s", res)
	}
	if f := edge.Metric(`stringsvc_fallbacks_total{reason="upstreams_failed"}`); f != 0 {
		t.Errorf("edge fell back %v times; want every forwarded request served by a member", f)
	}
}

// breakerState returns the breaker state that n's /debug/mesh shows for
// instance.
func breakerState(n *clustertest.Node, instance string) string {
	resp, err := probe.Do(http.MethodGet, "http://"+n.Addr+"/debug/mesh", "", nil)
	if err != nil {
		return ""
	}
	var v member.View
	if json.Unmarshal([]byte(resp.Body), &v) != nil {
		return ""
	}
	for _, u := range v.Upstreams {
		if u.Instance == instance {
			return u.State
		}
	}
	return "gone"
}

func TestFaultKillUpstream(t *testing.T) {
	// A longer check interval than the default, so that Consul is slow to
	// notice and the mesh has to cope on its own meanwhile.
	const interval = 5 * time.Second
	agent, nodes := cluster(t, 3, "-check.interval", interval.String())
	a, c := nodes[0], nodes[2]
	failures := func() float64 { return a.Metric(`stringsvc_proxy_attempts_total{outcome="failure"}`) }
	failedBefore := failures()
	_, stop := background(t, []*clustertest.Node{a}, 5*time.Millisecond)
	c.Kill(syscall.SIGKILL)
	killed := time.Now()
	var ejected, left time.Duration
	consultest.Eventually(t, interval+clustertest.CheckTimeout+2*time.Second, func() error {
		if ejected == 0 {
			if s := breakerState(a, c.Addr); s == "open" || s == "half-open" {
				ejected = time.Since(killed)
			}
		}
		ids, err := clustertest.Catalog(t, agent.Addr, true)
		if err != nil || strings.Contains(strings.Join(ids, ","), c.ID()) {
			return fmt.Errorf("%s still passing (%v)", c.ID(), err)
		}
		left = time.Since(killed)
		return nil
	})
	// Until Consul noticed, A kept C in its set. The dead member may cost
	// a few failed attempts (those in flight when it died, and the one
	// that opened its breaker), all retried elsewhere; without ejection it
	// would have taken its share of every request for seconds.
	failed := failures() - failedBefore
	res := stop()
	t.Logf("kill -9: %s; %v failed attempts at A; breaker seen open after %v; critical in Consul after %v",
		res, failed, ejected.Round(time.Millisecond), left.Round(time.Millisecond))
	if res.Failed != 0 {
		t.Errorf("want 0 failed requests, have %s", res)
	}
	if failed > 8 {
		t.Errorf("failed attempts on the dead member: want at most 8 (the load's concurrency), have %v", failed)
	}
	if opened := a.Metric(`stringsvc_upstream_breaker_changes_total{to="open"}`); failed > 0 && opened < 1 {
		t.Errorf("%v attempts failed but no breaker opened", failed)
	}
	// The point of ejection: A stops sending to C before Consul notices.
	if ejected == 0 || ejected >= left {
		t.Errorf("want C's breaker seen open before Consul marked it critical (%v), have %v (0: never)", left.Round(time.Millisecond), ejected.Round(time.Millisecond))
	}
}

func TestFaultHungUpstream(t *testing.T) {
	const attemptTimeout = 250 * time.Millisecond
	agent, nodes := cluster(t, 3)
	a, c := nodes[0], nodes[2]
	_, stop := background(t, []*clustertest.Node{a}, 10*time.Millisecond)
	c.Kill(syscall.SIGSTOP)
	time.Sleep(10 * time.Second) // the hang itself
	c.Kill(syscall.SIGCONT)
	res := stop()
	p99 := res.Quantile(0.99)
	t.Logf("SIGSTOP 10s: %s; p99 %v", res, p99)
	if res.Failed != 0 {
		t.Errorf("want 0 failed requests, have %s", res)
	}
	if margin := 300 * time.Millisecond; p99 > attemptTimeout+margin {
		t.Errorf("p99: want at most %v, have %v", attemptTimeout+margin, p99)
	}
	clustertest.WaitPassing(t, agent.Addr, 15*time.Second, nodes...)
}

func TestFaultAllUpstreamsDown(t *testing.T) {
	_, nodes := cluster(t, 3)
	a := nodes[0]
	attempts := func() float64 {
		return a.Metric(`stringsvc_proxy_attempts_total{outcome="success"}`) + a.Metric(`stringsvc_proxy_attempts_total{outcome="failure"}`)
	}
	before := attempts()
	progress, stop := background(t, []*clustertest.Node{a}, 5*time.Millisecond)
	nodes[1].Kill(syscall.SIGKILL)
	nodes[2].Kill(syscall.SIGKILL)
	waitUpstreams(t, 1, a)
	time.Sleep(2 * time.Second) // keep loading the lone member a while
	res := stop()
	// Every request sent to A enters the retrying forwarder once, so the
	// attempts beyond the number of requests are retries.
	requests := float64(progress.Succeeded.Load() + progress.Failed.Load())
	retries := attempts() - before - requests
	budget := 0.2*requests + 10*res.Elapsed.Seconds() + 10
	t.Logf("all upstreams down: %s; %v retries over %v requests (budget %v)", res, retries, requests, budget)
	if res.Failed != 0 {
		t.Errorf("want 0 failed requests, have %s", res)
	}
	if retries > budget {
		t.Errorf("retries: want at most %v, have %v", budget, retries)
	}
}
