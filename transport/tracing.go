package transport

import (
	"context"
	"encoding/binary"
	"math/rand/v2"
	"net/http"

	"github.com/go-kit/kit/endpoint"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Tracing is what the transports need to trace requests with
// OpenTelemetry: the propagator of the trace context (W3C traceparent and
// tracestate) across hops, and a tracer provider that records spans.
//
// Without a Provider, requests still get trace and span IDs, continued
// from the caller's traceparent or new, for their log lines and for the
// next hop, at almost no cost: no span is recorded, and the caller's
// sampled flag passes on unchanged (Sampler decides it for new traces).
// This is a member with export off. The zero value traces nothing.
type Tracing struct {
	Provider   trace.TracerProvider
	Propagator propagation.TextMapPropagator
	// Sampler decides the sampled flag of new traces when there is no
	// Provider; nil samples them all.
	Sampler func(trace.TraceID) bool
}

func (t Tracing) enabled() bool  { return t.Provider != nil && t.Propagator != nil }
func (t Tracing) idsOnly() bool  { return t.Provider == nil && t.Propagator != nil }
func (t Tracing) anything() bool { return t.Propagator != nil }

// instrumentation names the tracer of this package.
const instrumentation = "github.com/kitmesh/stringsvc/transport"

// server wraps the handler of path in a server span, continuing the trace
// of an incoming traceparent. It must run inside trackResponse, whose
// status it reads. (It is ours rather than otelhttp's handler, which cost
// some 45 allocations per request even unsampled: see BENCHMARKS.md.)
func (t Tracing) server(path string, h http.Handler) http.Handler {
	if !t.anything() {
		return h
	}
	name := "POST " + path
	var tracer trace.Tracer
	if t.enabled() {
		tracer = t.Provider.Tracer(instrumentation)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := t.Propagator.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		if tracer == nil {
			h.ServeHTTP(w, r.WithContext(trace.ContextWithSpanContext(ctx, t.childOf(ctx))))
			return
		}
		ctx, span := tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindServer))
		defer span.End()
		h.ServeHTTP(w, r.WithContext(ctx))
		if !span.IsRecording() {
			return
		}
		code := http.StatusOK
		if rt, ok := w.(*responseTracker); ok && rt.code != 0 {
			code = rt.code
		}
		span.SetAttributes(
			attribute.String("http.request.method", r.Method),
			attribute.String("url.path", path),
			attribute.Int("http.response.status_code", code),
		)
		if code >= 500 {
			span.SetStatus(codes.Error, http.StatusText(code))
		}
	})
}

// childOf returns a new span context for a request without a recorded
// span: the caller's trace and flags with a new span ID, or a new trace.
func (t Tracing) childOf(ctx context.Context) trace.SpanContext {
	parent := trace.SpanContextFromContext(ctx)
	var sid trace.SpanID
	binary.BigEndian.PutUint64(sid[:], rand.Uint64()|1) // never all zero
	if parent.IsValid() {
		return parent.WithSpanID(sid).WithRemote(false)
	}
	var tid trace.TraceID
	binary.BigEndian.PutUint64(tid[:8], rand.Uint64())
	binary.BigEndian.PutUint64(tid[8:], rand.Uint64()|1)
	var flags trace.TraceFlags
	if t.Sampler == nil || t.Sampler(tid) {
		flags = trace.FlagsSampled
	}
	return trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: flags})
}

// inject writes the trace context of ctx into a request to an upstream,
// when no recording client span does it.
func (t Tracing) inject(ctx context.Context, r *http.Request) context.Context {
	t.Propagator.Inject(ctx, propagation.HeaderCarrier(r.Header))
	return ctx
}

// Client wraps base so that every request is a client span, one per
// attempt, and carries the trace context to the upstream. Without a
// Provider it returns base: the client endpoints inject the IDs (see
// WithTracing).
func (t Tracing) Client(base http.RoundTripper) http.RoundTripper {
	if !t.enabled() {
		return base
	}
	return otelhttp.NewTransport(base,
		otelhttp.WithTracerProvider(t.Provider),
		otelhttp.WithPropagators(t.Propagator),
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return "attempt " + r.Method + " " + r.URL.Path }),
	)
}

// Span returns an endpoint middleware that runs each call in a span
// called name: Go kit v0.13 has no OpenTelemetry package, and this is
// all of one. A transport error, or a failure the response carries
// (endpoint.Failer), marks the span failed.
func (t Tracing) Span(name string) endpoint.Middleware {
	if !t.enabled() {
		return func(next endpoint.Endpoint) endpoint.Endpoint { return next }
	}
	tracer := t.Provider.Tracer(instrumentation)
	return func(next endpoint.Endpoint) endpoint.Endpoint {
		return func(ctx context.Context, request interface{}) (interface{}, error) {
			ctx, span := tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindInternal))
			defer span.End()
			response, err := next(ctx, request)
			if f, ok := response.(endpoint.Failer); ok && err == nil && f.Failed() != nil {
				span.SetStatus(codes.Error, f.Failed().Error())
			} else if err != nil {
				span.RecordError(err)
				span.SetStatus(codes.Error, err.Error())
			}
			return response, err
		}
	}
}
