package discovery

import (
	"context"
	"errors"
	"sync"

	"github.com/go-kit/log"
)

// Reachability tracks whether Consul answers, and logs only when that
// changes: a retry loop against a dead agent must not write a line per try.
type Reachability struct {
	mu     sync.Mutex
	down   bool
	logger log.Logger
}

// NewReachability returns a tracker that logs state changes to logger.
func NewReachability(logger log.Logger) *Reachability {
	return &Reachability{logger: logger}
}

// Observe records the outcome of one call to Consul.
func (r *Reachability) Observe(err error) {
	if errors.Is(err, context.Canceled) {
		return // we gave up on the call; it says nothing about Consul
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case err != nil && !r.down:
		r.down = true
		r.logger.Log("consul", "unreachable", "err", err)
	case err == nil && r.down:
		r.down = false
		r.logger.Log("consul", "reachable")
	}
}

// Down reports whether the last call to Consul failed.
func (r *Reachability) Down() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.down
}
