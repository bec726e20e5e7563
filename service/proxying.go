package service

import (
	"context"
	"errors"
	"time"

	"github.com/go-kit/kit/metrics"
)

// Forwarder sends one Uppercase call to some instance of the mesh, possibly
// this one. It returns ErrEmpty or an error wrapping ErrInvalidRequest for
// the client's own mistake, an error
// wrapping ErrNoUpstreams when no instance is available, and any other error
// when every attempt failed.
type Forwarder func(ctx context.Context, s string) (string, error)

// OnDenied says what the proxying middleware does when the mesh denies
// its call (ErrDenied).
type OnDenied int

const (
	// ServeLocally is for a member of the service it forwards to: an
	// intention that keeps it from its peers does not keep it from doing
	// the work itself (fallback reason "denied").
	ServeLocally OnDenied = iota
	// Refuse is for an edge, which forwards to another service: serving
	// locally would bypass the intention, so the client gets the denial.
	Refuse
)

// ProxyingMiddleware forwards Uppercase through forward, so that requests are
// spread over the mesh. When nobody can take the call, the instance serves it
// itself and counts that in fallbacks (label "reason"): every member can do
// the work, so a failed mesh must never fail a client. A denial is served
// locally or refused as onDenied says. Requests that already crossed one hop
// (see WithLocalOnly) are served locally. Count is always local, as in Go
// kit's stringsvc3.
func ProxyingMiddleware(forward Forwarder, o ProxyOptions) Middleware {
	if o.OnFallback == nil {
		o.OnFallback = func(context.Context, string) {}
	}
	return func(next StringService) StringService {
		return proxyingMiddleware{forward: forward, o: o, next: next}
	}
}

// ProxyOptions are the proxying middleware's companions.
type ProxyOptions struct {
	// Fallbacks counts requests served locally, by "reason".
	Fallbacks metrics.Counter
	// OnDenied says what to do when the mesh denies the call.
	OnDenied OnDenied
	// OnFallback, if set, is told of every fallback with the request's
	// context (a trace records it as an event).
	OnFallback func(ctx context.Context, reason string)
	// MayServeLocally, if set, is asked before every fallback; its error
	// is the client's answer instead. An edge with Connect asks whether
	// an intention lets it call its upstream service: serving a denied
	// edge's client locally would bypass the intention.
	MayServeLocally func(ctx context.Context) error
}

type proxyingMiddleware struct {
	forward Forwarder
	o       ProxyOptions
	next    StringService
}

// fallback serves s locally and records why.
func (mw proxyingMiddleware) fallback(ctx context.Context, s, reason string) (string, error) {
	if mw.o.MayServeLocally != nil {
		if err := mw.o.MayServeLocally(ctx); err != nil {
			return "", err
		}
	}
	mw.o.Fallbacks.With("reason", reason).Add(1)
	mw.o.OnFallback(ctx, reason)
	return mw.next.Uppercase(ctx, s)
}

func (mw proxyingMiddleware) Uppercase(ctx context.Context, s string) (string, error) {
	if LocalOnly(ctx) || s == "" {
		// An empty string fails the same way everywhere; asking another
		// instance would only add a hop. An edge asks first, whatever a
		// caller's hop header claims: nobody forwards to an edge.
		if mw.o.MayServeLocally != nil && s != "" {
			if err := mw.o.MayServeLocally(ctx); err != nil {
				return "", err
			}
		}
		return mw.next.Uppercase(ctx, s)
	}
	v, err := mw.forward(ctx, s)
	switch {
	case err == nil:
		return v, nil
	case errors.Is(err, ErrEmpty), errors.Is(err, ErrInvalidRequest):
		// The request's own fault, as the instance that served it judged:
		// the client gets that answer.
		return "", err
	case errors.Is(err, ErrDenied) && mw.o.OnDenied == Refuse:
		// Final, and it starts no work: the caller is told so even
		// when its time is up.
		return "", err
	case ctx.Err() != nil:
		// The caller is gone; doing the work now helps nobody.
		return "", ctx.Err()
	case pastDeadline(ctx):
		// So is one whose deadline has passed, before its timer says so.
		return "", context.DeadlineExceeded
	case errors.Is(err, ErrDenied):
		return mw.fallback(ctx, s, "denied")
	case errors.Is(err, ErrNoUpstreams):
		return mw.fallback(ctx, s, "no_upstreams")
	default:
		return mw.fallback(ctx, s, "upstreams_failed")
	}
}

// pastDeadline reports whether ctx's deadline has passed, which its timer
// may notice late on a loaded machine.
func pastDeadline(ctx context.Context) bool {
	d, ok := ctx.Deadline()
	return ok && !time.Now().Before(d)
}

func (mw proxyingMiddleware) Count(ctx context.Context, s string) int {
	return mw.next.Count(ctx, s)
}
