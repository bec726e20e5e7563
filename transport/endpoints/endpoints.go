package endpoints

import (
	"context"
	"errors"
	"fmt"

	"github.com/go-kit/kit/endpoint"

	"github.com/kitmesh/stringsvc/service"
)

// Set collects the endpoints of one StringService: an instance's own, a
// remote instance's (package transport) or the mesh's (package client).
type Set struct {
	UppercaseEndpoint endpoint.Endpoint
	CountEndpoint     endpoint.Endpoint
}

// New returns the endpoints of svc.
func New(svc service.StringService) Set {
	return Set{
		UppercaseEndpoint: MakeUppercaseEndpoint(svc),
		CountEndpoint:     MakeCountEndpoint(svc),
	}
}

// Uppercase calls the Uppercase endpoint. A business error (ErrEmpty) is
// returned as the error, like a transport error.
func (s Set) Uppercase(ctx context.Context, str string) (string, error) {
	resp, err := s.UppercaseEndpoint(ctx, UppercaseRequest{S: str})
	if err != nil {
		return "", err
	}
	r := resp.(UppercaseResponse)
	return r.V, r.Err
}

// Count calls the Count endpoint. Unlike StringService.Count it returns
// the error of a call that failed.
func (s Set) Count(ctx context.Context, str string) (int, error) {
	resp, err := s.CountEndpoint(ctx, CountRequest{S: str})
	if err != nil {
		return 0, err
	}
	return resp.(CountResponse).V, nil
}

// Service returns the Set as a StringService. Its Count answers 0 when the
// call failed, because the interface has no room for the error; call
// Set.Count to see it.
func (s Set) Service() service.StringService { return setService{s} }

type setService struct{ set Set }

func (s setService) Uppercase(ctx context.Context, str string) (string, error) {
	return s.set.Uppercase(ctx, str)
}

func (s setService) Count(ctx context.Context, str string) int {
	n, _ := s.set.Count(ctx, str)
	return n
}

// Endpoint returns one endpoint that serves both requests, chosen by the
// request's type: what a balancer's pool holds per instance, so that one
// breaker and one latency estimate cover the instance.
func (s Set) Endpoint() endpoint.Endpoint {
	return func(ctx context.Context, request interface{}) (interface{}, error) {
		switch request.(type) {
		case UppercaseRequest:
			return s.UppercaseEndpoint(ctx, request)
		case CountRequest:
			return s.CountEndpoint(ctx, request)
		}
		return nil, fmt.Errorf("endpoints: unexpected request type %T", request)
	}
}

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
