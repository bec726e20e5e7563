package lb

import (
	"context"
	"testing"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/sd"
	"github.com/go-kit/log"
)

// zonedPool returns a pool on clk over a0..a2 (zone "a") and b0..b2
// (zone "b"), whose availability the returned healths set, preferring
// zone local.
func zonedPool(t *testing.T, clk *clock, local string, z Zones) (*Pool, map[string]*fakeHealth) {
	t.Helper()
	names := sd.FixedInstancer{"a0", "a1", "a2", "b0", "b1", "b2"}
	healths := map[string]*fakeHealth{}
	for _, n := range names {
		healths[n] = &fakeHealth{}
	}
	z.Local = func() string { return local }
	z.Of = func(instance string) string { return instance[:1] }
	p := newPool(log.NewNopLogger())
	p.now = clk.now
	WithZones(z)(p)
	p.subscribe(names, func(instance string) (endpoint.Endpoint, Health, error) {
		return func(context.Context, interface{}) (interface{}, error) { return "ok", nil }, healths[instance], nil
	})
	t.Cleanup(p.Close)
	waitSize(t, p, len(names))
	return p, healths
}

// zoneShare returns how many of n picks went to zone "a".
func zoneShare(t *testing.T, p *Pool, n int) (a int) {
	t.Helper()
	b := NewRandom(p)
	for i := 0; i < n; i++ {
		u, err := b.Pick(nil)
		if err != nil {
			t.Fatal(err)
		}
		if u.Zone == "a" {
			a++
		}
	}
	return a
}

func TestZonesKeepTrafficHome(t *testing.T) {
	clk := newClock()
	p, _ := zonedPool(t, clk, "a", Zones{})
	if have := zoneShare(t, p, 1000); have != 1000 {
		t.Fatalf("want 1000 of 1000 picks in zone a, have %d", have)
	}
	// Without a zone of its own, the pool has no preference.
	p2, _ := zonedPool(t, clk, "", Zones{})
	if have := zoneShare(t, p2, 1000); have == 1000 || have == 0 {
		t.Fatalf("want picks in both zones without a local zone, have %d of 1000 in a", have)
	}
}

func TestZonesRetryLeavesTheZoneWhenItIsExhausted(t *testing.T) {
	p, _ := zonedPool(t, newClock(), "a", Zones{})
	set := p.Upstreams()
	u, err := NewRandom(p).Pick(set[:3]) // a0..a2 tried already
	if err != nil {
		t.Fatal(err)
	}
	if u.Zone != "b" {
		t.Fatalf("want a retry past every local upstream to go to zone b, have %s", u.Instance)
	}
}

func TestZonesSpillOverWithHysteresis(t *testing.T) {
	clk := newClock()
	var changes []bool
	p, healths := zonedPool(t, clk, "a", Zones{MinHealthy: 2, Hold: 5 * time.Second, Changed: func(spilling bool, _ string) {
		changes = append(changes, spilling)
	}})
	step := func(d time.Duration) { clk.advance(d); zoneShare(t, p, 1) }
	spilling := func() bool { s, _ := p.Zones(); return s.Spilling }

	// Two of zone a's three go down: the next evaluation spills over.
	healths["a1"].down.Store(true)
	healths["a2"].down.Store(true)
	step(zoneEvery)
	if !spilling() {
		t.Fatalf("want spilling with 1 healthy local upstream of a minimum 2, have %+v", func() ZoneSnapshot { s, _ := p.Zones(); return s }())
	}
	// Spilling, the picks go to every available upstream: a0 and b0..b2.
	if have := zoneShare(t, p, 1000); have > 400 {
		t.Fatalf("want about a quarter of the picks in zone a while spilling, have %d of 1000", have)
	}

	// They come back, and flap twice within the hold: the pool
	// stays spilled all along, then returns once the local zone has been
	// healthy for the whole hold.
	healths["a1"].down.Store(false)
	healths["a2"].down.Store(false)
	for _, flap := range []bool{true, false, true, false} {
		step(2 * time.Second)
		healths["a1"].down.Store(flap)
		healths["a2"].down.Store(flap)
		step(zoneEvery)
		if !spilling() {
			t.Fatalf("want still spilling after a flap within the hold (%v)", flap)
		}
	}
	step(4 * time.Second)
	if !spilling() {
		t.Fatal("want still spilling 4s after the last flap, hold 5s")
	}
	step(1100 * time.Millisecond)
	if spilling() {
		t.Fatal("want back home after 5.1s healthy")
	}
	if have := zoneShare(t, p, 1000); have != 1000 {
		t.Fatalf("want 1000 of 1000 picks in zone a after returning, have %d", have)
	}
	if len(changes) != 2 || !changes[0] || changes[1] {
		t.Fatalf("want exactly one spill and one return, have %v", changes)
	}
}

func TestZonesSpillOverOnCost(t *testing.T) {
	clk := newClock()
	p, _ := zonedPool(t, clk, "a", Zones{SpillRatio: 4, Hold: time.Second})
	setLatency := func(zone string, d time.Duration) {
		for _, u := range p.Upstreams() {
			if u.Zone == zone {
				u.mu.Lock()
				u.ewma, u.stamp = float64(d), clk.now()
				u.mu.Unlock()
			}
		}
	}
	// A zone never called has no latency to compare: a slow local zone
	// stays home rather than trust a guess.
	setLatency("a", 10*time.Millisecond)
	for _, u := range p.Upstreams() {
		if u.Zone == "a" {
			u.requests.Store(1)
		}
	}
	clk.advance(zoneEvery)
	zoneShare(t, p, 1)
	if s, _ := p.Zones(); s.Spilling || s.LatencyRatio != 0 {
		t.Fatalf("want no spill-over on latency before zone b is measured, have %+v", s)
	}
	for _, u := range p.Upstreams() {
		u.requests.Store(1)
	}
	tests := []struct {
		local, remote time.Duration
		wait          time.Duration
		want          bool
	}{
		{local: 2 * time.Millisecond, remote: time.Millisecond, want: false},   // ratio 2: home
		{local: 10 * time.Millisecond, remote: time.Millisecond, want: true},   // ratio 10: spill
		{local: 3 * time.Millisecond, remote: time.Millisecond, want: true},    // ratio 3: not yet under 2
		{local: 1500 * time.Microsecond, remote: time.Millisecond, want: true}, // under 2, hold not over
		{local: 1500 * time.Microsecond, remote: time.Millisecond, wait: time.Second, want: false},
	}
	for i, tt := range tests {
		setLatency("a", tt.local)
		setLatency("b", tt.remote)
		clk.advance(zoneEvery + tt.wait)
		zoneShare(t, p, 1)
		s, _ := p.Zones()
		if s.Spilling != tt.want {
			t.Fatalf("step %d (local %v, remote %v): want spilling %v, have %v (ratio %.2f, %s)", i, tt.local, tt.remote, tt.want, s.Spilling, s.LatencyRatio, s.Reason)
		}
	}
}

func TestZonesCountRequestsByZone(t *testing.T) {
	p, _ := zonedPool(t, newClock(), "a", Zones{})
	b := NewRandom(p)
	for i := 0; i < 10; i++ {
		u, err := b.Pick(nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := u.Call(context.Background(), nil); err != nil {
			t.Fatal(err)
		}
	}
	s, ok := p.Zones()
	if !ok {
		t.Fatal("want a zone snapshot")
	}
	if s.Requests["a"] != 10 || s.Requests["b"] != 0 || s.Local != "a" {
		t.Fatalf("want 10 requests to a, 0 to b, local a; have %+v", s)
	}
	for _, u := range p.Snapshot() {
		if u.Zone != u.Instance[:1] {
			t.Fatalf("want snapshot zone %s for %s, have %q", u.Instance[:1], u.Instance, u.Zone)
		}
	}
}
