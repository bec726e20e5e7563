package discovery

import (
	"context"
	"errors"

	"github.com/go-kit/kit/metrics"
	"github.com/hashicorp/consul/api"
)

// follow runs fetch as a blocking query, again and again, until ctx ends.
// fetch returns the index to wait on next. Failures are counted (op and
// kind), said once per reason in why (logged when Consul refuses), retried
// with backoff, and asked again without an index: a restarted agent starts
// its indexes anew, and an index that goes backwards is dropped too.
func follow(ctx context.Context, op, service string, reach *Reachability, failures metrics.Counter, why *lastReason, fetch func(q *api.QueryOptions) (uint64, error)) {
	var index uint64
	backoff := minBackoff
	for ctx.Err() == nil {
		qctx, cancel := context.WithTimeout(ctx, queryTimeout)
		next, err := fetch((&api.QueryOptions{WaitIndex: index, WaitTime: blockingWait}).WithContext(qctx))
		cancel()
		reach.Observe(err)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			if failures != nil {
				failures.With("op", op, "kind", failureKind(err)).Add(1)
			}
			var refused api.StatusError
			why.set(describe(op, service, err), errors.As(err, &refused), "op", op)
			index = 0
			if !pause(ctx, backoff) {
				return
			}
			backoff = nextBackoff(backoff)
			continue
		}
		why.clear()
		backoff = minBackoff
		if next < index {
			next = 0
		}
		index = next
	}
}
