package lb

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/metrics"
)

// RetryOptions configures Retry. Zero durations and counts get defaults.
type RetryOptions struct {
	// MaxAttempts bounds the attempts of one request, the first included.
	MaxAttempts int
	// Timeout bounds the whole request; the caller's own deadline, if
	// sooner, wins.
	Timeout time.Duration
	// AttemptTimeout bounds one attempt, so that a hung instance costs one
	// attempt, not the whole request.
	AttemptTimeout time.Duration
	// Budget limits retries across requests. Nil means no retries at all.
	Budget *Budget
	// Attempts counts attempts by "outcome": "success", "failure",
	// "budget_exhausted". May be nil.
	Attempts metrics.Counter
}

// Retry returns an endpoint that sends each request to an instance chosen
// by p and, when that attempt fails, to another one. Unlike Go kit's
// lb.Retry it never retries on an instance already tried in the same
// request, gives each attempt its own timeout inside the overall one, and
// spends a shared budget so that a failing cluster sees no retry storm.
//
// Only errors are retried. Business errors travel inside responses (see
// endpoint.Failer) and are returned at once.
func Retry(p Picker, o RetryOptions) endpoint.Endpoint {
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = 3
	}
	if o.Timeout <= 0 {
		o.Timeout = time.Second
	}
	if o.AttemptTimeout <= 0 || o.AttemptTimeout > o.Timeout {
		o.AttemptTimeout = o.Timeout
	}
	// The outcomes are few and known: their series are resolved once here,
	// not on every attempt (a With builds label maps).
	outcomes := map[string]metrics.Counter{}
	if o.Attempts != nil {
		for _, outcome := range []string{"success", "failure", "budget_exhausted"} {
			outcomes[outcome] = o.Attempts.With("outcome", outcome)
		}
	}
	count := func(outcome string) {
		if c := outcomes[outcome]; c != nil {
			c.Add(1)
		}
	}
	return func(ctx context.Context, request interface{}) (interface{}, error) {
		// The overall timeout is a deadline, not a context of its own:
		// each attempt gets one context whose deadline is the sooner of
		// its own and the overall one (the caller's, if sooner still,
		// wins through the parent). One context per attempt instead of
		// two saves a timer and its allocations on every request.
		now := time.Now()
		deadline := now.Add(o.Timeout)
		// The caller's deadline, read once: it ends the request even
		// before ctx's timer fires (which a loaded machine runs late),
		// and it tells a caller-bound attempt.
		callerDeadline, hasCaller := ctx.Deadline()

		var (
			tried []*Upstream // grows only when an attempt fails
			errs  []error
		)
		for attempt := 1; attempt <= o.MaxAttempts; attempt++ {
			if attempt > 1 {
				now = time.Now()
			}
			if ctx.Err() != nil || hasCaller && !now.Before(callerDeadline) {
				// Even before the first attempt: a forward past the
				// caller's deadline costs the peer a request it can only
				// drop.
				break
			}
			if attempt > 1 {
				if !now.Before(deadline) {
					break
				}
				if !o.Budget.withdraw() {
					count("budget_exhausted")
					errs = append(errs, ErrBudgetExhausted)
					break
				}
			}
			u, err := p.Pick(tried)
			if err != nil {
				if attempt == 1 {
					return nil, err
				}
				break // every instance has been tried once
			}
			if attempt == 1 {
				o.Budget.deposit() // only a request that is sent earns retries
			}
			attemptDeadline := now.Add(o.AttemptTimeout)
			if attemptDeadline.After(deadline) {
				attemptDeadline = deadline
			}
			actx, acancel := context.WithDeadline(ctx, attemptDeadline)
			if hasCaller && callerDeadline.Before(attemptDeadline) && !ownDeadline(ctx, callerDeadline) {
				// The caller's deadline, not ours, bounds this attempt.
				actx = context.WithValue(actx, callerBoundKey{}, true)
			}
			response, err := u.Call(actx, request)
			acancel()
			if err == nil {
				count("success")
				return response, nil
			}
			count("failure")
			errs = append(errs, fmt.Errorf("%s: %w", u.Instance, err))
			tried = append(tried, u)
		}
		now = time.Now()
		switch err := ctx.Err(); {
		case err != nil:
			errs = append(errs, err)
		case !now.Before(deadline) || hasCaller && !now.Before(callerDeadline):
			errs = append(errs, context.DeadlineExceeded)
		}
		return nil, fmt.Errorf("after %d attempts: %w", len(tried), errors.Join(errs...))
	}
}

// Expired reports whether ctx has ended, or its deadline has passed and
// its timer has not noticed yet (it may run late on a loaded machine):
// either way the caller waits no more, and no further attempt may start.
func Expired(ctx context.Context) bool {
	if ctx.Err() != nil {
		return true
	}
	d, ok := ctx.Deadline()
	return ok && !time.Now().Before(d)
}

type callerBoundKey struct{}

// CallerBound reports whether the deadline of an attempt's ctx is its
// caller's rather than the attempt's or the request's own timeout. A
// caller picks its deadline (a client's X-Stringsvc-Timeout-Ms, say), so
// an attempt that runs out of it says nothing about the instance's health:
// it must not count against the instance's breaker, and adds to its
// latency average only its time, as a peak, without the failure penalty.
func CallerBound(ctx context.Context) bool {
	b, _ := ctx.Value(callerBoundKey{}).(bool)
	return b
}

type ownDeadlineKey struct{}

// WithOwnDeadline is context.WithDeadline for a deadline of the member's
// own configuration (a route's RequestTimeout across its failover
// targets): attempts it bounds are not CallerBound, and their timeouts
// count against the instance as any attempt timeout does.
func WithOwnDeadline(ctx context.Context, d time.Time) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithDeadline(ctx, d)
	return context.WithValue(ctx, ownDeadlineKey{}, d), cancel
}

// ownDeadline reports whether d, ctx's deadline, is one WithOwnDeadline set.
func ownDeadline(ctx context.Context, d time.Time) bool {
	own, ok := ctx.Value(ownDeadlineKey{}).(time.Time)
	return ok && own.Equal(d)
}
