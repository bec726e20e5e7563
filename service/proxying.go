package service

import (
	"context"
	"errors"

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
func ProxyingMiddleware(forward Forwarder, fallbacks metrics.Counter, onDenied OnDenied) Middleware {
	return func(next StringService) StringService {
		return proxyingMiddleware{forward: forward, fallbacks: fallbacks, onDenied: onDenied, next: next}
	}
}

type proxyingMiddleware struct {
	forward   Forwarder
	fallbacks metrics.Counter
	onDenied  OnDenied
	next      StringService
}

func (mw proxyingMiddleware) Uppercase(ctx context.Context, s string) (string, error) {
	if LocalOnly(ctx) || s == "" {
		// An empty string fails the same way everywhere; asking another
		// instance would only add a hop.
		return mw.next.Uppercase(ctx, s)
	}
	v, err := mw.forward(ctx, s)
	switch {
	case err == nil:
		return v, nil
	case errors.Is(err, ErrDenied):
		if mw.onDenied == Refuse {
			return "", err
		}
		mw.fallbacks.With("reason", "denied").Add(1)
		return mw.next.Uppercase(ctx, s)
	case errors.Is(err, ErrEmpty), errors.Is(err, ErrInvalidRequest):
		// The request's own fault, as the instance that served it judged:
		// the client gets that answer.
		return "", err
	case ctx.Err() != nil:
		// The caller is gone; doing the work now helps nobody.
		return "", ctx.Err()
	case errors.Is(err, ErrNoUpstreams):
		mw.fallbacks.With("reason", "no_upstreams").Add(1)
	default:
		mw.fallbacks.With("reason", "upstreams_failed").Add(1)
	}
	return mw.next.Uppercase(ctx, s)
}

func (mw proxyingMiddleware) Count(ctx context.Context, s string) int {
	return mw.next.Count(ctx, s)
}
