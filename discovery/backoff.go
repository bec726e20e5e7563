package discovery

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff bounds of every retry loop against Consul: the registrar's
// (registering, and watching its own entry) and the watch client's
// (discovery queries during an outage). The cap is short because a member
// must notice Consul's return within seconds; one request every ~2s from
// an idle member is still nothing for an agent.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 2 * time.Second
)

// nextBackoff doubles d, capped at maxBackoff, and adds ±25% jitter, so
// that a fleet of members does not retry in lockstep. Waits therefore stay
// between 0.75×minBackoff and 1.25×maxBackoff.
func nextBackoff(d time.Duration) time.Duration {
	return jitter(d, rand.Float64())
}

// jitter is nextBackoff with its random number r in [0, 1) given.
func jitter(d time.Duration, r float64) time.Duration {
	d *= 2
	if d > maxBackoff {
		d = maxBackoff
	}
	return time.Duration(float64(d) * (0.75 + r/2))
}

// pause waits d, or less if ctx ends first; it reports whether the wait
// ran its course, so that a retry loop stops when its owner does.
func pause(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
