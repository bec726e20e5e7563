package limit

import (
	"math"
	"time"
)

// Gradient2 constants, Netflix's Gradient2Limit defaults unless noted.
const (
	// gradientLongWindow samples make up the long-term RTT average: long
	// enough that the baseline remembers unloaded latency through a spike.
	gradientLongWindow = 600
	// gradientWarmup samples are averaged plainly first, so the very first
	// (often cold, slow) request does not become the baseline.
	gradientWarmup = 10
	// gradientTolerance lets latency rise 50% over the baseline before the
	// limit shrinks: ordinary requests vary that much without any queue.
	gradientTolerance = 1.5
	// gradientQueueSize is the headroom added each update, so the limit keeps
	// probing upward while latency holds. Netflix's default is a constant 4
	// too; a function of the limit (sqrt) would only matter far above Max.
	gradientQueueSize = 4
	// gradientSmoothing takes a fifth of each new estimate, so one slow
	// request cannot halve the limit.
	gradientSmoothing = 0.2
	// gradientMinGradient bounds one update's cut, filtering outliers.
	gradientMinGradient = 0.5
	// Once the baseline is over gradientDrift times the sample, load has
	// passed and the slow average lags the present: decay it.
	gradientDrift      = 2
	gradientDriftDecay = 0.95
)

type gradient struct {
	o       Options
	limit   float64 // kept fractional: +0.8 a sample must accumulate
	longRtt float64 // nanoseconds
	warm    int     // samples in longRtt, counted up to gradientWarmup
}

// NewGradient returns Netflix's Gradient2: the limit follows the ratio of a
// long-term average RTT to the latest one, plus a little headroom. The
// default algorithm, since an average baseline adapts to a lasting latency
// change on its own, where a minimum (Vegas, AIMD) has to be re-probed.
func NewGradient(o Options) Algorithm {
	o = o.withDefaults()
	return &gradient{o: o, limit: float64(o.Initial)}
}

func (g *gradient) Name() string { return "gradient" }
func (g *gradient) Limit() int   { return int(g.limit) }

func (g *gradient) Update(_ time.Time, rtt time.Duration, inflight int, dropped bool) int {
	var newLimit float64
	if dropped {
		// Deviation: Netflix's Gradient2 ignores drops. Here a drop takes
		// the largest cut a gradient may make, without the queue headroom
		// (so it shrinks even small limits), and its rtt stays out of the
		// baseline: it is how long we waited before giving up, and would
		// drag the baseline up, making the limiter more tolerant of the
		// very overload it signals.
		newLimit = g.limit * gradientMinGradient
	} else {
		short := float64(positive(rtt))
		long := g.addLong(short)
		if long/short > gradientDrift {
			g.longRtt *= gradientDriftDecay // as Netflix: this sample still sees long undecayed
		}
		if float64(inflight) < g.limit/2 {
			return g.Limit() // app limited: low latency here proves nothing about more load
		}
		grad := math.Max(gradientMinGradient, math.Min(1, gradientTolerance*long/short))
		newLimit = g.limit*grad + gradientQueueSize
	}
	newLimit = g.limit*(1-gradientSmoothing) + newLimit*gradientSmoothing
	g.limit = math.Max(float64(g.o.Min), math.Min(float64(g.o.Max), newLimit))
	return g.Limit()
}

// addLong folds rtt into the long-term average, as Netflix's
// ExpAvgMeasurement(600, 10) does, and returns it.
func (g *gradient) addLong(rtt float64) float64 {
	if g.warm < gradientWarmup {
		g.warm++
		g.longRtt += (rtt - g.longRtt) / float64(g.warm)
	} else {
		const f = 2.0 / (gradientLongWindow + 1)
		g.longRtt = g.longRtt*(1-f) + rtt*f
	}
	return g.longRtt
}
