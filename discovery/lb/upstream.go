package lb

import (
	"context"
	"errors"
	"io"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/ratelimit"
)

// Health is what the pool must know about an instance besides its endpoint:
// whether it should take traffic now (a circuit breaker, a rate limit) and a
// name for its state. The Endpointer closes it when the instance leaves.
type Health interface {
	io.Closer
	// Available is false while the instance should get no traffic.
	Available() bool
	// State names the state for operators, e.g. "closed" or "open".
	State() string
}

// Factory builds the endpoint of one instance and the Health that guards
// it. It is Go kit's sd.Factory with a typed closer, so that a guard which
// stops implementing Health fails to compile rather than silently making
// every instance "always available".
type Factory func(instance string) (endpoint.Endpoint, Health, error)

// Upstream is one instance in the pool, with the load statistics that the
// peak-EWMA balancer needs.
type Upstream struct {
	Instance string
	// Zone is the instance's zone when it joined, "" for none.
	Zone      string
	call      endpoint.Endpoint
	health    Health
	zoneCount *atomic.Int64 // requests to Zone; nil without Zones

	pending  atomic.Int64
	requests atomic.Int64 // calls made, for operators
	mu       sync.Mutex
	ewma     float64 // nanoseconds
	stamp    time.Time
	now      func() time.Time
}

// failurePenalty is added to the latency of a failed call, so that the
// balancer steers away from an instance that fails fast.
const failurePenalty = 50 * time.Millisecond

// decay is the time constant of the latency average. Linkerd uses 10s; a
// shorter one lets a penalised instance be tried again sooner.
const decay = 2 * time.Second

// defaultLatency is the latency a new instance is assumed to have, as
// Linkerd does, so that its waiting requests count from the start: at 0, an
// instance that joins or rejoins would look free and get a burst of traffic
// each time. It is a little above a loopback or LAN round trip, and decays
// like any observation.
const defaultLatency = time.Millisecond

// Call sends one request to the instance and records its latency.
func (u *Upstream) Call(ctx context.Context, request interface{}) (interface{}, error) {
	u.requests.Add(1)
	if u.zoneCount != nil {
		u.zoneCount.Add(1)
	}
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
	if errors.Is(err, context.DeadlineExceeded) && CallerBound(ctx) {
		// The caller's own deadline ran out: no failure of the instance
		// (no penalty), but the time it took is a lower bound of its
		// latency, taken at once as a peak is, so that one hung for every
		// caller loses its share even when all of them send short
		// deadlines.
		u.observe(end, float64(rtt), true)
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
// next answer alone. A failure (or a timeout on the caller's deadline, a
// lower bound) counts at once in full with peak set (the "peak" of peak
// EWMA); a single slow success does not. On a shared machine every instance
// has the odd scheduling stall, and counting those as peaks made healthy
// instances look as slow as a really slow one.
//
// Concurrent calls can apply their observations out of order. The elapsed
// time is clamped at 0, so that the weight never exceeds 1 and the average
// stays between its old value and the new observation; the stamp never
// goes back.
func (u *Upstream) observe(now time.Time, rtt float64, peak bool) {
	if rtt < 0 {
		rtt = 0
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if peak && rtt > u.ewma {
		u.ewma = rtt
	} else {
		u.ewma = u.ewma*weight(now.Sub(u.stamp)) + rtt*(1-weight(now.Sub(u.stamp)))
	}
	if now.After(u.stamp) {
		u.stamp = now
	}
}

// weight is how much of an average that is elapsed old still counts: 1 for
// no time (or a negative one), falling towards 0.
func weight(elapsed time.Duration) float64 {
	if elapsed <= 0 {
		return 1
	}
	return math.Exp(-float64(elapsed) / float64(decay))
}

// cost estimates how long a new request would wait at this instance: the
// decayed latency average times the requests already waiting, plus one.
func (u *Upstream) cost(now time.Time) float64 {
	u.mu.Lock()
	ewma := u.ewma * weight(now.Sub(u.stamp))
	u.mu.Unlock()
	return ewma * float64(u.pending.Load()+1)
}

// latency is the latency average as last measured, for comparing zones.
// It is not decayed towards "free", unlike cost's: an upstream of another
// zone gets no traffic while its pool stays home, and a decayed average
// would make an idle zone always look cheaper and draw the pool out of
// its own. Nor is it multiplied by the requests waiting: the zone that
// takes the traffic always has more waiting than the idle one, which says
// nothing about which is slower.
func (u *Upstream) latency() float64 {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.ewma
}

// Available reports whether the instance should take traffic now.
func (u *Upstream) Available() bool { return u.health.Available() }

// State names the instance's state for operators, e.g. a breaker state.
func (u *Upstream) State() string { return u.health.State() }

// unguarded is the Health of an instance whose factory returned none.
type unguarded struct{}

func (unguarded) Close() error    { return nil }
func (unguarded) Available() bool { return true }
func (unguarded) State() string   { return "unguarded" }

var _ Health = unguarded{}
