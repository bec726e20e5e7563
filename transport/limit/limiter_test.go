package limit

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kitmesh/stringsvc/internal/poll"
)

// fakeClock is a clock tests move by hand. Not safe for concurrent use.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func newClock() *fakeClock { return &fakeClock{time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)} }

type update struct {
	rtt      time.Duration
	inflight int
	dropped  bool
}

// recorder is an Algorithm that records its samples and answers next.
type recorder struct {
	limit, next int
	updates     []update
}

func (r *recorder) Update(_ time.Time, rtt time.Duration, inflight int, dropped bool) int {
	r.updates = append(r.updates, update{rtt, inflight, dropped})
	r.limit = r.next
	return r.limit
}
func (r *recorder) Limit() int   { return r.limit }
func (r *recorder) Name() string { return "recorder" }

// acquireAll admits until refused and returns the tokens admitted.
func acquireAll(t *testing.T, l *Limiter) []Token {
	t.Helper()
	var toks []Token
	for range 10000 {
		tok, ok := l.Acquire()
		if !ok {
			return toks
		}
		toks = append(toks, tok)
	}
	t.Fatal("Acquire never refused")
	return nil
}

func TestLimiterAdmitsExactlyLimit(t *testing.T) {
	for _, limit := range []int{1, 3, 20} {
		l := New(NewFixed(Options{Max: limit}), 0, newClock().now)
		toks := acquireAll(t, l)
		if len(toks) != limit {
			t.Fatalf("limit %d: admitted: want %d, have %d", limit, limit, len(toks))
		}
		if have := l.InFlight(); have != limit {
			t.Fatalf("limit %d: InFlight: want %d, have %d", limit, limit, have)
		}
		toks[0].Release(Success)
		if _, ok := l.Acquire(); !ok {
			t.Fatalf("limit %d: Acquire after Release: want ok, have refused", limit)
		}
		if _, ok := l.Acquire(); ok {
			t.Fatalf("limit %d: Acquire over the limit: want refused, have ok", limit)
		}
	}
}

func TestLimiterSamples(t *testing.T) {
	clock := newClock()
	alg := &recorder{limit: 10, next: 10}
	l := New(alg, 0, clock.now)
	t1, _ := l.Acquire()
	t2, _ := l.Acquire()
	t3, _ := l.Acquire()
	clock.t = clock.t.Add(5 * time.Millisecond)
	t2.Release(Success)
	t1.Release(Dropped)
	t3.Release(Ignore)
	Token{}.Release(Success) // the zero Token releases nothing

	want := []update{{5 * time.Millisecond, 2, false}, {5 * time.Millisecond, 1, true}}
	if len(alg.updates) != len(want) {
		t.Fatalf("updates: want %v, have %v", want, alg.updates)
	}
	for i := range want {
		if alg.updates[i] != want[i] {
			t.Errorf("update %d: want %+v, have %+v", i, want[i], alg.updates[i])
		}
	}
	if have := l.InFlight(); have != 0 {
		t.Errorf("InFlight: want 0, have %d", have)
	}
}

func TestLimiterZeroRTTIsPositive(t *testing.T) {
	alg := &recorder{limit: 1, next: 1}
	l := New(alg, 0, newClock().now) // the clock never moves
	tok, _ := l.Acquire()
	tok.Release(Success)
	if have := alg.updates[0].rtt; have <= 0 {
		t.Errorf("rtt: want > 0, have %v", have)
	}
}

func TestLimiterFollowsAlgorithm(t *testing.T) {
	for _, tc := range []struct {
		name          string
		initial, next int
		max           int
		before, after int
	}{
		{"max caps initial and update", 100, 200, 3, 3, 3},
		{"no max", 100, 200, 0, 100, 200},
		{"shrinks", 10, 2, 5, 5, 2},
		{"never below 1", 10, 0, 5, 5, 1},
		{"negative", 10, -4, 0, 10, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := New(&recorder{limit: tc.initial, next: tc.next}, tc.max, newClock().now)
			if have := l.Limit(); have != tc.before {
				t.Fatalf("Limit before: want %d, have %d", tc.before, have)
			}
			tok, _ := l.Acquire()
			tok.Release(Success)
			if have := l.Limit(); have != tc.after {
				t.Fatalf("Limit after: want %d, have %d", tc.after, have)
			}
			if have := len(acquireAll(t, l)); have != tc.after {
				t.Fatalf("admitted: want %d, have %d", tc.after, have)
			}
		})
	}
}

func TestLimiterConcurrent(t *testing.T) {
	const max, workers, rounds = 8, 32, 2000
	for _, name := range Names() {
		t.Run(name, func(t *testing.T) {
			newAlg, _ := Parse(name)
			l := New(newAlg(Options{Initial: max, Max: max}), max, nil)
			var cur, peak atomic.Int64
			var wg sync.WaitGroup
			for w := range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range rounds {
						tok, ok := l.Acquire()
						if !ok {
							continue
						}
						n := cur.Add(1)
						for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
						}
						if limit := l.Limit(); name == "fixed" && int(n) > limit {
							t.Errorf("in flight: want <= %d, have %d", limit, n)
						}
						cur.Add(-1)
						tok.Release(Outcome((w + i) % 3))
					}
				}()
			}
			wg.Wait()
			if have := peak.Load(); have > max {
				t.Errorf("peak in flight: want <= %d, have %d", max, have)
			}
			if have := l.InFlight(); have != 0 {
				t.Errorf("InFlight at the end: want 0, have %d", have)
			}
		})
	}
}

func TestLimiterAllocs(t *testing.T) {
	for _, name := range Names() {
		newAlg, _ := Parse(name)
		l := New(newAlg(Options{}), 0, nil)
		allocs := testing.AllocsPerRun(1000, func() {
			if tok, ok := l.Acquire(); ok {
				tok.Release(Success)
			}
		})
		if allocs != 0 {
			t.Errorf("%s: allocs per Acquire+Release: want 0, have %v", name, allocs)
		}
	}
}

func TestParse(t *testing.T) {
	names := Names()
	if names[0] != "gradient" {
		t.Errorf("default: want gradient, have %s", names[0])
	}
	for _, name := range names {
		newAlg, err := Parse(name)
		if err != nil {
			t.Fatalf("Parse(%q): want no error, have %v", name, err)
		}
		if have := newAlg(Options{}).Name(); have != name {
			t.Errorf("Parse(%q) Name: want %s, have %s", name, name, have)
		}
	}
	_, err := Parse("reno")
	if err == nil {
		t.Fatal(`Parse("reno"): want an error, have none`)
	}
	for _, name := range names {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("error: want it to name %s, have %q", name, err)
		}
	}
}

func TestOptionsDefaults(t *testing.T) {
	for _, tc := range []struct{ in, want Options }{
		{Options{}, Options{Initial: 20, Min: 1, Max: 1000}},
		{Options{Initial: -1, Min: -1, Max: -1}, Options{Initial: 20, Min: 1, Max: 1000}},
		{Options{Initial: 500, Max: 100}, Options{Initial: 100, Min: 1, Max: 100}},
		{Options{Initial: 5, Min: 10}, Options{Initial: 10, Min: 10, Max: 1000}},
		{Options{Min: 50, Max: 10}, Options{Initial: 10, Min: 10, Max: 10}},
	} {
		if have := tc.in.withDefaults(); have != tc.want {
			t.Errorf("%+v: want %+v, have %+v", tc.in, tc.want, have)
		}
	}
}

func TestFixed(t *testing.T) {
	f := NewFixed(Options{Initial: 3, Max: 50})
	for _, dropped := range []bool{false, true} {
		if have := f.Update(time.Time{}, time.Hour, 50, dropped); have != 50 {
			t.Errorf("dropped %v: want 50, have %d", dropped, have)
		}
	}
	if have := NewFixed(Options{}).Limit(); have != 1000 {
		t.Errorf("default: want 1000, have %d", have)
	}
}

// feed gives alg n samples of rtt with inflight at the current limit, as a
// saturated server would, at a clock advancing 1ms a sample, and returns the
// lowest and highest limit seen and the last. It fails t if a limit leaves
// [o.Min, o.Max] or differs from Limit().
func feed(t *testing.T, alg Algorithm, o Options, clock *fakeClock, n int, rtt time.Duration, dropped bool) (low, high, last int) {
	t.Helper()
	low, high = alg.Limit(), alg.Limit()
	for range n {
		clock.t = clock.t.Add(time.Millisecond)
		last = alg.Update(clock.t, rtt, alg.Limit(), dropped)
		checkLimit(t, alg, o, last)
		low, high = min(low, last), max(high, last)
	}
	return low, high, last
}

func checkLimit(t *testing.T, alg Algorithm, o Options, limit int) {
	t.Helper()
	if limit < o.Min || limit > o.Max {
		t.Fatalf("limit: want in [%d, %d], have %d", o.Min, o.Max, limit)
	}
	if have := alg.Limit(); have != limit {
		t.Fatalf("Limit(): want %d (as Update returned), have %d", limit, have)
	}
}

// testAdaptive checks what every adaptive algorithm must do.
func testAdaptive(t *testing.T, newAlg func(Options) Algorithm) {
	const base = time.Millisecond
	o := Options{Initial: 20, Min: 1, Max: 1000}.withDefaults()

	t.Run("grows on low latency, shrinks as latency rises", func(t *testing.T) {
		alg, clock := newAlg(o), newClock()
		_, peak, grown := feed(t, alg, o, clock, 2000, base, false)
		if grown < 10*o.Initial {
			t.Fatalf("after steady %v: want > %d, have %d", base, 10*o.Initial, grown)
		}
		low := peak
		for _, k := range []time.Duration{2, 3, 4, 5} {
			l, _, _ := feed(t, alg, o, clock, 200, k*base, false)
			low = min(low, l)
		}
		t.Logf("initial %d, peak %d, low %d", o.Initial, peak, low)
		if low > peak/4 {
			t.Fatalf("after latency rose to 5x: want < %d (peak %d / 4), have %d", peak/4, peak, low)
		}
	})

	t.Run("drops shrink", func(t *testing.T) {
		alg, clock := newAlg(o), newClock()
		_, _, start := feed(t, alg, o, clock, 2000, base, false)
		prev := start
		for i := range 50 {
			limit := alg.Update(clock.t, base, alg.Limit(), true)
			checkLimit(t, alg, o, limit)
			if limit > prev {
				t.Fatalf("drop %d: want <= %d, have %d", i, prev, limit)
			}
			prev = limit
		}
		if prev >= start {
			t.Fatalf("after 50 drops: want < %d, have %d", start, prev)
		}
	})

	t.Run("app limited", func(t *testing.T) {
		alg, clock := newAlg(o), newClock()
		_, _, start := feed(t, alg, o, clock, 100, base, false)
		for i := range 1000 {
			clock.t = clock.t.Add(time.Millisecond)
			if have := alg.Update(clock.t, base, 1, false); have != start {
				t.Fatalf("sample %d with 1 in flight: want %d, have %d", i, start, have)
			}
		}
	})

	t.Run("stays in bounds", func(t *testing.T) {
		o := Options{Initial: 5, Min: 3, Max: 40}
		alg, clock := newAlg(o), newClock()
		rng := rand.New(rand.NewPCG(1, 2))
		checkLimit(t, alg, o, alg.Limit())
		for range 20000 {
			clock.t = clock.t.Add(time.Duration(rng.IntN(100)) * time.Millisecond)
			rtt := time.Duration(rng.Int64N(int64(20 * base)))
			limit := alg.Update(clock.t, rtt, rng.IntN(60), rng.IntN(20) == 0)
			checkLimit(t, alg, o, limit)
		}
		for _, rtt := range []time.Duration{0, -time.Second} {
			checkLimit(t, alg, o, alg.Update(clock.t, rtt, 40, false))
		}
	})
}

func BenchmarkLimiter(b *testing.B) {
	l := New(NewGradient(Options{}), 0, nil)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if tok, ok := l.Acquire(); ok {
				tok.Release(Success)
			}
		}
	})
}

func TestWaitQueuesFirstComeFirstServed(t *testing.T) {
	l := New(NewFixed(Options{Max: 1}), 1, nil)
	l.SetQueue(2)
	first, ok := l.Acquire()
	if !ok {
		t.Fatal("want the only slot")
	}
	order := make(chan int, 3)
	for i := 1; i <= 2; i++ {
		go func(i int) {
			tok, ok := l.Wait(context.Background(), time.Minute, false)
			if !ok {
				order <- -i
				return
			}
			order <- i
			tok.Release(Success)
		}(i)
		// Each waiter is queued before the next starts.
		waitQueued(t, l, i)
	}
	// The queue is full: a third is refused at once.
	if _, ok := l.Wait(context.Background(), time.Minute, false); ok {
		t.Fatal("want a refusal with the queue full")
	}
	first.Release(Success)
	if a, b := <-order, <-order; a != 1 || b != 2 {
		t.Fatalf("want waiters served in order 1, 2; have %d, %d", a, b)
	}
	if l.InFlight() != 0 || l.Waiting() != 0 {
		t.Fatalf("want nothing in flight or waiting, have %d and %d", l.InFlight(), l.Waiting())
	}
}

func TestWaitEndsAtItsBoundOrTheDeadline(t *testing.T) {
	l := New(NewFixed(Options{Max: 1}), 1, nil)
	l.SetQueue(10)
	held, _ := l.Acquire()
	defer held.Release(Ignore)
	if _, ok := l.Wait(context.Background(), 5*time.Millisecond, false); ok {
		t.Fatal("want no slot within 5ms while the only one is held")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
	defer cancel()
	if _, ok := l.Wait(ctx, time.Hour, false); ok {
		t.Fatal("want no slot past the context's deadline")
	}
	if l.Waiting() != 0 {
		t.Fatalf("want the abandoned waiters gone, have %d", l.Waiting())
	}
	// Without a queue, Wait refuses at once.
	l2 := New(NewFixed(Options{Max: 1}), 1, nil)
	h2, _ := l2.Acquire()
	defer h2.Release(Ignore)
	if _, ok := l2.Wait(context.Background(), time.Hour, false); ok {
		t.Fatal("want a refusal without a queue")
	}
}

func TestWaitUnderConcurrencyNeverExceedsTheLimit(t *testing.T) {
	l := New(NewFixed(Options{Max: 4}), 4, nil)
	l.SetQueue(1000)
	var wg sync.WaitGroup
	var over atomic.Bool
	var served atomic.Int64
	for g := 0; g < 64; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				tok, ok := l.Wait(context.Background(), time.Minute, false)
				if !ok {
					continue
				}
				if l.InFlight() > 4 {
					over.Store(true)
				}
				served.Add(1)
				tok.Release(Success)
			}
		}()
	}
	wg.Wait()
	if over.Load() || served.Load() != 64*200 || l.InFlight() != 0 || l.Waiting() != 0 {
		t.Fatalf("want all %d served, never above 4 in flight, nothing left; have %d served, over=%v, %d in flight, %d waiting", 64*200, served.Load(), over.Load(), l.InFlight(), l.Waiting())
	}
}

func TestWaitServesForwardsFirst(t *testing.T) {
	l := New(NewFixed(Options{Max: 1}), 1, nil)
	l.SetQueue(10)
	held, _ := l.Acquire()
	order := make(chan string, 2)
	wait := func(name string, first bool, queued int) {
		go func() {
			tok, ok := l.Wait(context.Background(), time.Minute, first)
			if ok {
				order <- name
				tok.Release(Success)
			}
		}()
		waitQueued(t, l, queued)
	}
	wait("client", false, 1)
	wait("forward", true, 2)
	held.Release(Success)
	if a, b := <-order, <-order; a != "forward" || b != "client" {
		t.Fatalf("want the forward served before the earlier client, have %s then %s", a, b)
	}
}

// Waits that end at their bound while slots are being released, many at
// once: no slot is lost and none is left waiting.
func TestWaitGivingUpUnderContention(t *testing.T) {
	l := New(NewFixed(Options{Max: 2}), 2, nil)
	l.SetQueue(1000)
	var wg sync.WaitGroup
	for g := 0; g < 32; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 300; i++ {
				ctx, cancel := context.WithCancel(context.Background())
				if i%3 == 0 {
					cancel() // some callers are gone already
				}
				if tok, ok := l.Wait(ctx, time.Duration(g%4)*50*time.Microsecond, g%2 == 0); ok {
					tok.Release(Success)
				}
				cancel()
			}
		}(g)
	}
	wg.Wait()
	if l.InFlight() != 0 || l.Waiting() != 0 {
		t.Fatalf("want nothing in flight or waiting, have %d and %d", l.InFlight(), l.Waiting())
	}
	if _, ok := l.Acquire(); !ok {
		t.Fatal("want a slot free after the storm")
	}
}

// The front goes first, but a flood of it cannot starve the back.
func TestWaitFrontCannotStarveTheBack(t *testing.T) {
	l := New(NewFixed(Options{Max: 1}), 1, nil)
	l.SetQueue(100)
	held, _ := l.Acquire()
	order := make(chan string, 9)
	release := make(chan struct{})
	wait := func(name string, first bool, queued int) {
		go func() {
			tok, ok := l.Wait(context.Background(), time.Minute, first)
			if ok {
				order <- name
				<-release
				tok.Release(Success)
			}
		}()
		waitQueued(t, l, queued)
	}
	wait("back", false, 1)
	for i := 2; i <= 9; i++ {
		wait("front", true, i)
	}
	held.Release(Success)
	var have []string
	for i := 0; i < 9; i++ {
		have = append(have, <-order)
		release <- struct{}{}
	}
	if strings.Join(have[:4], ",") != "front,front,front,back" {
		t.Fatalf("want three front grants, then the back one; have %v", have)
	}
}

// waitQueued waits, bounded, until n requests wait in l's queue.
func waitQueued(t *testing.T, l *Limiter, n int) {
	t.Helper()
	if err := poll.Until(10*time.Second, 100*time.Microsecond, func() error {
		if have := l.Waiting(); have != n {
			return fmt.Errorf("want %d waiting, have %d", n, have)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// movableDeadline is a context whose deadline a test moves, and whose
// timer never fires: Err stays nil, as when a loaded machine runs it late.
type movableDeadline struct {
	context.Context
	at atomic.Pointer[time.Time]
}

func (c *movableDeadline) Deadline() (time.Time, bool) { return *c.at.Load(), true }

// A slot granted after the waiter's deadline has passed goes to nobody:
// it is given back, and the wait fails, even before ctx's timer says so.
func TestWaitGrantedPastTheDeadlineGivesTheSlotBack(t *testing.T) {
	l := New(NewFixed(Options{Max: 1}), 1, nil)
	l.SetQueue(1)
	held, _ := l.Acquire()
	ctx := &movableDeadline{Context: context.Background()}
	later := time.Now().Add(time.Minute)
	ctx.at.Store(&later)
	got := make(chan bool, 1)
	go func() {
		_, ok := l.Wait(ctx, time.Minute, false)
		got <- ok
	}()
	waitQueued(t, l, 1)
	passed := time.Now().Add(-time.Millisecond)
	ctx.at.Store(&passed)
	held.Release(Success)
	select {
	case ok := <-got:
		if ok {
			t.Fatal("want no slot for a waiter past its deadline")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the waiter never returned")
	}
	if l.InFlight() != 0 {
		t.Errorf("want the slot given back, have %d in flight", l.InFlight())
	}
}
