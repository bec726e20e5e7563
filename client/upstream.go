package client

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/metrics"
	"github.com/go-kit/kit/ratelimit"
	"github.com/go-kit/log"
	"github.com/sony/gobreaker"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/time/rate"

	"github.com/kitmesh/stringsvc/discovery/lb"
	"github.com/kitmesh/stringsvc/internal/clip"
	"github.com/kitmesh/stringsvc/transport"
	"github.com/kitmesh/stringsvc/transport/http1"
)

// UpstreamOptions configures NewUpstreamFactory.
type UpstreamOptions struct {
	// Self returns this member's advertised "host:port" ("" while it is
	// not settled; it may be nil). When discovery yields
	// it, the factory returns Local instead of a network client.
	Self func() string
	// Local is this member's own endpoint (endpoints.Set.Endpoint), called
	// in-process.
	Local endpoint.Endpoint
	// Transport is shared by every upstream (see http1.NewTransport). The
	// client endpoints call it directly (see transport.WithRoundTripper).
	Transport http.RoundTripper
	// TLS calls instances over https (see transport.OverTLS).
	TLS bool
	// Forwarded marks requests as forwarded by a member (see
	// transport.AsForwarded).
	Forwarded bool
	// Tracing carries the trace context to the instances (see
	// transport.WithTracing).
	Tracing transport.Tracing
	// RateLimit is the steady rate of requests per second to one upstream,
	// and RateBurst the burst above it; 0 is no limit.
	RateLimit float64
	RateBurst int
	// BreakerFailures consecutive failures, or one lost connection, open
	// an upstream's breaker for BreakerTimeout, after which one trial
	// request may close it again.
	BreakerFailures uint32
	BreakerTimeout  time.Duration
	// BreakerChanges counts breaker transitions, labelled "to". May be nil.
	BreakerChanges metrics.Counter
	// Logger gets one line per breaker state change.
	Logger log.Logger
}

// NewUpstreamFactory returns the factory of upstream endpoints. For every
// discovered instance it builds a forwarding HTTP client endpoint guarded by
// a circuit breaker and, outside it, a rate limiter (a local limit must not
// count as the upstream's failure), and returns the Guard that reports on
// both. Only transport failures and 5xx reach the breaker; service.ErrEmpty
// travels in the response and never trips it.
func NewUpstreamFactory(o UpstreamOptions) func(instance string) (endpoint.Endpoint, *Guard, error) {
	if o.Logger == nil {
		o.Logger = log.NewNopLogger()
	}
	return func(instance string) (endpoint.Endpoint, *Guard, error) {
		if o.Self != nil && o.Local != nil && instance == o.Self() {
			return o.Local, &Guard{}, nil
		}
		options := []transport.ClientOption{transport.WithRoundTripper(o.Transport), transport.WithTracing(o.Tracing)}
		if o.Forwarded {
			options = append(options, transport.AsForwarded())
		}
		if o.TLS {
			options = append(options, transport.OverTLS())
		}
		eps, err := transport.MakeClientEndpoints(instance, options...)
		if err != nil {
			return nil, nil, err
		}
		logger := log.With(o.Logger, "upstream", instance)
		// A connection that cannot be made, or that the instance drops
		// mid-request, means the instance is gone (a crash, a partition):
		// eject it at once rather than after several failures, and long
		// before Consul's check notices.
		one := eps.Endpoint()
		var (
			lost    lostMark
			lastErr atomic.Value // error string, for the log line
		)
		call := func(ctx context.Context, request interface{}) (interface{}, error) {
			response, err := one(ctx, request)
			if err != nil {
				// A peer's bytes may be in it: bounded, as every
				// upstream error text in a log line is.
				lastErr.Store(clip.String(err.Error(), maxLoggedError))
			}
			return response, err
		}
		cb := gobreaker.NewTwoStepCircuitBreaker(gobreaker.Settings{
			Name:    instance,
			Timeout: o.BreakerTimeout,
			ReadyToTrip: func(c gobreaker.Counts) bool {
				return c.ConsecutiveFailures >= o.BreakerFailures || lost.lost // read inside lost.fail
			},
			OnStateChange: func(_ string, from, to gobreaker.State) {
				if to == gobreaker.StateOpen {
					logger.Log("breaker", to.String(), "from", from.String(), "err", lastErr.Load())
				} else {
					logger.Log("breaker", to.String(), "from", from.String())
				}
				if o.BreakerChanges != nil {
					o.BreakerChanges.With("to", to.String()).Add(1)
				}
			},
		})
		ep := guarded(cb, &lost, call)
		var limit *rate.Limiter // nil: no limit
		if o.RateLimit > 0 {
			limit = rate.NewLimiter(rate.Limit(o.RateLimit), o.RateBurst)
			ep = ratelimit.NewErroringLimiter(limit)(ep)
		}
		ep = rejections(instance, ep)
		return ep, &Guard{cb: cb, limit: limit}, nil
	}
}

// guarded calls next through the two-step breaker cb. A caller hanging up
// says nothing about the instance, with one exception: while the breaker
// is half-open the call is its one trial, and a trial that never finished
// must not close the breaker of an instance that may be hung. So a
// cancellation is neutral while closed and a failed trial while half-open.
// (Attempt timeouts are DeadlineExceeded, and count, unless the caller's
// own deadline bounded the attempt: lb.CallerBound.)
func guarded(cb *gobreaker.TwoStepCircuitBreaker, lost *lostMark, next endpoint.Endpoint) endpoint.Endpoint {
	return func(ctx context.Context, request interface{}) (interface{}, error) {
		done, err := cb.Allow()
		if err != nil {
			return nil, err
		}
		trial := cb.State() == gobreaker.StateHalfOpen
		response, err := next(ctx, request)
		switch {
		case neutral(ctx, err) && !trial:
			// Neutral: gobreaker counts nothing until done is called. A
			// deadline the caller chose, however short, is not the
			// instance's failure: a client must not eject a peer.
		case err != nil || callerGone(ctx):
			// Every failure goes through lost.fail: gobreaker calls
			// ReadyToTrip only inside done(false), under lost's lock.
			lost.fail(done, http1.ConnectionLost(err) && !callerGone(ctx))
		default:
			done(true)
		}
		return response, err
	}
}

// lostMark tells the breaker's ReadyToTrip whether the failure it judges
// lost the connection, which ejects the instance at once. It is set, read
// and cleared under one lock around the failure's done(false), inside which
// gobreaker calls ReadyToTrip: a mark shared by concurrent calls would let
// one call's outcome decide on another's failure.
type lostMark struct {
	mu   sync.Mutex
	lost bool
}

func (m *lostMark) fail(done func(bool), lost bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lost = lost
	done(false)
	m.lost = false
}

// neutral reports whether a call's outcome says nothing about the
// instance: the caller hung up, or the deadline the caller chose ran out.
func neutral(ctx context.Context, err error) bool {
	return callerGone(ctx) || errors.Is(err, context.DeadlineExceeded) && lb.CallerBound(ctx)
}

// callerGone reports whether the caller cancelled ctx (not a timeout).
func callerGone(ctx context.Context) bool {
	return errors.Is(ctx.Err(), context.Canceled)
}

// Guard is the circuit breaker and rate limiter in front of one upstream
// instance, as the pool of discovery/lb sees them. The Guard of this member
// itself has neither: an in-process call cannot fail in transport.
type Guard struct {
	cb    *gobreaker.TwoStepCircuitBreaker // nil for this member itself
	limit *rate.Limiter                    // nil without a rate limit
}

// Close implements io.Closer; a Guard holds nothing to release.
func (g *Guard) Close() error { return nil }

// Available is false while the breaker is open or the rate limit is spent,
// so that balancers go elsewhere instead of collecting ErrLimited.
func (g *Guard) Available() bool {
	if g.cb == nil {
		return true
	}
	return g.cb.State() != gobreaker.StateOpen && (g.limit == nil || g.limit.Tokens() >= 1)
}

// State names the breaker state: "closed", "half-open" or "open", or
// "local" for this member itself.
func (g *Guard) State() string {
	if g.cb == nil {
		return "local"
	}
	return g.cb.State().String()
}

// rejections records, as an event on the current span (the balancer's),
// every call to instance that its guard refused before sending anything:
// an open breaker, a half-open one already busy with its trial, or a spent
// rate limit.
func rejections(instance string, next endpoint.Endpoint) endpoint.Endpoint {
	return func(ctx context.Context, request interface{}) (interface{}, error) {
		response, err := next(ctx, request)
		if err != nil {
			var reason string
			switch {
			case errors.Is(err, gobreaker.ErrOpenState):
				reason = "breaker_open"
			case errors.Is(err, gobreaker.ErrTooManyRequests):
				reason = "breaker_half_open"
			case errors.Is(err, ratelimit.ErrLimited):
				reason = "rate_limited"
			}
			if reason != "" {
				trace.SpanFromContext(ctx).AddEvent("upstream rejected", trace.WithAttributes(
					attribute.String("upstream", instance), attribute.String("reason", reason)))
			}
		}
		return response, err
	}
}

// maxLoggedError bounds the text of an upstream's last error in the
// breaker's log line: a peer's bytes may be in it.
const maxLoggedError = 256
