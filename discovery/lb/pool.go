package lb

import (
	"io"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/sd"
	"github.com/go-kit/log"
)

// Pool is the set of upstream instances that balancers choose from.
//
// It is fed by Go kit's sd.Endpointer: NewPool subscribes an Endpointer to
// the Instancer, the Endpointer's cache calls the Factory once for every
// instance that appears and closes it when the instance goes, and the pool
// keeps each result as an Upstream. Balancers read the pool rather than the
// Endpointer's []endpoint.Endpoint because they must know which instance an
// endpoint belongs to: to skip one already tried, or one whose breaker is
// open.
type Pool struct {
	mu         sync.Mutex                  // serialises writers
	set        atomic.Pointer[[]*Upstream] // sorted by Instance; read lock-free
	now        func() time.Time
	logger     log.Logger
	endpointer *sd.DefaultEndpointer
	pending    map[string]bool // the first set's instances not built yet
	built      chan struct{}   // closed when pending empties
	zones      *zonePolicy     // nil: no zone preference
}

// PoolOption configures NewPool.
type PoolOption func(*Pool)

// WithZones makes the pool prefer the upstreams of its own zone (see
// Zones).
func WithZones(z Zones) PoolOption {
	return func(p *Pool) { p.zones = newZonePolicy(z) }
}

// NewPool subscribes to instancer and builds every instance's endpoint with
// f. It logs one line each time an instance joins or leaves. Close it to
// unsubscribe from the Instancer.
//
// It sets no InvalidateOnError: while discovery is away, the last known set
// is the best one there is.
func NewPool(instancer sd.Instancer, f Factory, logger log.Logger, options ...PoolOption) *Pool {
	p := newPool(logger)
	for _, o := range options {
		o(p)
	}
	p.subscribe(instancer, f)
	return p
}

func newPool(logger log.Logger) *Pool {
	p := &Pool{now: time.Now, logger: logger}
	p.set.Store(&[]*Upstream{})
	return p
}

func (p *Pool) subscribe(instancer sd.Instancer, f Factory) {
	p.endpointer = sd.NewEndpointer(newUnique(instancer, p.expect), p.factory(f), withoutDiscoveryErrors(log.With(p.logger, "component", "endpointer")))
}

// firstWait bounds how long NewPool waits for the endpointer to build the
// first set: it always does, unless a factory hangs.
const firstWait = 2 * time.Second

// expect is told the first event before the endpointer gets it, and
// returns what waits until the factory has been called once for each of
// its instances, successfully or not: the pool then holds the first set.
func (p *Pool) expect(ev sd.Event) (wait func()) {
	if ev.Err != nil || len(ev.Instances) == 0 {
		return func() {}
	}
	p.mu.Lock()
	p.pending = map[string]bool{}
	for _, i := range ev.Instances {
		p.pending[i] = true
	}
	built := make(chan struct{})
	p.built = built
	p.mu.Unlock()
	return func() {
		t := time.NewTimer(firstWait)
		defer t.Stop()
		select {
		case <-built:
		case <-t.C:
		}
	}
}

// seen marks instance as built, for expect.
func (p *Pool) seen(instance string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pending[instance] {
		delete(p.pending, instance)
		if len(p.pending) == 0 {
			close(p.built)
		}
	}
}

// Close unsubscribes from the Instancer. Instances already in the pool stay
// until the process ends; nothing reads them after Close.
func (p *Pool) Close() {
	if p.endpointer != nil {
		p.endpointer.Close()
	}
}

// factory adapts f to the sd.Factory that the Endpointer calls: every
// endpoint it builds joins the pool, and leaves it when the Endpointer
// closes it.
func (p *Pool) factory(f Factory) sd.Factory {
	return func(instance string) (endpoint.Endpoint, io.Closer, error) {
		e, health, err := f(instance)
		if err != nil {
			p.seen(instance)
			return nil, nil, err
		}
		if health == nil {
			health = unguarded{}
		}
		u := &Upstream{Instance: instance, call: e, health: health, now: p.now, ewma: float64(defaultLatency), stamp: p.now()}
		if p.zones != nil {
			u.Zone = p.zones.Of(instance)
			u.zoneCount = p.zones.counter(u.Zone)
		}
		p.add(u)
		p.seen(instance)
		return u.Call, closerFunc(func() error {
			p.remove(u)
			return health.Close()
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

// maxStackCandidates sizes the candidate buffer that balancers keep on the
// stack.
const maxStackCandidates = 16

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
	if p.zones != nil {
		dst = p.zones.filter(dst, set, p.now)
	}
	return dst
}

// Zones describes the zone decision; ok is false without WithZones.
func (p *Pool) Zones() (s ZoneSnapshot, ok bool) {
	if p.zones == nil {
		return ZoneSnapshot{}, false
	}
	return p.zones.snapshot(), true
}

func contains(set []*Upstream, u *Upstream) bool {
	for _, x := range set {
		if x == u {
			return true
		}
	}
	return false
}

// Snapshot describes one upstream for operators (see /debug/mesh).
type Snapshot struct {
	Instance  string  `json:"instance"`
	State     string  `json:"state"`
	Pending   int64   `json:"pending"`
	Requests  int64   `json:"requests"` // sent to it since it joined
	LatencyMs float64 `json:"latency_ewma_ms"`
	Zone      string  `json:"zone,omitempty"`
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
			Requests:  u.requests.Load(),
			LatencyMs: u.cost(now) / float64(u.pending.Load()+1) / 1e6,
			Zone:      u.Zone,
		})
	}
	return out
}

// unique passes on the events of an Instancer with each instance once. Go
// kit's endpoint cache calls the factory again for every repeat of an
// instance but keeps only the last closer, so a repeat would leave a ghost
// upstream that is never closed and still gets traffic. Repeats are
// ordinary: two registrations of one address, or a -proxy list that names
// one twice.
type unique struct {
	sd.Instancer
	expect func(sd.Event) (wait func()) // see Pool.expect
	mu     sync.Mutex
	relays map[chan<- sd.Event]relay
}

type relay struct {
	in         chan sd.Event
	done       chan struct{}
	registered chan struct{} // closed when the inner Register returned
}

func newUnique(i sd.Instancer, expect func(sd.Event) func()) *unique {
	return &unique{Instancer: i, expect: expect, relays: map[chan<- sd.Event]relay{}}
}

// Register implements sd.Instancer: events for ch pass through a relay
// that removes repeats. An instancer that sends its current set on
// Register, as Go kit's do, has it in the pool when Register returns, so
// that the first call after NewPool finds the instances.
func (u *unique) Register(ch chan<- sd.Event) {
	r := relay{in: make(chan sd.Event), done: make(chan struct{}), registered: make(chan struct{})}
	u.mu.Lock()
	u.relays[ch] = r
	u.mu.Unlock()
	go func() { u.Instancer.Register(r.in); close(r.registered) }()
	select {
	case ev := <-r.in: // sent by Register itself, or soon after
		ev.Instances = dedup(ev.Instances)
		wait := u.expect(ev)
		ch <- ev
		wait()
	case <-r.registered: // Register sent nothing
	}
	go func() {
		defer close(r.done)
		for ev := range r.in {
			ev.Instances = dedup(ev.Instances)
			ch <- ev
		}
	}()
}

// Deregister implements sd.Instancer. When it returns, nothing more is
// sent on ch, which its owner may then close.
func (u *unique) Deregister(ch chan<- sd.Event) {
	u.mu.Lock()
	r, ok := u.relays[ch]
	delete(u.relays, ch)
	u.mu.Unlock()
	if !ok {
		return
	}
	<-r.registered
	u.Instancer.Deregister(r.in)
	close(r.in)
	<-r.done
}

// dedup returns instances with each one once, in their first order.
func dedup(instances []string) []string {
	seen := make(map[string]bool, len(instances))
	out := make([]string, 0, len(instances))
	for _, i := range instances {
		if !seen[i] {
			seen[i] = true
			out = append(out, i)
		}
	}
	return out
}

// withoutDiscoveryErrors drops the line Go kit's endpoint cache writes for
// every error event of the Instancer ("err" alone): the discovery side
// reports its own failures, once per change. The cache's other lines, a
// factory that failed for an instance among them, pass.
func withoutDiscoveryErrors(logger log.Logger) log.Logger {
	return log.LoggerFunc(func(keyvals ...interface{}) error {
		if len(keyvals) == 2 && keyvals[0] == "err" {
			return nil
		}
		return logger.Log(keyvals...)
	})
}
