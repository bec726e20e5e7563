package telemetry

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/kitmesh/stringsvc/transport"
)

// Tracing is a member's OpenTelemetry setup: trace and span IDs for every
// request, to log and to propagate, always; a tracer provider that
// records and exports spans over OTLP only when an endpoint is configured.
type Tracing struct {
	transport.Tracing
	provider *sdktrace.TracerProvider
	Exports  string // the OTLP endpoint, "" when export is off
}

// NewTracing reads the standard OTEL_* variables through getenv:
//
//	OTEL_EXPORTER_OTLP_ENDPOINT         base URL of an OTLP/HTTP receiver (+ /v1/traces)
//	OTEL_EXPORTER_OTLP_TRACES_ENDPOINT  full URL; wins over the base one
//	OTEL_EXPORTER_OTLP_PROTOCOL         only http/protobuf (the default)
//	OTEL_TRACES_SAMPLER[_ARG]           default parentbased_always_on
//	OTEL_SERVICE_NAME                   default serviceName
//	OTEL_SDK_DISABLED                   true: no tracing at all, not even IDs
//
// The exporter reads its other OTEL_EXPORTER_OTLP_* settings (headers,
// timeout, TLS) itself. The resource carries service.name,
// service.instance.id and service.version.
func NewTracing(ctx context.Context, getenv func(string) string, serviceName, instance, version string) (*Tracing, error) {
	if strings.EqualFold(getenv("OTEL_SDK_DISABLED"), "true") {
		return &Tracing{}, nil // no spans, no IDs: the benchmark's reference
	}
	sampler, err := parseSampler(getenv("OTEL_TRACES_SAMPLER"), getenv("OTEL_TRACES_SAMPLER_ARG"))
	if err != nil {
		return nil, err
	}
	if v := getenv("OTEL_SERVICE_NAME"); v != "" {
		serviceName = v
	}
	res := resource.NewSchemaless(
		attribute.String("service.name", serviceName),
		attribute.String("service.instance.id", instance),
		attribute.String("service.version", version),
	)
	t := &Tracing{Tracing: transport.Tracing{
		Propagator: propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}),
	}}
	endpoint := otlpEndpoint(getenv)
	if endpoint == "" {
		// Export off: IDs only. Nothing would read a recorded span, so
		// none is recorded; the sampler still decides new traces' flag,
		// for the members downstream that export.
		t.Sampler = func(id trace.TraceID) bool {
			return sampler.ShouldSample(sdktrace.SamplingParameters{TraceID: id}).Decision == sdktrace.RecordAndSample
		}
		return t, nil
	}
	if p := getenv("OTEL_EXPORTER_OTLP_PROTOCOL"); p != "" && p != "http/protobuf" {
		return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL=%q: only http/protobuf is built in", p)
	}
	exporter, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(endpoint))
	if err != nil {
		return nil, fmt.Errorf("OTLP exporter: %w", err)
	}
	t.Exports = endpoint
	t.provider = sdktrace.NewTracerProvider(sdktrace.WithResource(res), sdktrace.WithSampler(sampler), sdktrace.WithBatcher(exporter))
	t.Provider = t.provider
	return t, nil
}

// otlpEndpoint returns the URL spans go to, or "" when export is off.
func otlpEndpoint(getenv func(string) string) string {
	if v := getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"); v != "" {
		return v
	}
	if v := getenv("OTEL_EXPORTER_OTLP_ENDPOINT"); v != "" {
		return strings.TrimSuffix(v, "/") + "/v1/traces"
	}
	return ""
}

// parseSampler reads OTEL_TRACES_SAMPLER and its argument, as the
// OpenTelemetry specification names them.
func parseSampler(name, arg string) (sdktrace.Sampler, error) {
	ratio := func() (float64, error) {
		if arg == "" {
			return 1, nil
		}
		r, err := strconv.ParseFloat(arg, 64)
		if err != nil || r < 0 || r > 1 {
			return 0, fmt.Errorf("OTEL_TRACES_SAMPLER_ARG=%q: want a ratio between 0 and 1", arg)
		}
		return r, nil
	}
	switch name {
	case "", "parentbased_always_on":
		return sdktrace.ParentBased(sdktrace.AlwaysSample()), nil
	case "parentbased_always_off":
		return sdktrace.ParentBased(sdktrace.NeverSample()), nil
	case "always_on":
		return sdktrace.AlwaysSample(), nil
	case "always_off":
		return sdktrace.NeverSample(), nil
	case "traceidratio", "parentbased_traceidratio":
		r, err := ratio()
		if err != nil {
			return nil, err
		}
		if name == "traceidratio" {
			return sdktrace.TraceIDRatioBased(r), nil
		}
		return sdktrace.ParentBased(sdktrace.TraceIDRatioBased(r)), nil
	}
	return nil, fmt.Errorf("OTEL_TRACES_SAMPLER=%q: want always_on, always_off, traceidratio or their parentbased_ forms", name)
}

// shutdown flushes the spans still buffered, within ctx.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t.provider == nil {
		return nil
	}
	if err := t.provider.Shutdown(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("flush spans: %w", err)
	}
	return nil
}

// TraceFields appends the trace and span IDs of a request, for its log
// lines.
func TraceFields(ctx context.Context, keyvals []interface{}) []interface{} {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return keyvals
	}
	// As strings: the IDs are Stringers, which the log's Sanitize would
	// format once to inspect and logfmt once more to write.
	return append(keyvals, "trace_id", sc.TraceID().String(), "span_id", sc.SpanID().String())
}

// TraceExemplar links a histogram observation to the request's trace,
// when this member records and exports it (any other trace is nowhere to
// be found).
func TraceExemplar(ctx context.Context) prometheus.Labels {
	span := trace.SpanFromContext(ctx)
	sc := span.SpanContext()
	if !sc.IsSampled() || !span.IsRecording() {
		return nil
	}
	return prometheus.Labels{"trace_id": sc.TraceID().String(), "span_id": sc.SpanID().String()}
}

// hostname for service.instance.id.
func Hostname() string {
	h, err := os.Hostname()
	if err != nil {
		return "unknown"
	}
	return h
}

// FallbackEvent records a local fallback on the request's span and for
// its log line.
func FallbackEvent(ctx context.Context, reason string) {
	trace.SpanFromContext(ctx).AddEvent("fallback", trace.WithAttributes(attribute.String("reason", reason)))
	transport.NoteFallback(ctx, reason)
}

// RequestFields appends a request's trace fields (TraceFields) and, when
// it was forwarded, the mesh target its forward took and why it was
// served locally after all, if it was.
func RequestFields(ctx context.Context, keyvals []interface{}) []interface{} {
	keyvals = TraceFields(ctx, keyvals)
	target, fallback := transport.Noted(ctx)
	if target != nil {
		keyvals = append(keyvals, "target", noted{target})
	}
	if fallback != nil {
		keyvals = append(keyvals, "fallback", noted{fallback})
	}
	return keyvals
}

// noted is a string noted for a log line, by pointer: a value of one
// pointer goes into the line's interface{} without an allocation, where
// the string itself would take one per request.
type noted struct{ s *string }

func (n noted) String() string { return *n.s }

// RedactURL drops user info and query from a URL for a log line: an
// endpoint may carry credentials.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	u.User, u.RawQuery = nil, ""
	return u.String()
}
