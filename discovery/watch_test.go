package discovery

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/go-kit/kit/sd"
	"github.com/go-kit/log"
	"github.com/hashicorp/consul/api"

	"github.com/kitmesh/stringsvc/discovery/consultest"
)

// The watch client's own logic, against consultest.Fake: no Consul binary
// needed. instancer_test.go runs the same watch against a real agent.

func TestBracketIPv6(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.1": "10.0.0.1", "::1": "[::1]", "fe80::1": "[fe80::1]", "[::1]": "[::1]", "node.consul": "node.consul",
		"fe80::1%eth0": "[fe80::1%eth0]",
	} {
		if have := bracketIPv6(in); have != want {
			t.Errorf("bracketIPv6(%q): want %q, have %q", in, want, have)
		}
	}
}

// watchFake starts an Instancer of service "svc" on a fake agent and
// returns its events.
func watchFake(t *testing.T, fake *consultest.Fake) (<-chan sd.Event, *Reachability) {
	t.Helper()
	conf := api.DefaultConfig()
	conf.Address = fake.Addr
	client, err := api.NewClient(conf)
	if err != nil {
		t.Fatal(err)
	}
	reach := NewReachability(log.NewNopLogger())
	inst := NewInstancer(client, "svc", nil, InstancerOptions{Reach: reach})
	t.Cleanup(inst.Stop)
	events := make(chan sd.Event, 100)
	inst.Register(events)
	t.Cleanup(func() { inst.Deregister(events) })
	return events, reach
}

// next returns the next event, failing t after 10s.
func next(t *testing.T, events <-chan sd.Event) sd.Event {
	t.Helper()
	select {
	case ev := <-events:
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no event within 10s")
		return sd.Event{}
	}
}

func TestWatchAddresses(t *testing.T) {
	fake := consultest.NewFake(t)
	fake.SetService("svc",
		consultest.Entry("a", "fe80::1", 8080),
		consultest.Entry("b", "", 9090), // no service address: the node's
		consultest.Entry("c", "10.0.0.1", 80),
		consultest.Entry("d", "::ffff:10.0.0.4", 80), // IPv4-mapped: plain IPv4
		consultest.Entry("e", "fe80::2%eth0", 80),    // a zone stays, in brackets
	)
	events, _ := watchFake(t, fake)
	ev := next(t, events)
	if want := "[10.0.0.1:80 10.0.0.4:80 127.0.0.1:9090 [fe80::1]:8080 [fe80::2%eth0]:80]"; ev.Err != nil || fmt.Sprint(ev.Instances) != want {
		t.Errorf("want %s, have %v (%v)", want, ev.Instances, ev.Err)
	}
}

func TestWatchKeepsTheLastSetDuringAnOutage(t *testing.T) {
	fake := consultest.NewFake(t)
	fake.SetService("svc", consultest.Entry("a", "10.0.0.1", 80), consultest.Entry("b", "10.0.0.2", 80))
	events, reach := watchFake(t, fake)
	if ev := next(t, events); len(ev.Instances) != 2 {
		t.Fatalf("want 2 instances, have %v", ev)
	}

	fake.Fail(http.StatusInternalServerError)
	began := time.Now()
	consultest.Eventually(t, 10*time.Second, func() error {
		if !reach.Down() {
			return fmt.Errorf("not marked down yet")
		}
		return nil
	})
	time.Sleep(time.Until(began.Add(3 * time.Second))) // the outage itself
	fake.Fail(0)
	select {
	case ev := <-events:
		t.Fatalf("during the outage: want no event (the last set kept), have %+v", ev)
	default:
	}

	// Backoff: no tight loop, and no long silence either.
	var failed []time.Time
	for _, r := range fake.Requests() {
		if r.Status == http.StatusInternalServerError {
			failed = append(failed, r.At)
		}
	}
	if len(failed) < 3 || len(failed) > 12 {
		t.Errorf("failed queries in a 3s outage: want 3 to 12 (backoff from %v to %v), have %d", minBackoff, maxBackoff, len(failed))
	}
	for i := 1; i < len(failed); i++ {
		if gap := failed[i].Sub(failed[i-1]); gap < 3*minBackoff/4 {
			t.Errorf("retry %d came %v after the last: want at least %v", i, gap, 3*minBackoff/4)
		}
	}

	fake.SetService("svc", consultest.Entry("c", "10.0.0.3", 80))
	if ev := next(t, events); fmt.Sprint(ev.Instances) != "[10.0.0.3:80]" {
		t.Errorf("after the outage: want [10.0.0.3:80], have %v", ev)
	}
	if reach.Down() {
		t.Error("after the outage: want Consul marked reachable")
	}
}

// TestWatchResetsTheIndexAfterAFailure restarts the fake at a lower index,
// as a restarted agent does. A watch that kept its old index would block
// until the new index passed it; ours asks afresh.
func TestWatchResetsTheIndexAfterAFailure(t *testing.T) {
	fake := consultest.NewFake(t)
	fake.Restart(1000)
	fake.SetService("svc", consultest.Entry("a", "10.0.0.1", 80))
	events, _ := watchFake(t, fake)
	if ev := next(t, events); len(ev.Instances) != 1 {
		t.Fatalf("want 1 instance, have %v", ev)
	}
	consultest.Eventually(t, 5*time.Second, func() error {
		for _, r := range fake.Requests() {
			if r.Index == "1001" {
				return nil
			}
		}
		return fmt.Errorf("no blocking query at index 1001 yet")
	})

	fake.Fail(http.StatusInternalServerError)
	consultest.Eventually(t, 5*time.Second, func() error {
		for _, r := range fake.Requests() {
			if r.Status == http.StatusInternalServerError {
				return nil
			}
		}
		return fmt.Errorf("no failed query yet")
	})
	fake.Restart(5)
	fake.SetService("svc", consultest.Entry("b", "10.0.0.2", 80), consultest.Entry("c", "10.0.0.3", 80))
	fake.Fail(0)

	if ev := next(t, events); fmt.Sprint(ev.Instances) != "[10.0.0.2:80 10.0.0.3:80]" {
		t.Errorf("after the restart: want the new set, have %v", ev)
	}
	var sawFailure bool
	for _, r := range fake.Requests() {
		if r.Status == http.StatusInternalServerError {
			sawFailure = true
			continue
		}
		if sawFailure {
			if r.Index != "" {
				t.Errorf("first query after the failure: want no index, have index=%s", r.Index)
			}
			break
		}
	}
}
