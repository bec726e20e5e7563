package member

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/kitmesh/stringsvc/discovery"
	"github.com/kitmesh/stringsvc/service"
)

// An edge's answer after its intention check: a caller whose own context
// ended the check gets its timeout (504), never the edge's unavailability
// (503), which would send callers elsewhere.
func TestEdgeVerdict(t *testing.T) {
	expired, cancel := context.WithCancel(context.Background())
	cancel()
	late, cancelLate := context.WithDeadline(context.Background(), time.Now().Add(-time.Millisecond)) // done at once
	defer cancelLate()
	cannotTell := fmt.Errorf("%w: agent down", discovery.ErrCannotAuthorize)
	tests := []struct {
		name string
		ctx  context.Context
		err  error
		want []error // errors.Is each
		not  []error // errors.Is none
	}{
		{"allowed", context.Background(), nil, nil, nil},
		{"denied", context.Background(), &discovery.DeniedError{Source: "edge", Target: "stringsvc", Reason: "deny"}, []error{service.ErrDenied}, []error{service.ErrUnavailable}},
		{"cannot tell", context.Background(), cannotTell, []error{service.ErrUnavailable, discovery.ErrCannotAuthorize}, []error{context.Canceled}},
		{"the caller's context ended the check", expired, fmt.Errorf("%w: %w", discovery.ErrCannotAuthorize, context.Canceled), []error{context.Canceled, discovery.ErrCannotAuthorize}, []error{service.ErrUnavailable}},
		{"the caller's deadline ended the check", late, fmt.Errorf("%w: %w", discovery.ErrCannotAuthorize, context.DeadlineExceeded), []error{context.DeadlineExceeded}, []error{service.ErrUnavailable}},
		{"the caller's context ended as the check failed", expired, cannotTell, []error{context.Canceled, discovery.ErrCannotAuthorize}, []error{service.ErrUnavailable}},
	}
	for _, tt := range tests {
		err := edgeVerdict(tt.ctx, tt.err)
		if (err == nil) != (tt.err == nil) {
			t.Errorf("%s: want an error %v, have %v", tt.name, tt.err != nil, err)
		}
		for _, w := range tt.want {
			if !errors.Is(err, w) {
				t.Errorf("%s: want %v in %v", tt.name, w, err)
			}
		}
		for _, n := range tt.not {
			if errors.Is(err, n) {
				t.Errorf("%s: want no %v in %v", tt.name, n, err)
			}
		}
	}
}
