package transport

import (
	"context"
	"errors"

	"github.com/go-kit/kit/endpoint"

	"github.com/kitmesh/stringsvc/service"
)

// UppercaseRequest is the request of the Uppercase endpoint.
type UppercaseRequest struct {
	S string

	// raw is the client's JSON body, when the request came over HTTP. A
	// forwarded request sends it unchanged.
	raw []byte
}

// UppercaseResponse is the response of the Uppercase endpoint. A business
// error (service.ErrEmpty) travels in Err rather than as the endpoint's
// error, so that circuit breakers and retries never react to a client's own
// mistake.
type UppercaseResponse struct {
	V   string
	Err error
}

// Failed implements endpoint.Failer.
func (r UppercaseResponse) Failed() error { return r.Err }

// CountRequest is the request of the Count endpoint.
type CountRequest struct {
	S string
}

// CountResponse is the response of the Count endpoint.
type CountResponse struct {
	V int
}

// MakeUppercaseEndpoint returns an endpoint that calls svc.Uppercase.
func MakeUppercaseEndpoint(svc service.StringService) endpoint.Endpoint {
	return func(ctx context.Context, request interface{}) (interface{}, error) {
		req := request.(UppercaseRequest)
		if req.raw != nil && !service.LocalOnly(ctx) {
			// Only a request that may be forwarded needs its bytes.
			ctx = withRawRequest(ctx, req.S, req.raw)
		}
		v, err := svc.Uppercase(ctx, req.S)
		if err != nil && !errors.Is(err, service.ErrEmpty) && !errors.Is(err, service.ErrInvalidRequest) {
			// Anything but the request's own fault is a failure of this
			// instance, for breakers and retries to see.
			return nil, err
		}
		return UppercaseResponse{V: v, Err: err}, nil
	}
}

// MakeCountEndpoint returns an endpoint that calls svc.Count.
func MakeCountEndpoint(svc service.StringService) endpoint.Endpoint {
	return func(ctx context.Context, request interface{}) (interface{}, error) {
		req := request.(CountRequest)
		return CountResponse{V: svc.Count(ctx, req.S)}, nil
	}
}

type rawRequestKey struct{}

// rawRequest is a context that carries a client's body and the string
// decoded from it. It is a context type of its own, not a
// context.WithValue, because that would box the pair on every request: one
// allocation here instead of two. Contexts derived from it still find the
// cancelCtx below it, so they cost no goroutine.
type rawRequest struct {
	context.Context
	s   string
	raw []byte
}

// Value implements context.Context.
func (c *rawRequest) Value(key any) any {
	if key == (rawRequestKey{}) {
		return c
	}
	return c.Context.Value(key)
}

func withRawRequest(ctx context.Context, s string, raw []byte) context.Context {
	return &rawRequest{Context: ctx, s: s, raw: raw}
}

// rawRequestFor returns the client's body if ctx carries the one that s
// was decoded from, and nil otherwise.
func rawRequestFor(ctx context.Context, s string) []byte {
	r, ok := ctx.Value(rawRequestKey{}).(*rawRequest)
	if !ok || r.s != s {
		return nil
	}
	return r.raw
}
