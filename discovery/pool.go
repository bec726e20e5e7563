package discovery

import (
	"context"
	"errors"
	"io"
	"math"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/ratelimit"
	"github.com/go-kit/kit/sd"
	"github.com/go-kit/log"
)

// Pool is the set of upstream instances that an sd.Endpointer currently
// holds. The Endpointer owns their lifecycle: it calls the factory that
// Pool.Factory wraps when an instance appears and the closer when it goes.
// Balancers read the pool, because they must know which instance an
// endpoint belongs to (to skip one already tried, or one whose breaker is
// open), and a bare endpoint.Endpoint cannot say.
type Pool struct {
	mu     sync.Mutex                  // serialises writers
	set    atomic.Pointer[[]*Upstream] // sorted by Instance; read lock-free
	now    func() time.Time
	logger log.Logger
}

// NewPool returns an empty pool. It logs one line each time an instance
// joins or leaves.
func NewPool(logger log.Logger) *Pool {
	p := &Pool{now: time.Now, logger: logger}
	p.set.Store(&[]*Upstream{})
	return p
}

// Health is what a factory's io.Closer may also implement to tell the pool
// whether its instance should take traffic (for example, a breaker).
type Health interface {
	Available() bool
	State() string
}

// Upstream is one instance in the pool, with the load statistics that the
// peak-EWMA balancer needs.
type Upstream struct {
	Instance string
	call     endpoint.Endpoint
	health   Health // may be nil

	pending atomic.Int64
	mu      sync.Mutex
	ewma    float64 // nanoseconds
	stamp   time.Time
	now     func() time.Time
}

// failurePenalty is added to the latency of a failed call, so that the
// balancer steers away from an instance that fails fast.
const failurePenalty = 50 * time.Millisecond

// decay is the time constant of the latency average. Linkerd uses 10s; a
// shorter one lets a penalised instance be tried again sooner.
const decay = 2 * time.Second

// Call sends one request to the instance and records its latency.
func (u *Upstream) Call(ctx context.Context, request interface{}) (interface{}, error) {
	u.pending.Add(1)
	begin := u.now()
	response, err := u.call(ctx, request)
	end := u.now()
	u.pending.Add(-1)
	rtt := end.Sub(begin)
	if errors.Is(err, ratelimit.ErrLimited) || errors.Is(ctx.Err(), context.Canceled) {
		// Our own limit said no, or the caller hung up: neither says
		// anything about the instance's speed.
		return response, err
	}
	if err != nil {
		rtt += failurePenalty
	}
	u.observe(end, float64(rtt), err != nil)
	return response, err
}

// observe folds one latency into the average. The average is over time,
// not over requests: an observation weighs by the time since the previous
// one, so an instance that has not been asked for a while is judged by its
// next answer alone. A failure counts at once in full (the "peak" of peak
// EWMA); a single slow success does not. On a shared machine every instance
// has the odd scheduling stall, and counting those as peaks made healthy
// instances look as slow as a really slow one.
func (u *Upstream) observe(now time.Time, rtt float64, failed bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if failed && rtt > u.ewma {
		u.ewma = rtt
	} else {
		w := math.Exp(-float64(now.Sub(u.stamp)) / float64(decay))
		u.ewma = u.ewma*w + rtt*(1-w)
	}
	u.stamp = now
}

// cost estimates how long a new request would wait at this instance: the
// decayed latency average times the requests already waiting, plus one.
func (u *Upstream) cost(now time.Time) float64 {
	u.mu.Lock()
	ewma := u.ewma * math.Exp(-float64(now.Sub(u.stamp))/float64(decay))
	u.mu.Unlock()
	return ewma * float64(u.pending.Load()+1)
}

// Available reports whether the instance should take traffic now.
func (u *Upstream) Available() bool {
	return u.health == nil || u.health.Available()
}

// State names the instance's state for operators, e.g. a breaker state.
func (u *Upstream) State() string {
	if u.health == nil {
		return "unknown"
	}
	return u.health.State()
}

// Factory wraps f so that every endpoint it builds joins the pool and
// leaves it when the Endpointer closes it.
func (p *Pool) Factory(f sd.Factory) sd.Factory {
	return func(instance string) (endpoint.Endpoint, io.Closer, error) {
		e, closer, err := f(instance)
		if err != nil {
			return nil, nil, err
		}
		u := &Upstream{Instance: instance, call: e, now: p.now}
		if h, ok := closer.(Health); ok {
			u.health = h
		}
		p.add(u)
		return u.Call, closerFunc(func() error {
			p.remove(u)
			if closer != nil {
				return closer.Close()
			}
			return nil
		}), nil
	}
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }

func (p *Pool) add(u *Upstream) {
	p.mu.Lock()
	defer p.mu.Unlock()
	old := *p.set.Load()
	next := make([]*Upstream, 0, len(old)+1)
	next = append(next, old...)
	next = append(next, u)
	sort.Slice(next, func(i, j int) bool { return next[i].Instance < next[j].Instance })
	p.set.Store(&next)
	p.logger.Log("upstream", u.Instance, "change", "joined", "upstreams", len(next))
}

func (p *Pool) remove(u *Upstream) {
	p.mu.Lock()
	defer p.mu.Unlock()
	old := *p.set.Load()
	next := make([]*Upstream, 0, len(old))
	for _, x := range old {
		if x != u {
			next = append(next, x)
		}
	}
	p.set.Store(&next)
	p.logger.Log("upstream", u.Instance, "change", "left", "upstreams", len(next))
}

// Upstreams returns the current set, sorted by instance. Do not modify it.
func (p *Pool) Upstreams() []*Upstream {
	return *p.set.Load()
}

// candidates appends to dst the upstreams not in exclude that are
// available. If every remaining upstream is unavailable it returns those
// anyway, and lets their breakers answer: that keeps the result honest
// (an error, not a silent empty set) while a breaker is deciding.
func (p *Pool) candidates(dst, exclude []*Upstream) []*Upstream {
	set := *p.set.Load()
	var unavailable int
	for _, u := range set {
		if contains(exclude, u) {
			continue
		}
		if !u.Available() {
			unavailable++
			continue
		}
		dst = append(dst, u)
	}
	if len(dst) == 0 && unavailable > 0 {
		for _, u := range set {
			if !contains(exclude, u) {
				dst = append(dst, u)
			}
		}
	}
	return dst
}

func contains(set []*Upstream, u *Upstream) bool {
	for _, x := range set {
		if x == u {
			return true
		}
	}
	return false
}

// Snapshot describes one upstream for operators (see cmd's /debug/mesh).
type Snapshot struct {
	Instance  string  `json:"instance"`
	State     string  `json:"state"`
	Pending   int64   `json:"pending"`
	LatencyMs float64 `json:"latency_ewma_ms"`
}

// Snapshot describes the current set.
func (p *Pool) Snapshot() []Snapshot {
	set := p.Upstreams()
	now := p.now()
	out := make([]Snapshot, 0, len(set))
	for _, u := range set {
		out = append(out, Snapshot{
			Instance:  u.Instance,
			State:     u.State(),
			Pending:   u.pending.Load(),
			LatencyMs: u.cost(now) / float64(u.pending.Load()+1) / 1e6,
		})
	}
	return out
}
