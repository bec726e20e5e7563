package lb

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/sd"
	"github.com/go-kit/log"

	"github.com/kitmesh/stringsvc/internal/poll"
)

// The helpers of this package's tests: a fake clock and fake instances, so
// that the policies are tested deterministically.

// clock is a fake time source that only moves when told.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Unix(1_000_000, 0)} }

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// fakeInstance is a unit-test stand-in for an instance: it fails, is slow
// (on the fake clock) or hangs as told, and counts its calls.
type fakeInstance struct {
	calls atomic.Int64
	fail  atomic.Bool
	delay time.Duration
	clock *clock
	hang  bool
}

func (f *fakeInstance) endpoint(ctx context.Context, _ interface{}) (interface{}, error) {
	f.calls.Add(1)
	if f.hang {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	if f.delay > 0 {
		f.clock.advance(f.delay)
	}
	if f.fail.Load() {
		return nil, errors.New("connection refused")
	}
	return "ok", nil
}

// fakeHealth is a Health whose availability a test sets.
type fakeHealth struct {
	down   atomic.Bool
	closed atomic.Bool
}

func (h *fakeHealth) Close() error { h.closed.Store(true); return nil }
func (h *fakeHealth) Available() bool {
	return !h.down.Load()
}
func (h *fakeHealth) State() string {
	if h.down.Load() {
		return "open"
	}
	return "closed"
}

// testPool returns a pool on clk holding the given instances, named i0,
// i1, ..., fed through Go kit's Endpointer from a fixed Instancer.
func testPool(t *testing.T, clk *clock, fakes ...*fakeInstance) *Pool {
	t.Helper()
	p := newPool(log.NewNopLogger())
	if clk != nil {
		p.now = clk.now
	}
	var names sd.FixedInstancer
	for i := range fakes {
		names = append(names, fmt.Sprintf("i%d", i))
		if fakes[i].clock == nil {
			fakes[i].clock = clk
		}
	}
	p.subscribe(names, func(instance string) (endpoint.Endpoint, Health, error) {
		var i int
		fmt.Sscanf(instance, "i%d", &i)
		return fakes[i].endpoint, nil, nil
	})
	t.Cleanup(p.Close)
	waitSize(t, p, len(fakes))
	return p
}

// waitSize waits until the Endpointer has fed n upstreams into p.
func waitSize(t *testing.T, p *Pool, n int) {
	t.Helper()
	if err := poll.Until(5*time.Second, time.Millisecond, func() error {
		if have := len(p.Upstreams()); have != n {
			return fmt.Errorf("want %d upstreams, have %d", n, have)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// sequence returns a random source that yields vals in turn, each taken
// modulo n.
func sequence(vals ...int) func(n int) int {
	var i int
	return func(n int) int {
		v := vals[i%len(vals)]
		i++
		return v % n
	}
}

// picks returns the instances of n picks from b.
func picks(t *testing.T, b Picker, n int) []string {
	t.Helper()
	var have []string
	for i := 0; i < n; i++ {
		u, err := b.Pick(nil)
		if err != nil {
			t.Fatal(err)
		}
		have = append(have, u.Instance)
	}
	return have
}
