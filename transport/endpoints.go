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
		v, err := svc.Uppercase(ctx, req.S)
		if err != nil && !errors.Is(err, service.ErrEmpty) {
			// Anything but the client's own mistake is a failure of this
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
