package transport

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

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
	// Extra handlers served for GET on their path, e.g. "/metrics".
	Extra map[string]http.Handler
}

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
	serverOptions := []httptransport.ServerOption{
		httptransport.ServerBefore(markForwarded),
		httptransport.ServerErrorEncoder(encodeError),
	}
	mux := http.NewServeMux()
	route := func(path string, h http.Handler, methods ...string) {
		h = allowMethods(h, methods...)
		if opts.Responses != nil {
			h = countResponses(h, opts.Responses.With("path", path))
		}
		mux.Handle(path, h)
	}
	route("/uppercase", limitBody(httptransport.NewServer(
		eps.Uppercase, decodeUppercaseRequest, encodeUppercaseResponse, serverOptions...,
	), opts.MaxBodyBytes), http.MethodPost, http.MethodGet)
	route("/count", limitBody(httptransport.NewServer(
		eps.Count, decodeCountRequest, encodeCountResponse, serverOptions...,
	), opts.MaxBodyBytes), http.MethodPost, http.MethodGet)
	route("/health", http.HandlerFunc(serveHealth), http.MethodGet, http.MethodHead)
	for path, h := range opts.Extra {
		route(path, h, http.MethodGet)
	}
	route("/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no such path %q", r.URL.Path))
	}))
	return mux
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

func decodeUppercaseRequest(_ context.Context, r *http.Request) (interface{}, error) {
	s, err := decodeStringRequest(r.Body)
	if err != nil {
		return nil, err
	}
	return UppercaseRequest{S: s}, nil
}

func decodeCountRequest(_ context.Context, r *http.Request) (interface{}, error) {
	s, err := decodeStringRequest(r.Body)
	if err != nil {
		return nil, err
	}
	return CountRequest{S: s}, nil
}

// decodeStringRequest reads exactly one JSON object {"s": string} and
// explains precisely what is wrong with anything else.
func decodeStringRequest(body io.Reader) (string, error) {
	var req *wireRequest
	dec := json.NewDecoder(body)
	if err := dec.Decode(&req); err != nil {
		return "", decodeError(err)
	}
	if req == nil {
		return "", badRequest("request body must be a JSON object, not null")
	}
	// Exactly one value: anything after it is garbage a client did not mean
	// to send, and silently ignoring it would hide their bug.
	var extra json.RawMessage
	switch err := dec.Decode(&extra); {
	case errors.Is(err, io.EOF):
		return req.S, nil
	case err == nil:
		return "", badRequest("unexpected data after the JSON object")
	default:
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return "", decodeError(err)
		}
		return "", badRequest("unexpected data after the JSON object")
	}
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
func encodeError(_ context.Context, err error, w http.ResponseWriter) {
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

func writeJSON(w http.ResponseWriter, code int, v interface{}) error {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(code)
	return json.NewEncoder(w).Encode(v)
}

// countResponses counts answers by status code.
func countResponses(next http.Handler, c metrics.Counter) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		next.ServeHTTP(sw, r)
		c.With("code", statusText(sw.code)).Add(1)
	})
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	w.code = code
	w.ResponseWriter.WriteHeader(code)
}

// statusText avoids an allocation per request for the usual codes.
func statusText(code int) string {
	switch code {
	case 200:
		return "200"
	case 400:
		return "400"
	case 404:
		return "404"
	case 405:
		return "405"
	case 413:
		return "413"
	case 500:
		return "500"
	}
	return fmt.Sprint(code)
}
