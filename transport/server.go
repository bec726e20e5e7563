package transport

import (
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/go-kit/kit/metrics"
	httptransport "github.com/go-kit/kit/transport/http"
	"github.com/kitmesh/stringsvc/transport/endpoints"
	"github.com/kitmesh/stringsvc/transport/http1"
	"github.com/kitmesh/stringsvc/transport/limit"
)

// HopHeader marks a request forwarded by another member. A member that
// receives it serves the request itself and never forwards it again, which
// keeps the mesh loop-free.
const HopHeader = "X-Stringsvc-Forwarded"

// DefaultMaxBodyBytes is the default limit on a request body.
const DefaultMaxBodyBytes = 1 << 20

// healthBody is constant on purpose: output that changes on every check
// would bump Consul's index and wake every blocking query in the cluster.
const healthBody = `{"status":"ok"}` + "\n"

// HandlerOptions configures NewHTTPHandler. Zero values get defaults.
type HandlerOptions struct {
	// MaxBodyBytes limits a request body; larger bodies get 413.
	MaxBodyBytes int64
	// Responses counts answers by "path" and "code". It may be nil.
	Responses metrics.Counter
	// MaxInFlight caps the requests to the endpoints served at once,
	// when Limiter is nil.
	MaxInFlight int
	// Limiter decides how many requests to the endpoints are served at
	// once; the rest wait in its queue, if it has one, or get a fast 503.
	// Nil is a fixed limit of MaxInFlight and no queue.
	Limiter *limit.Limiter
	// MaxWait bounds how long a request waits in Limiter's queue (see
	// limit.Limiter.SetQueue) for a slot; 0 is DefaultMaxWait.
	MaxWait time.Duration
	// Shed counts the requests Limiter refused, by "path". It may be nil.
	Shed metrics.Counter
	// Extra handlers served for GET on their path, e.g. "/metrics".
	Extra map[string]http.Handler
	// MaxTimeout caps the deadline a request's TimeoutHeader asks for;
	// 0 is DefaultMaxTimeout.
	MaxTimeout time.Duration
	// Expired counts the requests dropped unserved because the deadline
	// their TimeoutHeader carried had passed. It may be nil.
	Expired metrics.Counter
	// Tracing makes every request to an endpoint a server span,
	// continuing the caller's trace. The zero value traces nothing.
	Tracing Tracing
}

// DefaultMaxInFlight is the default cap on requests served at once.
const DefaultMaxInFlight = 128

// DefaultMaxQueue is the default number of requests that may wait for a
// slot: enough for a thousand closed-loop clients, each holding only a
// parked goroutine.
const DefaultMaxQueue = 1024

// DefaultMaxWait is the default bound on a request's wait for a slot.
const DefaultMaxWait = time.Second

// NewHTTPHandler serves the endpoints as JSON over HTTP:
//
//	POST|GET /uppercase {"s":"..."} -> {"v":"..."}
//	POST|GET /count     {"s":"..."} -> {"v":n}
//	GET /health                     -> 200, constant body
//
// GET with a body is accepted because Go kit's stringsvc3 proxy sends it.
// Every error answer is JSON and says what was wrong.
func NewHTTPHandler(eps endpoints.Set, opts HandlerOptions) http.Handler {
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if opts.MaxInFlight <= 0 {
		opts.MaxInFlight = DefaultMaxInFlight
	}
	if opts.MaxWait <= 0 {
		opts.MaxWait = DefaultMaxWait
	}
	if opts.MaxTimeout <= 0 {
		opts.MaxTimeout = DefaultMaxTimeout
	}
	serverOptions := []httptransport.ServerOption{
		httptransport.ServerBefore(markForwarded, withRequest),
		httptransport.ServerErrorEncoder(encodeError),
	}
	if opts.Limiter == nil {
		opts.Limiter = limit.New(limit.NewFixed(limit.Options{Max: opts.MaxInFlight}), opts.MaxInFlight, nil)
	}
	mux := http.NewServeMux()
	// route wraps h, from the inside out: methods; for the endpoints the
	// concurrency limit, the caller's deadline (outside the cap, so that
	// expired work takes no slot), then the server span; the count of answers, which
	// sees every status, 499
	// included (for the endpoints inside it, the server span, which reads
	// its status); for the endpoints the body limit. The body limit is
	// outermost because http.MaxBytesReader must get the server's own
	// ResponseWriter: through a wrapper it cannot ask the server to close
	// the connection after a 413.
	route := func(path string, h http.Handler, endpoint bool, methods ...string) {
		h = allowMethods(h, methods...)
		if endpoint {
			var shed metrics.Counter
			if opts.Shed != nil {
				shed = opts.Shed.With("path", path)
			}
			h = limitConcurrency(h, opts.Limiter, opts.MaxWait, shed) // shared by the endpoints
			h = applyDeadline(h, opts.MaxTimeout, opts.Expired)
			h = opts.Tracing.server(path, h)
		}
		h = trackResponse(h, opts.Responses, path)
		if endpoint {
			h = limitBody(h, opts.MaxBodyBytes)
		}
		mux.Handle(path, h)
	}
	route("/uppercase", httptransport.NewServer(
		eps.UppercaseEndpoint, decodeUppercaseRequest, encodeUppercaseResponse, serverOptions...,
	), true, http.MethodPost, http.MethodGet)
	route("/count", httptransport.NewServer(
		eps.CountEndpoint, decodeCountRequest, encodeCountResponse, serverOptions...,
	), true, http.MethodPost, http.MethodGet)
	route("/health", http.HandlerFunc(serveHealth), false, http.MethodGet, http.MethodHead)
	for path, h := range opts.Extra {
		route(path, h, false, http.MethodGet)
	}
	route("/", http.HandlerFunc(notFound), false)
	return http1.EchoSeq(mux)
}

func serveHealth(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, healthBody)
}

// NewAdminHandler serves the operator's pages (GET only) on a listener of
// their own, so that peer addresses and process details stay off the
// client port. It answers /health too, for a probe of that port.
func NewAdminHandler(pages map[string]http.Handler) http.Handler {
	mux := http.NewServeMux()
	for path, h := range pages {
		mux.Handle(path, allowMethods(h, http.MethodGet))
	}
	mux.Handle("/health", allowMethods(http.HandlerFunc(serveHealth), http.MethodGet, http.MethodHead))
	mux.Handle("/", http.HandlerFunc(notFound))
	return mux
}

func notFound(w http.ResponseWriter, r *http.Request) {
	writeError(w, http.StatusNotFound, fmt.Sprintf("no such path %q", r.URL.Path))
}
