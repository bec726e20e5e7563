package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/kitmesh/stringsvc/discovery/consultest"
	"github.com/kitmesh/stringsvc/internal/clustertest"
	"github.com/kitmesh/stringsvc/internal/devconsul"
	"github.com/kitmesh/stringsvc/internal/load"
	"github.com/kitmesh/stringsvc/internal/probe"
	"github.com/kitmesh/stringsvc/transport"
)

// standalone starts a member without Consul, with extra flags.
func standalone(t *testing.T, name string, extra ...string) *clustertest.Node {
	t.Helper()
	if testing.Short() {
		t.Skip("process-level test")
	}
	addr := "127.0.0.1:" + strconv.Itoa(consultest.FreePort(t))
	return clustertest.StartProcess(t, name, addr, append([]string{"-http.addr", addr, "-consul.addr", "none", "-log.requests=false"}, extra...)...)
}

// answerCounter counts the 503 answers that carry Retry-After: 1, and
// the answers that end their connection (Connection: close).
type answerCounter struct {
	retryAfter, closed *atomic.Int64
	next               http.RoundTripper
}

func (c answerCounter) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := c.next.RoundTrip(r)
	if err != nil {
		return resp, err
	}
	if resp.StatusCode == 503 && resp.Header.Get("Retry-After") == "1" {
		c.retryAfter.Add(1)
	}
	if resp.Close {
		c.closed.Add(1)
	}
	return resp, err
}

// Far more clients than the member may serve or queue: every request is
// answered, either served or shed with a fast 503 and Retry-After; none
// fails otherwise; the member counts exactly the sheds the clients saw;
// and the shed clients keep their connections: no answer closes one.
func TestOverloadShedsAndCounts(t *testing.T) {
	n := standalone(t, "A", "-http.max-inflight", "8", "-http.max-queue", "8", "-debug.delay", "5ms")
	const clients, requests = 64, 4000
	var dials, retryAfter, closed atomic.Int64
	dialer := &net.Dialer{Timeout: 2 * time.Second}
	client := &http.Client{Timeout: 10 * time.Second, Transport: answerCounter{&retryAfter, &closed, &http.Transport{
		// At most one connection per client: a request that beats its
		// own connection back to the pool waits for it instead of
		// dialing, so every dial past the first 64 is a closed one.
		MaxIdleConnsPerHost: clients, MaxConnsPerHost: clients,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			return dialer.DialContext(ctx, network, addr)
		},
	}}}
	res := load.Run(context.Background(), load.Options{
		Targets: []string{"http://" + n.Addr + "/count"}, Body: []byte(`{"s":"hello"}`),
		Concurrency: clients, Requests: requests, Duration: time.Minute, Client: client,
		Check: func(code int, body []byte) error {
			switch {
			case code == 200 && string(body) == `{"v":5}`+"\n":
				return nil
			case code == 503 && strings.Contains(string(body), `"error":"overloaded`):
				return fmt.Errorf("shed")
			}
			return fmt.Errorf("status %d %q", code, body)
		},
	})
	shed := res.Errors["shed"]
	metricShed := n.Metric(`stringsvc_http_shed_total{path="/count"}`)
	t.Logf("sent %d: served %d, shed %d, other failures %d (%v); member counted %.0f shed; %d dials, %d answers with Connection: close", res.Sent, res.Succeeded, shed, res.Failed-shed, res.Errors, metricShed, dials.Load(), closed.Load())
	if res.Sent != requests || res.Succeeded+shed != res.Sent {
		t.Errorf("want all %d answered, served or shed; have %d sent, %d served, %d shed, %v", requests, res.Sent, res.Succeeded, shed, res.Errors)
	}
	if shed == 0 || res.Succeeded == 0 {
		t.Errorf("want both served and shed requests at 64 clients over a ceiling of 8 and a queue of 8, have %d served and %d shed", res.Succeeded, shed)
	}
	if have := retryAfter.Load(); have != shed {
		t.Errorf("want every 503 with Retry-After: 1, have %d of %d", have, shed)
	}
	if metricShed != float64(shed) {
		t.Errorf("want the member's shed count to be the clients', %d; have %.0f", shed, metricShed)
	}
	// No answer ends its connection, neither by saying so nor by
	// closing it: a member that closed on shedding would need about one
	// dial per shed request. (Without MaxConnsPerHost, net/http's client
	// dials when a request beats its connection back to the pool: CI saw
	// 82 dials for 64 clients.)
	if c := closed.Load(); c != 0 {
		t.Errorf("want shed requests to keep their connections; %d answers had Connection: close", c)
	}
	if d := dials.Load(); d > clients+clients/8 {
		t.Errorf("want shed requests to keep their connections, one dial per client (%d); have %d for %d sheds", clients, d, shed)
	}
	// The limit is visible, and never above the ceiling.
	if l := n.Metric("stringsvc_http_concurrency_limit"); l < 1 || l > 8 {
		t.Errorf("want a concurrency limit between 1 and the ceiling 8, have %v", l)
	}
	if code, body := clustertest.Request(t, http.MethodPost, n.Addr, "/count", `{"s":"still here"}`); code != 200 {
		t.Errorf("after the overload: want 200, have %d %s", code, body)
	}
}

// A forward carries the caller's remaining time. Across two hops, a
// client's 1 ms budget is spent by the time the entry forwards: the peer
// drops the request unserved and counts it.
func TestDeadlineAcrossTwoHops(t *testing.T) {
	peer := standalone(t, "B")
	// Attempts as long as the callers allow: the first forward to a fresh
	// -race build may take longer than the default 250 ms, and a timed-out
	// attempt would be served by the entry itself.
	entry := standalone(t, "A", "-proxy", peer.Addr, "-proxy.timeout", "10s", "-proxy.attempt-timeout", "5s")
	served := func(n *clustertest.Node) float64 { return clustertest.Served(n)[0] }
	expired := func(n *clustertest.Node) float64 { return n.Metric("stringsvc_http_expired_total") }

	// With time to spare, the forward is served by the peer.
	h := http.Header{transport.TimeoutHeader: {"2000"}}
	resp, err := probe.Do(http.MethodPost, "http://"+entry.Addr+"/uppercase", `{"s":"in time"}`, h)
	if err != nil || resp.Status != 200 {
		t.Fatalf("with 2s: want 200, have %v %v", resp.Status, err)
	}
	// The peer counts it once its handler returns, maybe after the answer.
	consultest.Eventually(t, 10*time.Second, func() error {
		if s := served(peer); s != 1 {
			return fmt.Errorf("with 2s: want it served by the peer, have the peer's count %v", s)
		}
		return nil
	})

	// A budget of 1 ms: the entry has less than a millisecond left when
	// it forwards, which the header rounds down to 0.
	codes := map[int]int{}
	consultest.Eventually(t, 20*time.Second, func() error {
		resp, err := probe.Do(http.MethodPost, "http://"+entry.Addr+"/uppercase", `{"s":"too late"}`, http.Header{transport.TimeoutHeader: {"1"}})
		if err != nil {
			return err
		}
		codes[resp.Status]++
		if expired(peer) < 1 {
			return fmt.Errorf("the peer has dropped no expired forward yet (answers %v)", codes)
		}
		return nil
	})
	if s := served(peer); s != 1 {
		t.Errorf("want the peer to have served only the first request, have %v", s)
	}
	for code := range codes {
		if code != 200 && code != 504 {
			// The entry may still serve it itself in the time it has
			// left (200), or answer that it ran out (504).
			t.Errorf("want every 1 ms budget answered 200 or 504, have %v", codes)
		}
	}
	// Budgets that short are the client's choice: they eject no peer.
	for i := 0; i < 20; i++ {
		probe.Do(http.MethodPost, "http://"+entry.Addr+"/uppercase", `{"s":"too late"}`, http.Header{transport.TimeoutHeader: {"1"}})
	}
	if state := breakerState(entry, peer.Addr); state != "closed" {
		t.Errorf("want the peer's breaker closed after 20 client budgets of 1 ms, have %q", state)
	}
	t.Logf("answers to 1 ms budgets: %v; peer dropped %v expired", codes, expired(peer))

	// Sent directly, an expired request gets 504 and a malformed one 400.
	for value, want := range map[string]int{"0": 504, "1h": 400} {
		resp, err := probe.Do(http.MethodPost, "http://"+peer.Addr+"/uppercase", `{"s":"x"}`, http.Header{transport.TimeoutHeader: {value}})
		if err != nil || resp.Status != want {
			t.Errorf("%s: %s: want %d, have %d %v", transport.TimeoutHeader, value, want, resp.Status, err)
		}
	}
}

// zoneView is the part of /debug/mesh about zones.
type zoneView struct {
	Zones struct {
		Local    string           `json:"local"`
		Spilling bool             `json:"spilling"`
		Reason   string           `json:"reason"`
		Requests map[string]int64 `json:"requests"`
	} `json:"zones"`
	Upstreams []struct {
		Instance string `json:"instance"`
		Zone     string `json:"zone"`
	} `json:"upstreams"`
}

func zonesOf(t *testing.T, n *clustertest.Node) zoneView {
	t.Helper()
	resp, err := probe.Do(http.MethodGet, "http://"+n.OpsAddr()+"/debug/mesh", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	var v zoneView
	if err := json.Unmarshal([]byte(resp.Body), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// Zone-aware balancing against a real agent whose node is in zone a (node
// meta): A1 and A2 take their zone from it, B1 and B2 say zone b with
// -service.zone. A1's forwards stay in zone a; once A2 is killed -9 under
// load, zone a has one healthy member, fewer than the minimum of 2, and
// A1 spills over to zone b with no request failing.
func TestZonePreferenceAndSpillOver(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	agent := consultest.StartWith(t, devconsul.Options{HCL: `node_meta { zone = "a" }`})
	// Long attempts: a member stalled past the default 250 ms on a loaded
	// machine would see a retry serve the request twice, in the count
	// below. A killed member refuses at once, so the spill is as quick.
	slow := []string{"-proxy.timeout", "10s", "-proxy.attempt-timeout", "5s"}
	a1 := clustertest.StartNode(t, "A1", agent.Addr, slow...)
	a2 := clustertest.StartNode(t, "A2", agent.Addr, slow...)
	b1 := clustertest.StartNode(t, "B1", agent.Addr, append([]string{"-service.zone", "b"}, slow...)...)
	b2 := clustertest.StartNode(t, "B2", agent.Addr, append([]string{"-service.zone", "b"}, slow...)...)
	all := []*clustertest.Node{a1, a2, b1, b2}
	clustertest.WaitPassing(t, agent.Addr, 20*time.Second, all...)
	waitUpstreams(t, 4, a1)
	consultest.Eventually(t, 10*time.Second, func() error {
		v := zonesOf(t, a1)
		zones := map[string]int{}
		for _, u := range v.Upstreams {
			zones[u.Zone]++
		}
		if v.Zones.Local != "a" || zones["a"] != 2 || zones["b"] != 2 {
			return fmt.Errorf("want local zone a from node meta and upstreams 2 in a, 2 in b; have %q, %v", v.Zones.Local, zones)
		}
		return nil
	})

	// Healthy: every forward stays in zone a.
	before := clustertest.Served(all...)
	codes := clustertest.SendUppercase(t, a1, 300)
	after := clustertest.Served(all...)
	inA, inB := after[0]-before[0]+after[1]-before[1], after[2]-before[2]+after[3]-before[3]
	t.Logf("healthy: %v; served in zone a %v, in zone b %v", codes, inA, inB)
	if codes[200] != 300 || inB != 0 || inA != 300 {
		t.Errorf("want 300 served, all in zone a; have %v, %v in a, %v in b", codes, inA, inB)
	}
	if v := zonesOf(t, a1); v.Zones.Spilling || v.Zones.Requests["b"] != 0 {
		t.Errorf("want no spill-over while zone a is healthy, have %+v", v.Zones)
	}

	// A2 killed under load: spill-over, nothing failed.
	progress, stop := background(t, []*clustertest.Node{a1}, time.Millisecond)
	b0 := clustertest.Served(b1, b2)
	at := progress.Succeeded.Load()
	a2.Kill(syscall.SIGKILL)
	// Bounded by Consul's check, not by the breaker alone: P2C may not
	// pick A2 five times in a row soon after its first refusal.
	consultest.Eventually(t, clustertest.CheckInterval+clustertest.CheckTimeout+20*time.Second, func() error {
		s := clustertest.Served(b1, b2)
		if s[0]+s[1]-b0[0]-b0[1] < 100 || progress.Succeeded.Load() < at+300 {
			return fmt.Errorf("zone b has served %v since the kill", s[0]+s[1]-b0[0]-b0[1])
		}
		return nil
	})
	res := stop()
	v := zonesOf(t, a1)
	t.Logf("load: sent %d, succeeded %d, failed %d; zones %+v", res.Sent, res.Succeeded, res.Failed, v.Zones)
	if res.Failed != 0 {
		t.Errorf("want 0 failed, have %d of %d: %v", res.Failed, res.Sent, res.Errors)
	}
	if !v.Zones.Spilling || v.Zones.Requests["b"] == 0 {
		t.Errorf("want A1 spilling over to zone b, have %+v", v.Zones)
	}
	if m := a1.Metric(`stringsvc_upstream_zone_spilling{zone="a"}`); m != 1 {
		t.Errorf("want stringsvc_upstream_zone_spilling 1, have %v", m)
	}
	if m := a1.Metric(`stringsvc_upstream_zone_requests_total{local="false",zone="b"}`); m < 100 {
		t.Errorf("want the zone split in metrics, at least 100 to zone b; have %v", m)
	}
}
