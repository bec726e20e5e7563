package limit

import "time"

// AIMD constants.
const (
	// aimdBackoff cuts 10% per overload signal: Netflix's default ratio.
	aimdBackoff = 0.9
	// A success slower than aimdSlowFactor × the minimum RTT counts as a
	// drop. Netflix's 5 s timeout would never fire on a millisecond service
	// before its clients gave up; twice the unloaded latency means a request
	// waited in a queue about as long as it was served.
	aimdSlowFactor = 2
	// aimdSlowSlack keeps the threshold at least 1 ms above the minimum:
	// a sub-millisecond handler sees 2x its best time from scheduling and
	// GC alone, with no queue at all.
	aimdSlowSlack = time.Millisecond
	// aimdMinWindow: the minimum is taken over the last one to two windows,
	// so a lasting latency rise is re-learned within 20 s instead of
	// shedding forever. Sustained overload does not raise it, because the
	// backoff empties the queue and unloaded samples keep coming.
	aimdMinWindow = 10 * time.Second
)

type aimd struct {
	o         Options
	limit     int
	cur, prev time.Duration // minimum RTT in this window and the last; 0 = none
	start     time.Time     // when cur's window began
	started   bool          // start is set (a fake clock may well use the zero time)
}

// NewAIMD returns Netflix's AIMD: add one while requests succeed near the
// limit, cut by a tenth on a drop or a request slower than twice the recent
// minimum RTT.
func NewAIMD(o Options) Algorithm {
	o = o.withDefaults()
	return &aimd{o: o, limit: o.Initial}
}

func (a *aimd) Name() string { return "aimd" }
func (a *aimd) Limit() int   { return a.limit }

func (a *aimd) Update(now time.Time, rtt time.Duration, inflight int, dropped bool) int {
	rtt = positive(rtt)
	if !dropped {
		a.observe(now, rtt) // a drop's rtt is the wait before giving up, not latency
	}
	switch {
	case dropped || rtt > a.threshold():
		// Netflix also takes min(limit-1, …), which never binds for a ratio
		// below 1: the product is under limit and rounds down.
		a.limit = max(a.o.Min, int(float64(a.limit)*aimdBackoff))
	case inflight*2 >= a.limit: // else app limited: no growth far from the load
		a.limit = min(a.o.Max, a.limit+1)
	}
	return a.limit
}

func (a *aimd) observe(now time.Time, rtt time.Duration) {
	if age := now.Sub(a.start); !a.started || age >= aimdMinWindow {
		a.prev = a.cur
		if !a.started || age >= 2*aimdMinWindow {
			a.prev = 0 // idle for a whole window: the last one is stale too
		}
		a.cur, a.start, a.started = 0, now, true
	}
	if a.cur == 0 || rtt < a.cur {
		a.cur = rtt
	}
}

// threshold is the rtt above which a success counts as overload. It runs
// after observe, so cur is set.
func (a *aimd) threshold() time.Duration {
	m := a.cur
	if a.prev != 0 && a.prev < m {
		m = a.prev
	}
	return max(aimdSlowFactor*m, m+aimdSlowSlack)
}
