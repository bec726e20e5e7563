package endpoints_test

import (
	"context"
	"errors"
	"testing"

	"github.com/kitmesh/stringsvc/service"
	"github.com/kitmesh/stringsvc/transport/endpoints"
)

func TestSetCallsTheService(t *testing.T) {
	ctx := context.Background()
	set := endpoints.New(service.NewBasicService())
	if v, err := set.Uppercase(ctx, "abc"); v != "ABC" || err != nil {
		t.Errorf("Uppercase: want ABC, have %q, %v", v, err)
	}
	if _, err := set.Uppercase(ctx, ""); !errors.Is(err, service.ErrEmpty) {
		t.Errorf("Uppercase(\"\"): want ErrEmpty, have %v", err)
	}
	if n, err := set.Count(ctx, "abcd"); n != 4 || err != nil {
		t.Errorf("Count: want 4, have %d, %v", n, err)
	}
	one := set.Endpoint()
	if resp, err := one(ctx, endpoints.CountRequest{S: "ab"}); err != nil || resp.(endpoints.CountResponse).V != 2 {
		t.Errorf("Endpoint with a CountRequest: want 2, have %v, %v", resp, err)
	}
	if resp, err := one(ctx, endpoints.UppercaseRequest{S: "ab"}); err != nil || resp.(endpoints.UppercaseResponse).V != "AB" {
		t.Errorf("Endpoint with an UppercaseRequest: want AB, have %v, %v", resp, err)
	}
	if _, err := one(ctx, "neither"); err == nil {
		t.Error("Endpoint with a stranger: want an error, have none")
	}
}

// The Service of a Set whose Count fails answers 0; the Set says why.
func TestServiceCountOfAFailedCall(t *testing.T) {
	broken := errors.New("broken")
	set := endpoints.Set{CountEndpoint: func(context.Context, interface{}) (interface{}, error) { return nil, broken }}
	if n, err := set.Count(context.Background(), "abc"); n != 0 || !errors.Is(err, broken) {
		t.Errorf("Set.Count: want 0 and the error, have %d, %v", n, err)
	}
	if n := set.Service().Count(context.Background(), "abc"); n != 0 {
		t.Errorf("Service().Count: want 0, have %d", n)
	}
}
