package service

import (
	"context"
	"errors"
	"strings"
)

// StringService provides operations on strings.
type StringService interface {
	// Uppercase returns s in upper case, or ErrEmpty when s is empty.
	Uppercase(ctx context.Context, s string) (string, error)
	// Count returns the length of s in bytes (not runes), as len(s) does.
	Count(ctx context.Context, s string) int
}

// ErrEmpty is returned when an input string is empty. It is the client's own
// mistake, so transports carry it inside the response: it must never be
// retried or counted against an upstream's health.
var ErrEmpty = errors.New("empty string")

// ErrInvalidRequest is what every error that is the request's own fault
// wraps, as another instance judged it: a body too large, a malformed
// value. Like ErrEmpty it is answered as it is: never retried, never served
// locally instead, never counted against an instance.
var ErrInvalidRequest = errors.New("invalid request")

// ErrNoUpstreams is returned by a Forwarder when no instance is available to
// forward to. It exists so the proxying middleware can tell "nobody to ask"
// apart from a business error and serve the request locally instead.
var ErrNoUpstreams = errors.New("no upstream instances")

// ErrDenied is returned when the mesh refuses a call by policy: a Consul
// intention forbids this member's service to call the upstream's. It is
// neither the request's fault nor the upstream's: never retried elsewhere
// (every instance enforces the same intention), never counted against an
// instance's health.
var ErrDenied = errors.New("denied by the mesh")

// ErrUnavailable is a request this instance refuses to serve for now,
// though the client may retry: say, an edge that cannot tell whether the
// mesh's policy lets it answer. It is answered 503.
var ErrUnavailable = errors.New("unavailable")

// NewBasicService returns the plain implementation with no middleware.
func NewBasicService() StringService {
	return basicService{}
}

type basicService struct{}

func (basicService) Uppercase(_ context.Context, s string) (string, error) {
	if s == "" {
		return "", ErrEmpty
	}
	return strings.ToUpper(s), nil
}

func (basicService) Count(_ context.Context, s string) int {
	return len(s)
}

// Middleware decorates a StringService with one concern.
type Middleware func(StringService) StringService
