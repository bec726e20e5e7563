package transport

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/go-kit/kit/endpoint"
	httptransport "github.com/go-kit/kit/transport/http"

	"github.com/kitmesh/stringsvc/internal/clip"
	"github.com/kitmesh/stringsvc/service"
)

// defaultClientTimeout bounds a call of NewHTTPClient's own client.
const defaultClientTimeout = 10 * time.Second

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

// ClientOption configures NewHTTPClient and the client endpoints.
type ClientOption func(*clientOptions)

type clientOptions struct {
	transport http.RoundTripper
	forwarded bool
	tls       bool
	tracing   Tracing
}

// WithRoundTripper sends the requests straight to rt, without an
// http.Client, as members do when they forward: http.Client copies the
// headers and the URL of every request for redirects and cookies, which a
// forward never follows or keeps.
func WithRoundTripper(rt http.RoundTripper) ClientOption {
	return func(o *clientOptions) { o.transport = rt }
}

// AsForwarded marks every request with HopHeader, so that the receiver
// serves it itself. Members use it when they forward to each other.
func AsForwarded() ClientOption {
	return func(o *clientOptions) { o.forwarded = true }
}

// OverTLS sends requests to "host:port" instances over https. The HTTP
// client's transport carries the TLS settings (for the mesh: the member's
// Connect certificate, and the check of the peer's identity).
func OverTLS() ClientOption {
	return func(o *clientOptions) { o.tls = true }
}

// WithTracing carries the trace context of each call to the instance. A
// Tracing with a Provider needs its Client transport on the HTTP client
// too, for the attempt spans; without one, this option alone passes the
// IDs on.
func WithTracing(t Tracing) ClientOption {
	return func(o *clientOptions) { o.tracing = t }
}

// NewHTTPClient returns a StringService that calls the instance at
// "host:port" (or a base URL). It turns an ErrEmpty answer, ours (400) or
// that of Go kit's stringsvc tutorial (200 with "err"), back into
// service.ErrEmpty.
func NewHTTPClient(instance string, options ...ClientOption) (service.StringService, error) {
	eps, err := MakeClientEndpoints(instance, options...)
	if err != nil {
		return nil, err
	}
	return clientService{eps}, nil
}

// MakeClientEndpoints returns the Uppercase and Count endpoints of the
// instance at "host:port" (or a base URL).
func MakeClientEndpoints(instance string, options ...ClientOption) (Endpoints, error) {
	o := clientOptions{}
	for _, opt := range options {
		opt(&o)
	}
	var do func(*http.Request) (*http.Response, error)
	switch {
	case o.transport != nil:
		do = o.transport.RoundTrip
	default:
		// Callers of NewHTTPClient may pass no deadline; http.Client
		// gives each request one in its context.
		do = (&http.Client{Transport: NewDirectTransport(0), Timeout: defaultClientTimeout}).Do
	}
	base, err := ParseInstance(instance)
	if err != nil {
		return Endpoints{}, err
	}
	if o.tls {
		base.Scheme = "https"
	}
	var inject httptransport.RequestFunc
	if o.tracing.idsOnly() {
		inject = o.tracing.inject
	}
	mk := func(path string, dec httptransport.DecodeResponseFunc) endpoint.Endpoint {
		u := *base
		u.Path = strings.TrimSuffix(u.Path, "/") + path
		c := &clientEndpoint{do: do, wrapErrors: o.transport != nil, url: &u, target: u.String(), forwarded: o.forwarded, inject: inject, dec: dec}
		return c.call
	}
	return Endpoints{
		Uppercase: mk("/uppercase", decodeUppercaseResponse),
		Count:     mk("/count", decodeCountResponse),
	}, nil
}

// ParseInstance returns the base URL of an instance given as "host:port" or
// as a URL, or says what is wrong with it.
func ParseInstance(instance string) (*url.URL, error) {
	if !strings.Contains(instance, "://") {
		// "host:port" is split, not parsed as a URL: an IPv6 zone
		// ("[fe80::1%eth0]:8080") is not a valid URL escape.
		host, port, err := net.SplitHostPort(instance)
		if err != nil {
			return nil, fmt.Errorf("instance %q: %w", instance, err)
		}
		if host == "" {
			return nil, fmt.Errorf("instance %q: no host", instance)
		}
		return &url.URL{Scheme: "http", Host: net.JoinHostPort(host, port)}, nil
	}
	u, err := url.Parse(instance)
	if err != nil {
		return nil, fmt.Errorf("instance %q: %w", instance, err)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("instance %q: no host", instance)
	}
	return u, nil
}

type clientService struct{ eps Endpoints }

func (c clientService) Uppercase(ctx context.Context, s string) (string, error) {
	resp, err := c.eps.Uppercase(ctx, UppercaseRequest{S: s})
	if err != nil {
		return "", err
	}
	r := resp.(UppercaseResponse)
	return r.V, r.Err
}

// Count has no error in its signature, as in Go kit's stringsvc tutorial;
// a failed call counts as 0. Use MakeClientEndpoints to see the error.
func (c clientService) Count(ctx context.Context, s string) int {
	resp, err := c.eps.Count(ctx, CountRequest{S: s})
	if err != nil {
		return 0
	}
	return resp.(CountResponse).V
}

// Header values shared by every request: a client request's header values
// are read, never modified, by net/http, and Set replaces a slice rather
// than writing into it.
var (
	jsonContentType = []string{"application/json"}
	hopValue        = []string{"1"}
)

// clientEndpoint calls one path of one instance. It is Go kit's
// httptransport.Client cut down to what a forward needs, because that
// client costs a forward a context.WithCancel, a copy of the request and a
// URL formatted and parsed again on every call (see BENCHMARKS.md, "A
// leaner forward path"). The request is a POST of the body requestBody
// gives, built directly; url is shared by every request and never
// modified, and the headers are written straight into a fresh map. The
// caller's context bounds the call: lb.Retry gives each attempt its own.
type clientEndpoint struct {
	do         func(*http.Request) (*http.Response, error) // http.Client.Do or a RoundTrip
	wrapErrors bool                                        // as http.Client does: a RoundTrip's are bare
	url        *url.URL
	target     string // url, for errors
	forwarded  bool
	inject     httptransport.RequestFunc // trace IDs without a provider; may be nil
	dec        httptransport.DecodeResponseFunc
}

func (c *clientEndpoint) call(ctx context.Context, request interface{}) (interface{}, error) {
	b, err := requestBody(ctx, request)
	if err != nil {
		return nil, err
	}
	header := http.Header{"Content-Type": jsonContentType}
	if c.forwarded {
		header[HopHeader] = hopValue
	}
	// A *bytes.Reader in io.NopCloser is a body net/http knows to be in
	// memory: it writes the headers and the body in one packet, where
	// any other type makes it flush the headers first (one more system
	// call per forward).
	body := io.NopCloser(bytes.NewReader(b))
	req := (&http.Request{
		Method:        http.MethodPost,
		URL:           c.url,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        header,
		Body:          body,
		GetBody:       func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil },
		ContentLength: int64(len(b)),
		Host:          c.url.Host,
	}).WithContext(ctx)
	if c.inject != nil {
		c.inject(ctx, req)
	}
	resp, err := c.do(req)
	if err != nil {
		if c.wrapErrors {
			err = &url.Error{Op: "Post", URL: c.target, Err: err}
		}
		return nil, err
	}
	defer resp.Body.Close()
	response, err := c.dec(ctx, resp)
	if r, ok := response.(UppercaseResponse); ok && r.Err == service.ErrEmpty && !emptyRequest(request) {
		// Only "" is empty, and "" is never sent: the answer cannot be
		// true, and it is the instance's failure, not the client's.
		return nil, upstreamError(resp, "answered ErrEmpty to a non-empty string")
	}
	return response, err
}

// emptyRequest reports whether request asks about "".
func emptyRequest(request interface{}) bool {
	r, ok := request.(UppercaseRequest)
	return ok && r.S == ""
}

// requestBody returns the client's own bytes when ctx carries them for
// this string (a forwarded request), and otherwise encodes the string
// without HTML escaping. Encoding again could make a body grow:
// json.Marshal writes "<" as six bytes.
func requestBody(ctx context.Context, request interface{}) ([]byte, error) {
	var s string
	switch req := request.(type) {
	case UppercaseRequest:
		s = req.S
	case CountRequest:
		s = req.S
	default:
		return nil, fmt.Errorf("unexpected request type %T", request)
	}
	if b := rawRequestFor(ctx, s); b != nil {
		return b, nil
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(wireRequest{S: s}); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

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
		return UppercaseResponse{Err: service.ErrEmpty}, nil
	}
	if isRequestsFault(r.StatusCode) {
		// body goes back to the pool: the error keeps a copy.
		return UppercaseResponse{Err: requestError(r, bytes.Clone(body), w.Err+w.Error, err == nil)}, nil
	}
	if err != nil {
		return nil, err
	}
	if r.StatusCode != http.StatusOK || w.Err != "" {
		return nil, upstreamError(r, w.Err+w.Error)
	}
	return UppercaseResponse{V: w.V}, nil
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
	if isRequestsFault(r.StatusCode) {
		return nil, requestError(r, body, w.Error, err == nil)
	}
	if err != nil {
		return nil, err
	}
	if r.StatusCode != http.StatusOK {
		return nil, upstreamError(r, w.Error)
	}
	return CountResponse{V: w.V}, nil
}

// unmarshalResponse decodes any answer shape with encoding/json. It is a
// function of its own so that only this slow path pays for the value
// escaping to the heap.
func unmarshalResponse[T any](body []byte) (wireResponse[T], error) {
	w := new(wireResponse[T])
	err := json.Unmarshal(body, w)
	return *w, err
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
	return &UpstreamError{Instance: r.Request.URL.Host, Status: r.StatusCode, Msg: clip.String(msg, maxErrorText)}
}

// upstreamFailure is an answer that failed under its reader: err keeps
// its type, so that a lost connection still reads as one.
func upstreamFailure(r *http.Response, what string, err error) error {
	return &UpstreamError{Instance: r.Request.URL.Host, Status: r.StatusCode, Msg: clip.String(what+": "+err.Error(), maxErrorText), Err: err}
}
