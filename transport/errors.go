package transport

import (
	"context"
	"errors"
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
// own fault, never retried and never counted against an instance.
func (e *RequestError) Unwrap() error { return service.ErrInvalidRequest }

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
