package limit

import (
	"math"
	"math/rand/v2"
	"time"
)

// vegasProbeMultiplier: rtt_noload is re-learned every jitter × 30 × limit
// samples (jitter in [0.5, 1)), Netflix's default. Counting samples rather
// than time, as Netflix does, probes a busy server as often in requests as
// an idle one, so now is unused.
const vegasProbeMultiplier = 30

type vegas struct {
	o      Options
	limit  float64
	noLoad time.Duration // minimum RTT since the last probe; 0 = none yet
	probes int           // samples since the last probe
	jitter float64       // spreads probes so replicas started together drift apart
	rand   func() float64
}

// NewVegas returns Netflix's Vegas: the queue a request saw is estimated
// from how much its RTT exceeds the minimum (rtt_noload), and the limit
// grows while that queue is small and shrinks once it is large.
func NewVegas(o Options) Algorithm { return newVegas(o, rand.Float64) }

// newVegas takes the jitter source, a func returning [0, 1), so tests can
// make probing deterministic.
func newVegas(o Options, rnd func() float64) *vegas {
	o = o.withDefaults()
	v := &vegas{o: o, limit: float64(o.Initial), rand: rnd}
	v.resetProbe()
	return v
}

func (v *vegas) Name() string { return "vegas" }
func (v *vegas) Limit() int   { return int(v.limit) }

func (v *vegas) resetProbe() {
	v.probes = 0
	v.jitter = 0.5 + v.rand()/2
}

func (v *vegas) Update(_ time.Time, rtt time.Duration, inflight int, dropped bool) int {
	if dropped {
		// Deviation: Netflix counts a drop towards the probe and may take
		// its rtt as rtt_noload. A drop's rtt is how long we waited before
		// giving up, not the service's latency, so it only cuts the limit.
		return v.set(v.limit - vegasLog(v.limit))
	}
	rtt = positive(rtt)
	v.probes++
	if float64(v.probes) >= v.jitter*vegasProbeMultiplier*v.limit {
		// Forget the minimum so a lasting latency rise (new code, bigger
		// payloads) stops reading as queueing forever.
		v.resetProbe()
		v.noLoad = rtt
		return v.Limit()
	}
	if v.noLoad == 0 || rtt < v.noLoad {
		v.noLoad = rtt
		return v.Limit()
	}
	if float64(inflight*2) < v.limit {
		return v.Limit() // app limited: don't drift upward far from the load
	}
	queue := math.Ceil(v.limit * (1 - float64(v.noLoad)/float64(rtt)))
	lg := vegasLog(v.limit)
	switch alpha, beta := 3*lg, 6*lg; {
	case queue <= lg: // no queue to speak of: grow fast
		return v.set(v.limit + beta)
	case queue < alpha:
		return v.set(v.limit + lg)
	case queue > beta:
		return v.set(v.limit - lg)
	}
	return v.Limit()
}

// set clamps and stores. Netflix's smoothing defaults to 1.0, taking the new
// estimate whole, so it is left out.
func (v *vegas) set(limit float64) int {
	v.limit = math.Max(float64(v.o.Min), math.Min(float64(v.o.Max), limit))
	return v.Limit()
}

// vegasLog is Netflix's Log10RootFunction: log10 of the limit, at least 1.
// Deviation: Netflix switches to sqrt at 1000 (its lookup table's end), a
// 15x jump in step size at one point; log10 stays continuous above it.
func vegasLog(limit float64) float64 { return math.Max(1, math.Floor(math.Log10(limit))) }
