package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// TestReceivesWhatTheSDKExports sends two spans of one trace with the real
// OTLP/HTTP exporter and reads them back in Jaeger's shape.
func TestReceivesWhatTheSDKExports(t *testing.T) {
	s := &store{max: 100}
	otlp := http.NewServeMux()
	otlp.HandleFunc("POST /v1/traces", s.receive)
	recv := httptest.NewServer(otlp)
	defer recv.Close()

	exp, err := otlptracehttp.New(context.Background(), otlptracehttp.WithEndpointURL(recv.URL+"/v1/traces"))
	if err != nil {
		t.Fatal(err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp),
		sdktrace.WithResource(resource.NewSchemaless(attribute.String("service.name", "svc-a"))))
	ctx, parent := tp.Tracer("test").Start(context.Background(), "outer")
	_, child := tp.Tracer("test").Start(ctx, "inner")
	child.End()
	parent.End()
	if err := tp.Shutdown(context.Background()); err != nil {
		t.Fatalf("export: %v", err)
	}

	id := parent.SpanContext().TraceID().String()
	req := httptest.NewRequest(http.MethodGet, "/api/traces/"+id, nil)
	req.SetPathValue("id", id)
	w := httptest.NewRecorder()
	s.trace(w, req)
	var body struct{ Data []jaegerTrace }
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || len(body.Data) != 1 {
		t.Fatalf("want one trace, have %d %s (%v)", w.Code, w.Body, err)
	}
	tr := body.Data[0]
	if len(tr.Spans) != 2 || tr.Processes[tr.Spans[0].ProcessID].ServiceName != "svc-a" {
		t.Fatalf("want 2 spans of svc-a, have %+v", tr)
	}
	for _, sp := range tr.Spans {
		if sp.OperationName == "inner" && (len(sp.References) != 1 || sp.References[0].SpanID != parent.SpanContext().SpanID().String()) {
			t.Errorf("inner: want a CHILD_OF reference to outer, have %+v", sp.References)
		}
	}

	bad := httptest.NewRequest(http.MethodPost, "/v1/traces", nil)
	bad.Header.Set("Content-Type", "application/json")
	w = httptest.NewRecorder()
	s.receive(w, bad)
	if w.Code != http.StatusUnsupportedMediaType {
		t.Errorf("JSON export: want 415, have %d", w.Code)
	}
}
