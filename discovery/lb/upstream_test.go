package lb

import (
	"context"
	"errors"
	"testing"
	"time"
)

// An observation applied out of order (its time before the last one's)
// must not give a decay weight above 1: the average would go negative and
// the balancer would prefer the most loaded instance.
func TestObserveOutOfOrder(t *testing.T) {
	clk := newClock()
	u := &Upstream{Instance: "a", health: unguarded{}, now: clk.now}
	u.observe(clk.now(), float64(time.Millisecond), false)
	u.observe(clk.now().Add(-2*time.Second), float64(10*time.Millisecond), false)
	if u.ewma < float64(time.Millisecond) || u.ewma > float64(10*time.Millisecond) {
		t.Errorf("average: want between the two observations (1ms and 10ms), have %v", time.Duration(u.ewma))
	}
	if c := u.cost(clk.now().Add(-time.Hour)); c < 0 {
		t.Errorf("cost at an earlier time: want >= 0, have %v", c)
	}
}

// A new instance starts at a default latency, as in Linkerd, so that its
// waiting requests count: at cost 0, a flapping instance would get a burst
// of traffic each time it came back.
func TestNewInstanceHasADefaultLatency(t *testing.T) {
	clk := newClock()
	p := testPool(t, clk, &fakeInstance{})
	u := p.Upstreams()[0]
	idle := u.cost(clk.now())
	if idle <= 0 {
		t.Errorf("cost of a new idle instance: want above 0, have %v", time.Duration(idle))
	}
	u.pending.Store(3)
	if c := u.cost(clk.now()); c < 3.9*idle || c <= 0 {
		t.Errorf("cost of a new instance with 3 waiting: want 4 times the idle cost %v, have %v", time.Duration(idle), time.Duration(c))
	}
}

// An attempt cut by its caller's deadline is no failure (no penalty), but
// its time still counts: an instance hung for every caller loses its
// share even when all of them send short deadlines.
func TestCallerBoundTimeoutIsALatencyNotAFailure(t *testing.T) {
	clk := newClock()
	f := &fakeInstance{delay: 30 * time.Millisecond, clock: clk}
	u := &Upstream{Instance: "i0", call: func(ctx context.Context, r interface{}) (interface{}, error) {
		f.endpoint(ctx, r)
		return nil, context.DeadlineExceeded
	}, health: unguarded{}, now: clk.now, stamp: clk.now()}
	ctx := context.WithValue(context.Background(), callerBoundKey{}, true)
	if _, err := u.Call(ctx, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("want the deadline error passed on, have %v", err)
	}
	if have := time.Duration(u.latency()); have < 30*time.Millisecond || have >= failurePenalty {
		t.Fatalf("want the 30ms taken as a latency sample without the %v penalty, have %v", failurePenalty, have)
	}
}
