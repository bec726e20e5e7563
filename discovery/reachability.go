package discovery

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/go-kit/log"
	"github.com/hashicorp/consul/api"
)

// downAfter is how long Consul must keep failing before it counts as
// unreachable. While an agent shuts down, one caller may see an error and
// another a late success within milliseconds; that is not worth two lines.
const downAfter = time.Second

// Reachability tracks whether Consul answers, and logs only when that
// changes: a retry loop against a dead agent must not write a line per try.
type Reachability struct {
	mu        sync.Mutex
	down      bool
	failingAt time.Time // first failure since the last success
	logger    log.Logger
	now       func() time.Time
}

// NewReachability returns a tracker that logs state changes to logger.
func NewReachability(logger log.Logger) *Reachability {
	return &Reachability{logger: logger, now: time.Now}
}

// Observe records the outcome of one call to Consul. An answer with a 4xx
// status (such as 404 for an unknown service) is still an answer.
func (r *Reachability) Observe(err error) {
	if errors.Is(err, context.Canceled) {
		return // we gave up on the call; it says nothing about Consul
	}
	var status api.StatusError
	if errors.As(err, &status) && status.Code < 500 {
		err = nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	if err == nil {
		r.failingAt = time.Time{}
		if r.down {
			r.down = false
			r.logger.Log("consul", "reachable")
		}
		return
	}
	if r.failingAt.IsZero() {
		r.failingAt = now
	}
	if !r.down && now.Sub(r.failingAt) >= downAfter {
		r.down = true
		r.logger.Log("consul", "unreachable", "err", err)
	}
}

// Down reports whether Consul has been failing for a while.
func (r *Reachability) Down() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.down
}

// Failing reports whether calls have failed since the last success, however
// briefly: Down waits a while before it says so.
func (r *Reachability) Failing() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return !r.failingAt.IsZero()
}
