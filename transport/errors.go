package transport

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/kitmesh/stringsvc/service"
)

// RequestError is a request that cannot be served as sent: malformed JSON,
// a wrong type, a body that is too large, as this instance or an upstream
// judged it. Its message is written to the client together with its HTTP
// status; Body, when set, is an upstream's own answer, passed on as it is.
type RequestError struct {
	Status int
	Msg    string
	Body   []byte
}

// Error returns the message shown to the client.
func (e *RequestError) Error() string { return e.Msg }

// Unwrap makes every RequestError a service.ErrInvalidRequest: the request's
// own fault, never retried and never counted against an instance. A 403 is
// the one exception: members answer it only when an intention denies the
// caller (see RequirePeer), so it is service.ErrDenied, equally never
// retried and never counted.
func (e *RequestError) Unwrap() error {
	if e.Status == http.StatusForbidden {
		return service.ErrDenied
	}
	return service.ErrInvalidRequest
}

func badRequest(msg string) error {
	return &RequestError{Status: http.StatusBadRequest, Msg: msg}
}

// err2code maps an error to its HTTP status. It is the one place that does.
func err2code(err error) int {
	var re *RequestError
	var mbe *http.MaxBytesError
	switch {
	case errors.Is(err, service.ErrEmpty):
		return http.StatusBadRequest
	case errors.As(err, &re):
		return re.Status
	case errors.As(err, &mbe):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, service.ErrInvalidRequest):
		return http.StatusBadRequest
	case errors.Is(err, service.ErrDenied):
		// The client may call us, but an intention forbids us to call the
		// service that does the work: a refusal by policy, not an outage
		// (5xx would send clients and load balancers elsewhere, and every
		// edge enforces the same intention), and retrying will not help
		// until an operator allows the call.
		return http.StatusForbidden
	case errors.Is(err, service.ErrUnavailable):
		return http.StatusServiceUnavailable
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	case errors.Is(err, context.Canceled):
		// The client went away; nobody reads this status, but logs and
		// metrics should not count it as our failure.
		return 499
	default:
		return http.StatusInternalServerError
	}
}

// UpstreamError is a failure of another instance: a 5xx, a 429, an
// unexpected status or an unreadable answer. Unlike a 4xx it says nothing
// about the request, so it may be retried elsewhere and counts against the
// instance's health. 429 and 503 are load signals: the instance is busy,
// and another may not be. Msg is bounded (see maxErrorText), because it
// ends up in log lines. Err, when set, is the failure under it (a
// connection lost in the middle of the body, say), kept for errors.Is.
type UpstreamError struct {
	Instance string
	Status   int
	Msg      string
	Err      error
}

// Error says which instance answered what.
func (e *UpstreamError) Error() string {
	return fmt.Sprintf("upstream %s answered %d: %s", e.Instance, e.Status, e.Msg)
}

// Unwrap returns the failure under the answer, if any.
func (e *UpstreamError) Unwrap() error { return e.Err }
