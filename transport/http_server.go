package transport

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/metrics"
	httptransport "github.com/go-kit/kit/transport/http"

	"github.com/kitmesh/stringsvc/service"
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

// Endpoints collects the endpoints served over HTTP.
type Endpoints struct {
	Uppercase endpoint.Endpoint
	Count     endpoint.Endpoint
}

// MakeServerEndpoints returns the endpoints of svc.
func MakeServerEndpoints(svc service.StringService) Endpoints {
	return Endpoints{
		Uppercase: MakeUppercaseEndpoint(svc),
		Count:     MakeCountEndpoint(svc),
	}
}

// HandlerOptions configures NewHTTPHandler. Zero values get defaults.
type HandlerOptions struct {
	// MaxBodyBytes limits a request body; larger bodies get 413.
	MaxBodyBytes int64
	// Responses counts answers by "path" and "code". It may be nil.
	Responses metrics.Counter
	// MaxInFlight caps the requests to the endpoints served at once.
	MaxInFlight int
	// Extra handlers served for GET on their path, e.g. "/metrics".
	Extra map[string]http.Handler
	// Tracing makes every request to an endpoint a server span,
	// continuing the caller's trace. The zero value traces nothing.
	Tracing Tracing
}

// DefaultMaxInFlight is the default cap on requests served at once.
const DefaultMaxInFlight = 128

// NewHTTPHandler serves the endpoints as JSON over HTTP:
//
//	POST|GET /uppercase {"s":"..."} -> {"v":"..."}
//	POST|GET /count     {"s":"..."} -> {"v":n}
//	GET /health                     -> 200, constant body
//
// GET with a body is accepted because Go kit's stringsvc3 proxy sends it.
// Every error answer is JSON and says what was wrong.
func NewHTTPHandler(eps Endpoints, opts HandlerOptions) http.Handler {
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if opts.MaxInFlight <= 0 {
		opts.MaxInFlight = DefaultMaxInFlight
	}
	serverOptions := []httptransport.ServerOption{
		httptransport.ServerBefore(markForwarded),
		httptransport.ServerErrorEncoder(encodeError),
	}
	inFlight := make(chan struct{}, opts.MaxInFlight) // shared by the endpoints
	mux := http.NewServeMux()
	// route wraps h, from the inside out: methods; for the endpoints the
	// in-flight cap, then the server span; the count of answers, which
	// sees every status, 499
	// included (for the endpoints inside it, the server span, which reads
	// its status); for the endpoints the body limit. The body limit is
	// outermost because http.MaxBytesReader must get the server's own
	// ResponseWriter: through a wrapper it cannot ask the server to close
	// the connection after a 413.
	route := func(path string, h http.Handler, endpoint bool, methods ...string) {
		h = allowMethods(h, methods...)
		if endpoint {
			h = capInFlight(h, inFlight)
		}
		if endpoint {
			h = opts.Tracing.server(path, h)
		}
		h = trackResponse(h, opts.Responses, path)
		if endpoint {
			h = limitBody(h, opts.MaxBodyBytes)
		}
		mux.Handle(path, h)
	}
	route("/uppercase", httptransport.NewServer(
		eps.Uppercase, decodeUppercaseRequest, encodeUppercaseResponse, serverOptions...,
	), true, http.MethodPost, http.MethodGet)
	route("/count", httptransport.NewServer(
		eps.Count, decodeCountRequest, encodeCountResponse, serverOptions...,
	), true, http.MethodPost, http.MethodGet)
	route("/health", http.HandlerFunc(serveHealth), false, http.MethodGet, http.MethodHead)
	for path, h := range opts.Extra {
		route(path, h, false, http.MethodGet)
	}
	route("/", http.HandlerFunc(notFound), false)
	return echoSeq(mux)
}

// echoSeq echoes a request's SeqHeader in its answer, whatever the
// answer, so that the caller's DirectTransport can tell it from a stale
// one. It passes the server's own ResponseWriter on (see limitBody).
func echoSeq(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if v, ok := r.Header[SeqHeader]; ok {
			w.Header()[SeqHeader] = v
		}
		next.ServeHTTP(w, r)
	})
}

// shedKeepAliveBytes is the largest request body a shed request may have
// and still keep its connection.
const shedKeepAliveBytes = 64 << 10

// capInFlight answers 503 with Retry-After once cap requests are being
// served, before reading the body: under overload a member must not buffer
// request bodies it cannot serve.
func capInFlight(next http.Handler, cap chan struct{}) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case cap <- struct{}{}:
			defer func() { <-cap }()
			next.ServeHTTP(w, r)
		default:
			// The connection stays open: on the mesh port a new one is a
			// TLS handshake, the last thing an overloaded member needs.
			// net/http then reads the unserved body to reuse it, so a body
			// of unknown or large size closes it instead: reading that
			// could hold the 503 until the body ends.
			if r.ContentLength < 0 || r.ContentLength > shedKeepAliveBytes {
				w.Header().Set("Connection", "close")
			} else {
				// A body trickled in holds the 503 a second at most.
				http.NewResponseController(w).SetReadDeadline(time.Now().Add(time.Second))
			}
			w.Header().Set("Retry-After", "1")
			writeError(w, http.StatusServiceUnavailable, fmt.Sprintf("too many requests in flight (%d); retry later", len(cap)))
		}
	})
}

func serveHealth(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, healthBody)
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

// wireRequest is the body of both endpoints. A pointer to it lets the decoder
// tell a JSON null apart from an object.
type wireRequest struct {
	S string `json:"s"`
}

// decodeUppercaseRequest keeps the client's bytes beside the decoded
// string: a forwarded request carries them unchanged (see
// encodeClientRequest), so a request that passed this member's body limit
// cannot grow past a peer's by being encoded again.
func decodeUppercaseRequest(_ context.Context, r *http.Request) (interface{}, error) {
	s, raw, err := decodeBody(r)
	return UppercaseRequest{S: s, raw: raw}, err
}

func decodeCountRequest(_ context.Context, r *http.Request) (interface{}, error) {
	s, _, err := decodeBody(r)
	return CountRequest{S: s}, err
}

// decodeBody reads the body and decodes {"s": string} from it.
func decodeBody(r *http.Request) (s string, raw []byte, err error) {
	if raw, err = readBody(r); err == nil {
		s, err = decodeStringRequest(raw)
	}
	return s, raw, err
}

// readBody reads the whole body, already bounded by limitBody, into a
// buffer sized from Content-Length when the client sent one: growing by
// doubling would hold up to twice a large body. A client's claim is
// trusted only up to DefaultMaxBodyBytes, so that a header alone cannot
// make the member allocate more than a real body could.
func readBody(r *http.Request) ([]byte, error) {
	var buf bytes.Buffer
	if n := min(r.ContentLength, DefaultMaxBodyBytes); n > 0 {
		buf.Grow(int(n) + bytes.MinRead)
	}
	if _, err := buf.ReadFrom(r.Body); err != nil {
		return nil, decodeError(err)
	}
	return buf.Bytes(), nil
}

// decodeStringRequest decodes exactly one JSON object {"s": string} and
// explains precisely what is wrong with anything else. It decodes from the
// bytes in place (json.Unmarshal), with no second buffer of the body.
func decodeStringRequest(raw []byte) (string, error) {
	if s, ok := plainObject(raw, "s"); ok {
		return s, nil
	}
	if len(bytes.TrimSpace(raw)) == 0 {
		return "", decodeError(io.EOF)
	}
	var req *wireRequest
	if err := json.Unmarshal(raw, &req); err != nil {
		var syntaxErr *json.SyntaxError
		switch {
		case errors.As(err, &syntaxErr) && strings.HasSuffix(syntaxErr.Error(), "after top-level value"):
			// Exactly one value: anything after it is garbage a client did
			// not mean to send, and silently ignoring it would hide their
			// bug.
			return "", badRequest("unexpected data after the JSON object")
		case errors.As(err, &syntaxErr) && syntaxErr.Error() == "unexpected end of JSON input":
			return "", decodeError(io.ErrUnexpectedEOF)
		}
		return "", decodeError(err)
	}
	if req == nil {
		return "", badRequest("request body must be a JSON object, not null")
	}
	return req.S, nil
}

func decodeError(err error) error {
	var (
		syntaxErr *json.SyntaxError
		typeErr   *json.UnmarshalTypeError
		mbe       *http.MaxBytesError
	)
	switch {
	case errors.As(err, &mbe):
		return &RequestError{
			Status: http.StatusRequestEntityTooLarge,
			Msg:    fmt.Sprintf("request body is larger than %d bytes", mbe.Limit),
		}
	case errors.Is(err, io.EOF):
		return badRequest(`request body is empty; want a JSON object like {"s":"hello"}`)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return badRequest("malformed JSON: unexpected end of input")
	case errors.As(err, &syntaxErr):
		return badRequest(fmt.Sprintf("malformed JSON at byte %d: %v", syntaxErr.Offset, syntaxErr))
	case errors.As(err, &typeErr) && typeErr.Field == "":
		return badRequest(fmt.Sprintf("request body must be a JSON object, not %s", typeErr.Value))
	case errors.As(err, &typeErr):
		return badRequest(fmt.Sprintf("field %q must be a string, not %s", typeErr.Field, typeErr.Value))
	default:
		return badRequest(fmt.Sprintf("malformed request: %v", err))
	}
}

func encodeUppercaseResponse(ctx context.Context, w http.ResponseWriter, response interface{}) error {
	resp := response.(UppercaseResponse)
	if resp.Err != nil {
		encodeError(ctx, resp.Err, w)
		return nil
	}
	if ok, err := writeV(w, resp.V); ok {
		return err
	}
	return writeJSON(w, http.StatusOK, struct {
		V string `json:"v"`
	}{resp.V})
}

func encodeCountResponse(_ context.Context, w http.ResponseWriter, response interface{}) error {
	return writeJSON(w, http.StatusOK, struct {
		V int `json:"v"`
	}{response.(CountResponse).V})
}

// encodeError writes err with its status. ErrEmpty keeps the shape of Go
// kit's stringsvc tutorial, {"v":"","err":"empty string"}, so stringsvc3
// clients still decode it.
//
// Go kit calls it also when writing a response failed, after the status
// was sent; then there is nothing left to say, and it writes nothing. A
// RequestError that carries an upstream's own answer is passed on as it
// came.
func encodeError(_ context.Context, err error, w http.ResponseWriter) {
	if t, ok := w.(*responseTracker); ok && t.wroteHeader {
		return
	}
	var re *RequestError
	if errors.As(err, &re) && re.Body != nil {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(re.Status)
		w.Write(re.Body)
		return
	}
	code := err2code(err)
	if errors.Is(err, service.ErrEmpty) {
		writeJSON(w, code, struct {
			V   string `json:"v"`
			Err string `json:"err"`
		}{"", err.Error()})
		return
	}
	writeError(w, code, err.Error())
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, struct {
		Error string `json:"error"`
	}{msg})
}

// writeJSON writes v without HTML escaping: the answers are JSON for
// programs, and escaping turns one byte of "<" into six.
func writeJSON(w http.ResponseWriter, code int, v interface{}) error {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
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
	return echoSeq(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
