package limit

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Algorithm computes a new concurrency limit from one sample.
// Implementations are not safe for concurrent use; Limiter serialises calls.
type Algorithm interface {
	// Update folds in one request's round-trip time rtt, measured while
	// inflight requests (including this one) were in flight, and whether it
	// was dropped (failed in a way that signals overload, e.g. timed out).
	// It returns the new limit (>= 1). now is the limiter's clock, for
	// algorithms that need time (e.g. periodic probing).
	Update(now time.Time, rtt time.Duration, inflight int, dropped bool) int
	// Limit is the current limit.
	Limit() int
	// Name is "gradient", "vegas" or "aimd" ("fixed" for NewFixed).
	Name() string
}

// Options for the algorithms; zero values get the defaults: Initial 20,
// Min 1, Max 1000. Min is raised to 1 and lowered to Max, and Initial is
// clamped into [Min, Max].
type Options struct {
	Initial int // initial limit, default 20
	Min     int // default 1 (never below 1)
	Max     int // hard ceiling, default 1000; the caller passes its -http.max-inflight here
}

const (
	defaultInitial = 20   // Netflix's default for Gradient2 and Vegas
	defaultMin     = 1    // a member under any load must still serve someone
	defaultMax     = 1000 // Netflix Vegas's default ceiling
)

func (o Options) withDefaults() Options {
	if o.Max <= 0 {
		o.Max = defaultMax
	}
	if o.Min <= 0 {
		o.Min = defaultMin
	}
	o.Min = min(o.Min, o.Max)
	if o.Initial <= 0 {
		o.Initial = defaultInitial
	}
	o.Initial = max(o.Min, min(o.Max, o.Initial))
	return o
}

// positive keeps a zero or negative rtt (a clock that did not move, or went
// back) from dividing by zero in the algorithms.
func positive(rtt time.Duration) time.Duration { return max(rtt, 1) }

type fixed struct{ max int }

// NewFixed returns an algorithm whose limit is o.Max forever: the constant
// cap the adaptive ones replace, kept for comparison and as a way back.
func NewFixed(o Options) Algorithm { return fixed{o.withDefaults().Max} }

func (f fixed) Update(time.Time, time.Duration, int, bool) int { return f.max }
func (f fixed) Limit() int                                     { return f.max }
func (f fixed) Name() string                                   { return "fixed" }

// Names returns the accepted names, the default first: "gradient", "vegas",
// "aimd", "fixed".
func Names() []string { return []string{"gradient", "vegas", "aimd", "fixed"} }

// Parse returns the constructor for a name, or an error naming the accepted
// ones.
func Parse(name string) (func(Options) Algorithm, error) {
	switch name {
	case "gradient":
		return NewGradient, nil
	case "vegas":
		return NewVegas, nil
	case "aimd":
		return NewAIMD, nil
	case "fixed":
		return NewFixed, nil
	}
	return nil, fmt.Errorf("unknown concurrency limit algorithm %q: want one of %s", name, strings.Join(Names(), ", "))
}

// Limiter admits requests while fewer than the algorithm's limit are in
// flight, and never more than Max. It is safe for concurrent use.
type Limiter struct {
	limit    atomic.Int64 // min(alg's limit, max): all that Acquire reads
	inflight atomic.Int64
	max      int64
	now      func() time.Time
	mu       sync.Mutex // serialises alg, which is not safe for concurrent use
	alg      Algorithm
	q        queue
}

// New returns a limiter over alg. max caps the limit whatever alg says; max
// <= 0 leaves alg's own ceiling as the only one. now is the clock (nil
// means time.Now); tests inject a fake.
func New(alg Algorithm, max int, now func() time.Time) *Limiter {
	if now == nil {
		now = time.Now
	}
	l := &Limiter{alg: alg, max: int64(max), now: now}
	if max <= 0 {
		l.max = 1<<63 - 1
	}
	l.store(alg.Limit())
	return l
}

func (l *Limiter) store(limit int) { l.limit.Store(max(1, min(l.max, int64(limit)))) }

// Acquire admits one request, or returns ok=false when the limit is reached
// (the caller sheds it). It takes no lock and allocates nothing. An admitted
// request must be released exactly once.
func (l *Limiter) Acquire() (t Token, ok bool) {
	// A CAS loop rather than increment-then-undo: an undone increment would
	// briefly count a refused request, refusing others that should fit and
	// showing InFlight above Limit.
	for {
		n := l.inflight.Load()
		if n >= l.limit.Load() {
			return Token{}, false
		}
		if l.inflight.CompareAndSwap(n, n+1) {
			return Token{l: l, start: l.now(), inflight: int(n + 1)}, true
		}
	}
}

// Limit is the current limit, for gauges and /debug pages.
func (l *Limiter) Limit() int { return int(l.limit.Load()) }

// InFlight is the number of requests admitted and not yet released, for
// gauges and /debug pages. It may exceed Limit just after the limit falls.
func (l *Limiter) InFlight() int { return int(l.inflight.Load()) }

// Name is the algorithm's name.
func (l *Limiter) Name() string { return l.alg.Name() }

// Token is one admitted request. It is a small value: passing it around
// allocates nothing. The zero Token releases nothing.
type Token struct {
	l        *Limiter
	start    time.Time
	inflight int // at admission, including this request, as Netflix samples it
}

// Outcome says how a request ended, and so what it tells the algorithm.
type Outcome int

const (
	// Success means served: any answer the server itself produced, incl.
	// 4xx. Its latency is a sample.
	Success Outcome = iota
	// Dropped means failed by overload (deadline exceeded, upstream
	// 503/timeout): a drop sample.
	Dropped
	// Ignore means the client went away, or the ending says nothing about
	// our load: no sample, only the in-flight count falls. Unknown outcomes
	// are treated as Ignore, since a wrong sample is worse than none.
	Ignore
)

// Release ends the request; o says how it ended. Call it exactly once per
// admitted Token: a second call would free a slot twice.
func (t Token) Release(o Outcome) {
	l := t.l
	if l == nil {
		return
	}
	if o == Success || o == Dropped {
		now := l.now()
		l.mu.Lock()
		l.store(l.alg.Update(now, positive(now.Sub(t.start)), t.inflight, o == Dropped))
		l.mu.Unlock()
	}
	l.inflight.Add(-1)
	l.dispatch()
}
