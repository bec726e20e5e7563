package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-kit/kit/metrics"
	"github.com/kitmesh/stringsvc/service"
	"github.com/kitmesh/stringsvc/transport/http1"
	"github.com/kitmesh/stringsvc/transport/limit"
)

// shedKeepAliveBytes is the largest request body a shed request may have
// and still keep its connection.
const shedKeepAliveBytes = 64 << 10

// limitConcurrency serves at most the limiter's limit of requests at once.
// The rest wait in its queue, at most maxWait and never past their
// deadline, forwards from peers first (see first), and get 503 with
// Retry-After when the queue is full or the wait ends without a slot. All
// that happens before the body is read: under overload a member must not
// buffer request bodies it cannot serve. Each request it admits tells the
// limiter its latency (see outcome).
func limitConcurrency(next http.Handler, l *limit.Limiter, maxWait time.Duration, shed metrics.Counter) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := l.Wait(r.Context(), maxWait, first(r))
		if !ok {
			if d, has := r.Context().Deadline(); has && !time.Now().Before(d) {
				// Its own deadline ended the wait: the caller has given
				// up, and this member is no more overloaded than the
				// caller is impatient. A 503 would read as a load signal
				// and count against this member in the caller's breaker.
				writeError(w, http.StatusGatewayTimeout, "the request's deadline passed while it waited for a slot; not served")
				return
			}
			if shed != nil {
				shed.Add(1)
			}
			refuse(w, r, l)
			return
		}
		served := false
		defer func() {
			if !served {
				token.Release(limit.Ignore) // a panic: the slot must not leak
			}
		}()
		next.ServeHTTP(w, r)
		served = true
		token.Release(outcome(w, r))
	})
}

// first reports whether r goes to the front of the queue: a peer's
// forward, which this member serves itself, and for which another
// member's request already holds a slot there. Serving those first
// finishes work already begun instead of starting more. A client on a
// plain listener can claim the header too; it loses the mesh (a forwarded
// request is never forwarded again), and the queue grants the front at
// most three slots in four while others wait, so a flood of such claims
// cannot starve the rest.
func first(r *http.Request) bool { return r.Header.Get(HopHeader) != "" }

// outcome says what a served request tells the limiter: its latency, or
// nothing. It never reports a drop: overload answers (503, 504) say
// nothing sure about this member, as a client picks its own deadline
// (X-Stringsvc-Timeout-Ms) and a 503 may be the peers' state; a client
// could otherwise push the limit down for everyone. So the limit follows
// latency alone, as Netflix's Gradient2 does (it ignores drops).
func outcome(w http.ResponseWriter, r *http.Request) limit.Outcome {
	if r.Context().Err() != nil {
		return limit.Ignore
	}
	if t, ok := w.(*responseTracker); ok {
		switch {
		case t.writeFailed, t.code == http.StatusServiceUnavailable, t.code == http.StatusGatewayTimeout:
			return limit.Ignore
		}
	}
	return limit.Success
}

// refuse writes the fast 503 of a shed request.
func refuse(w http.ResponseWriter, r *http.Request, l *limit.Limiter) {
	// The connection stays open: on the mesh port a new one is a TLS
	// handshake, the last thing an overloaded member needs. net/http then
	// reads the unserved body to reuse it, so a body of unknown or large
	// size closes it instead: reading that could hold the 503 until the
	// body ends.
	if r.ContentLength < 0 || r.ContentLength > shedKeepAliveBytes {
		w.Header().Set("Connection", "close")
	} else {
		// A body trickled in holds the 503 a second at most.
		http.NewResponseController(w).SetReadDeadline(time.Now().Add(time.Second))
	}
	w.Header().Set("Retry-After", "1")
	writeError(w, http.StatusServiceUnavailable, "overloaded: "+strconv.Itoa(l.InFlight())+" requests in flight (limit "+strconv.Itoa(l.Limit())+"), "+strconv.Itoa(l.Waiting())+" waiting; retry later")
}

func markForwarded(ctx context.Context, r *http.Request) context.Context {
	if r.Header.Get(HopHeader) != "" {
		return service.WithLocalOnly(ctx)
	}
	return ctx
}

// allowMethods answers 405 with an Allow header for any other method. With
// no methods given, every method is allowed.
func allowMethods(next http.Handler, methods ...string) http.Handler {
	if len(methods) == 0 {
		return next
	}
	allow := strings.Join(methods, ", ")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, m := range methods {
			if r.Method == m {
				next.ServeHTTP(w, r)
				return
			}
		}
		w.Header().Set("Allow", allow)
		writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed; use %s", r.Method, allow))
	})
}

func limitBody(next http.Handler, n int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, n)
		next.ServeHTTP(w, r)
	})
}

// trackResponse wraps the ResponseWriter in a responseTracker and, if c
// is not nil, counts the answer by status code. An answer the client did
// not receive (its connection went away during the write) counts as 499.
func trackResponse(next http.Handler, c metrics.Counter, path string) http.Handler {
	// The usual codes' series are resolved once here: a With per request
	// built label maps, a dozen allocations per answer.
	var usual map[int]metrics.Counter
	if c != nil {
		c = c.With("path", path)
		usual = map[int]metrics.Counter{}
		for _, code := range []int{200, 400, 404, 405, 413, 499, 500, 503} {
			usual[code] = c.With("code", strconv.Itoa(code))
		}
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t := &responseTracker{ResponseWriter: w, code: http.StatusOK}
		next.ServeHTTP(t, r)
		if c == nil {
			return
		}
		code := t.code
		if t.writeFailed {
			code = 499
		}
		if counter, ok := usual[code]; ok {
			counter.Add(1)
			return
		}
		c.With("code", strconv.Itoa(code)).Add(1)
	})
}

// responseTracker remembers the status sent and whether a write failed.
type responseTracker struct {
	http.ResponseWriter
	code        int
	wroteHeader bool
	writeFailed bool
}

func (t *responseTracker) WriteHeader(code int) {
	if t.wroteHeader {
		return // a second status is never what the client gets
	}
	t.wroteHeader = true
	t.code = code
	t.ResponseWriter.WriteHeader(code)
}

func (t *responseTracker) Write(p []byte) (int, error) {
	t.wroteHeader = true
	n, err := t.ResponseWriter.Write(p)
	if err != nil {
		t.writeFailed = true
	}
	return n, err
}

// WriteString passes strings on without a copy, as the server's own
// writer takes them.
func (t *responseTracker) WriteString(s string) (int, error) {
	t.wroteHeader = true
	n, err := io.WriteString(t.ResponseWriter, s)
	if err != nil {
		t.writeFailed = true
	}
	return n, err
}

// Unwrap lets http.ResponseController reach the server's writer.
func (t *responseTracker) Unwrap() http.ResponseWriter { return t.ResponseWriter }

// PeerCheck decides whether the mesh peer that sent r may call this member.
// It returns nil to allow, an error wrapping service.ErrDenied to deny, and
// any other error when it cannot tell.
type PeerCheck func(r *http.Request) error

// RequirePeer serves only the requests that check allows. A denied request
// gets 403 with a JSON body that says why: the caller's client treats 403
// as service.ErrDenied, never as this member's failure. A request check
// cannot decide gets 503 with Retry-After, which callers count as a load
// signal and retry elsewhere.
func RequirePeer(next http.Handler, check PeerCheck) http.Handler {
	return http1.EchoSeq(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		err := check(r)
		switch {
		case err == nil:
			next.ServeHTTP(w, r)
		case errors.Is(err, service.ErrDenied):
			writeError(w, http.StatusForbidden, err.Error())
		default:
			w.Header().Set("Retry-After", "1")
			writeError(w, http.StatusServiceUnavailable, err.Error())
		}
	}))
}
