package transport

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/go-kit/kit/metrics"
)

// TimeoutHeader carries a request's remaining time to the member that
// serves it: a whole number of milliseconds, 1 to 8 ASCII digits, as
// gRPC's grpc-timeout bounds its value. A member sends it on every forward
// whose context has a deadline, rounded down, so that the callee never
// thinks it has more time than the caller will wait; "0" means the time ran
// out on the way, and the callee drops the request without serving it.
// Clients may send it too.
const TimeoutHeader = "X-Stringsvc-Timeout-Ms"

// DefaultMaxTimeout is the longest time a member gives a request that
// carries TimeoutHeader, whatever the header asks for: the member's
// servers write no answer later than that anyway.
const DefaultMaxTimeout = 30 * time.Second

// maxTimeoutDigits bounds the header's value: 8 digits is over a day.
const maxTimeoutDigits = 8

var errTimeoutSyntax = errors.New("header " + TimeoutHeader + " must be 1 to 8 digits (milliseconds)")

// parseTimeout reads TimeoutHeader's value.
func parseTimeout(v string) (time.Duration, error) {
	if len(v) == 0 || len(v) > maxTimeoutDigits {
		return 0, errTimeoutSyntax
	}
	var ms int64
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c < '0' || c > '9' {
			return 0, errTimeoutSyntax
		}
		ms = ms*10 + int64(c-'0')
	}
	return time.Duration(ms) * time.Millisecond, nil
}

// formatTimeout writes the time left until deadline as TimeoutHeader's
// value, rounded down, at most 8 digits.
func formatTimeout(left time.Duration) string {
	ms := int64(left / time.Millisecond)
	switch {
	case ms < 0:
		ms = 0
	case ms > 99_999_999:
		ms = 99_999_999
	}
	return strconv.FormatInt(ms, 10)
}

// applyDeadline gives a request that carries TimeoutHeader a context with
// that deadline, never later than max. A request whose time has already
// run out gets 504 before anything is done for it, and is counted in
// expired: its caller no longer waits for the answer. It runs before the
// concurrency limit, so expired work takes no slot either. A malformed
// value gets 400: guessing a deadline would be worse than refusing.
func applyDeadline(next http.Handler, max time.Duration, expired metrics.Counter) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v, ok := r.Header[TimeoutHeader]
		if !ok {
			next.ServeHTTP(w, r)
			return
		}
		if len(v) != 1 {
			writeError(w, http.StatusBadRequest, "header "+TimeoutHeader+" must be sent once")
			return
		}
		d, err := parseTimeout(v[0])
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		if d <= 0 {
			if expired != nil {
				expired.Add(1)
			}
			writeError(w, http.StatusGatewayTimeout, "the caller's deadline ("+TimeoutHeader+": 0) passed before the request was served; not served")
			return
		}
		if d > max {
			d = max
		}
		ctx, cancel := context.WithTimeout(r.Context(), d)
		defer cancel()
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}
