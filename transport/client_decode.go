package transport

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"

	"github.com/kitmesh/stringsvc/internal/clip"
	"github.com/kitmesh/stringsvc/service"
	"github.com/kitmesh/stringsvc/transport/endpoints"
)

// wireResponse covers every answer shape: {"v":...}, the stringsvc tutorial's
// {"v":"","err":"..."} and our {"error":"..."}.
type wireResponse[T any] struct {
	V     T      `json:"v"`
	Err   string `json:"err"`
	Error string `json:"error"`
}

func decodeUppercaseResponse(_ context.Context, r *http.Response) (interface{}, error) {
	buf := getBuffer()
	defer putBuffer(buf)
	b := (*buf)[:0]
	if n := r.ContentLength; n > 0 && n < maxResponseBytes {
		// Room for the answer and the read that finds its end: a buffer
		// grown by doubling would hold up to twice a large answer.
		b = slices.Grow(b, int(n)+1)
	}
	body, err := readAll(r.Body, b, maxResponseBytes)
	*buf = body
	if err != nil {
		// The connection failed under the answer, whatever its status
		// said: the instance's failure, never the request's.
		return nil, upstreamFailure(r, "unreadable body", err)
	}
	var w wireResponse[string]
	if v, ok := plainObject(body, `v`); ok {
		w.V = v
	} else {
		w, err = unmarshalResponse[string](body)
	}
	if err != nil {
		err = upstreamFailure(r, "unreadable body", err)
	}
	// A stringsvc3 node answers 200 with "err" set; ours answers 400.
	if err == nil && (r.StatusCode == http.StatusOK || r.StatusCode == http.StatusBadRequest) && w.Err == service.ErrEmpty.Error() {
		return endpoints.UppercaseResponse{Err: service.ErrEmpty}, nil
	}
	if speaksTLS(r, body) {
		return nil, upstreamError(r, tlsPortText)
	}
	if isRequestsFault(r.StatusCode) {
		// body goes back to the pool: the error keeps a copy.
		return endpoints.UppercaseResponse{Err: requestError(r, bytes.Clone(body), w.Err+w.Error, err == nil)}, nil
	}
	if err != nil {
		return nil, err
	}
	if r.StatusCode != http.StatusOK || w.Err != "" {
		return nil, upstreamError(r, w.Err+w.Error)
	}
	return endpoints.UppercaseResponse{V: w.V}, nil
}

// readAll appends r to b until EOF or until b holds limit bytes, as
// io.ReadAll(io.LimitReader(r, limit)) does, without their allocations.
func readAll(r io.Reader, b []byte, limit int) ([]byte, error) {
	for len(b) < limit {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)] // let append grow it
		}
		n, err := r.Read(b[len(b):min(cap(b), limit)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
	}
	return b, nil
}

func decodeCountResponse(_ context.Context, r *http.Response) (interface{}, error) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxResponseBytes))
	if err != nil {
		// The connection failed under the answer, whatever its status.
		return nil, upstreamFailure(r, "unreadable body", err)
	}
	var w wireResponse[int]
	if err = json.Unmarshal(body, &w); err != nil {
		err = upstreamFailure(r, "unreadable body", err)
	}
	if speaksTLS(r, body) {
		return nil, upstreamError(r, tlsPortText)
	}
	if isRequestsFault(r.StatusCode) {
		return nil, requestError(r, body, w.Error, err == nil)
	}
	if err != nil {
		return nil, err
	}
	if r.StatusCode != http.StatusOK {
		return nil, upstreamError(r, w.Error)
	}
	return endpoints.CountResponse{V: w.V}, nil
}

// unmarshalResponse decodes any answer shape with encoding/json. It is a
// function of its own so that only this slow path pays for the value
// escaping to the heap.
func unmarshalResponse[T any](body []byte) (wireResponse[T], error) {
	w := new(wireResponse[T])
	err := json.Unmarshal(body, w)
	return *w, err
}

// tlsPortText explains speaksTLS's answer.
const tlsPortText = "the instance speaks TLS there: a Connect member's mesh port; call it as a Connect client"

// speaksTLS reports whether r is net/http's answer to plain HTTP on a TLS
// port. It is the caller's misconfiguration, not the request's fault: the
// instance is unusable for this caller, and another may serve it.
func speaksTLS(r *http.Response, body []byte) bool {
	return r.StatusCode == http.StatusBadRequest && bytes.HasPrefix(body, []byte("Client sent an HTTP request to an HTTPS server"))
}

// isRequestsFault reports whether an upstream's status blames the request:
// every 4xx but 429, which is a load signal like 503.
func isRequestsFault(code int) bool {
	return code >= 400 && code < 500 && code != http.StatusTooManyRequests
}

// maxResponseBytes bounds what a client reads from an upstream.
const maxResponseBytes = 4 << 20

// maxPassedBody bounds an upstream's 4xx answer that is passed on to the
// client as it came; a longer one is passed on as its bounded message.
const maxPassedBody = 4 << 10

// maxErrorText bounds an upstream's error message: it ends up in log lines.
const maxErrorText = 256

// requestError is an upstream's 4xx. Its body is passed on to the client
// as it came when it is our JSON shape and small.
func requestError(r *http.Response, body []byte, msg string, isJSON bool) *RequestError {
	if msg == "" {
		msg = fmt.Sprintf("upstream answered %d %s", r.StatusCode, http.StatusText(r.StatusCode))
	}
	e := &RequestError{Status: r.StatusCode, Msg: clip.String(msg, maxErrorText)}
	if isJSON && len(body) <= maxPassedBody {
		e.Body = body
	}
	return e
}

func upstreamError(r *http.Response, msg string) error {
	e := &UpstreamError{Instance: r.Request.URL.Host, Status: r.StatusCode, Msg: clip.String(msg, maxErrorText)}
	if r.StatusCode == http.StatusGatewayTimeout {
		// The instance ran out of the time this call gave it (the
		// TimeoutHeader the call sent): an attempt timeout, as if it had
		// timed out here, and CallerBound decides as for one.
		e.Err = context.DeadlineExceeded
	}
	return e
}

// upstreamFailure is an answer that failed under its reader: err keeps
// its type, so that a lost connection still reads as one.
func upstreamFailure(r *http.Response, what string, err error) error {
	return &UpstreamError{Instance: r.Request.URL.Host, Status: r.StatusCode, Msg: clip.String(what+": "+err.Error(), maxErrorText), Err: err}
}
