package transport

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/go-kit/kit/endpoint"
	httptransport "github.com/go-kit/kit/transport/http"

	"github.com/kitmesh/stringsvc/service"
	"github.com/kitmesh/stringsvc/transport/endpoints"
	"github.com/kitmesh/stringsvc/transport/http1"
)

// defaultClientTimeout bounds a call without WithRoundTripper.
const defaultClientTimeout = 10 * time.Second

// ClientOption configures MakeClientEndpoints.
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

// MakeClientEndpoints returns the Uppercase and Count endpoints of the
// instance at "host:port" (or a base URL); the Set's Service is the
// instance as a StringService. An ErrEmpty answer, ours (400) or that of Go
// kit's stringsvc tutorial (200 with "err"), is service.ErrEmpty again.
func MakeClientEndpoints(instance string, options ...ClientOption) (endpoints.Set, error) {
	o := clientOptions{}
	for _, opt := range options {
		opt(&o)
	}
	var do func(*http.Request) (*http.Response, error)
	switch {
	case o.transport != nil:
		do = o.transport.RoundTrip
	default:
		// Callers may pass no deadline; http.Client
		// gives each request one in its context.
		do = (&http.Client{Transport: http1.NewTransport(0), Timeout: defaultClientTimeout}).Do
	}
	base, err := ParseInstance(instance)
	if err != nil {
		return endpoints.Set{}, err
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
	return endpoints.Set{
		UppercaseEndpoint: mk("/uppercase", decodeUppercaseResponse),
		CountEndpoint:     mk("/count", decodeCountResponse),
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
	b, err := requestBody(request)
	if err != nil {
		return nil, err
	}
	header := http.Header{"Content-Type": jsonContentType}
	if c.forwarded {
		header[HopHeader] = hopValue
	}
	if deadline, ok := ctx.Deadline(); ok {
		header[TimeoutHeader] = []string{formatTimeout(time.Until(deadline))}
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
	if r, ok := response.(endpoints.UppercaseResponse); ok && r.Err == service.ErrEmpty && !emptyRequest(request) {
		// Only "" is empty, and "" is never sent: the answer cannot be
		// true, and it is the instance's failure, not the client's.
		return nil, upstreamError(resp, "answered ErrEmpty to a non-empty string")
	}
	return response, err
}

// emptyRequest reports whether request asks about "".
func emptyRequest(request interface{}) bool {
	r, ok := request.(endpoints.UppercaseRequest)
	return ok && r.S == ""
}

// requestBody encodes the request's string. A forward sends this
// encoding of what the member decoded, never the client's bytes, so that
// the peer reads exactly what this member judged; and it is never longer
// than a valid JSON body that held the string, so a body that passed this
// member's limit passes a peer's.
func requestBody(request interface{}) ([]byte, error) {
	var s string
	switch req := request.(type) {
	case endpoints.UppercaseRequest:
		s = req.S
	case endpoints.CountRequest:
		s = req.S
	default:
		return nil, fmt.Errorf("unexpected request type %T", request)
	}
	b := make([]byte, 0, len(s)+len(`{"s":""}`))
	b = append(b, `{"s":`...)
	b = appendString(b, s)
	return append(b, '}'), nil
}
