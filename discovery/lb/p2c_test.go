package lb

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"
)

// TestPeakEWMAPicksTheCheaperOfTwo fixes the random source and the costs,
// and checks every choice.
func TestPeakEWMAPicksTheCheaperOfTwo(t *testing.T) {
	clk := newClock()
	fast, mid, slow := &fakeInstance{delay: time.Millisecond}, &fakeInstance{delay: 5 * time.Millisecond}, &fakeInstance{delay: 20 * time.Millisecond}
	p := testPool(t, clk, fast, mid, slow)
	for _, u := range p.Upstreams() {
		u.Call(context.Background(), nil) // one observation each
	}
	for _, tc := range []struct {
		name string
		i, j int // the two draws: i from 3, j from the 2 left
		want int
	}{
		{name: "fast against mid", i: 0, j: 0, want: 0},
		{name: "mid against fast", i: 1, j: 0, want: 0},
		{name: "mid against slow", i: 1, j: 1, want: 1},
		{name: "slow against fast", i: 2, j: 0, want: 0},
		{name: "slow against mid", i: 2, j: 1, want: 1},
	} {
		b := NewPeakEWMA(p)
		b.intn = sequence(tc.i, tc.j)
		u, err := b.Pick(nil)
		if err != nil || u != p.Upstreams()[tc.want] {
			t.Errorf("%s: want i%d, have %v (%v)", tc.name, tc.want, u.Instance, err)
		}
	}

	// Outstanding requests multiply the cost: the fast instance with 9
	// requests waiting costs more than the mid one with none.
	p.Upstreams()[0].pending.Store(9)
	b := NewPeakEWMA(p)
	b.intn = sequence(0, 0)
	if u, _ := b.Pick(nil); u != p.Upstreams()[1] {
		t.Errorf("busy fast against idle mid: want i1, have %s", u.Instance)
	}
}

// TestPeakEWMAAvoidsSlowInstance sends sequential traffic through p2c and
// round robin to two fast instances and one slow one, on a fake clock and a
// seeded random source, and compares the slow one's share.
func TestPeakEWMAAvoidsSlowInstance(t *testing.T) {
	share := func(name string) float64 {
		clk := newClock()
		fast1, fast2 := &fakeInstance{delay: time.Millisecond}, &fakeInstance{delay: time.Millisecond}
		slow := &fakeInstance{delay: 5 * time.Millisecond}
		p := testPool(t, clk, fast1, fast2, slow)
		var b Balancer = NewRoundRobin(p)
		if name == "p2c" {
			pe := NewPeakEWMA(p)
			pe.intn = rand.New(rand.NewPCG(1, 2)).IntN
			b = pe
		}
		for i := 0; i < 300; i++ {
			u, err := b.Pick(nil)
			if err != nil {
				t.Fatal(err)
			}
			u.Call(context.Background(), nil)
		}
		return float64(slow.calls.Load()) / 300
	}
	rr, p2c := share("roundrobin"), share("p2c")
	if p2c > 0.1 || p2c >= rr/2 {
		t.Errorf("slow instance's share: want p2c well under round robin's %.2f, have %.2f", rr, p2c)
	}
}
