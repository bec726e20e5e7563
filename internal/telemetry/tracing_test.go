package telemetry

import (
	"context"
	"strings"
	"testing"
)

func TestSamplerAndEndpointFromEnvironment(t *testing.T) {
	for _, tc := range []struct {
		name, arg string
		want      string // the sampler's Description, or "error"
	}{
		{"", "", "ParentBased{root:AlwaysOnSampler"},
		{"always_off", "", "AlwaysOffSampler"},
		{"traceidratio", "0.1", "TraceIDRatioBased{0.1}"},
		{"parentbased_traceidratio", "0.25", "ParentBased{root:TraceIDRatioBased{0.25}"},
		{"traceidratio", "2", "error"},
		{"jaeger_remote", "", "error"},
	} {
		s, err := parseSampler(tc.name, tc.arg)
		have := "error"
		if err == nil {
			have = s.Description()
		}
		if !strings.HasPrefix(have, tc.want) {
			t.Errorf("OTEL_TRACES_SAMPLER=%q ARG=%q: want %s, have %s", tc.name, tc.arg, tc.want, have)
		}
	}
	env := func(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }
	if e := otlpEndpoint(env(map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4318/"})); e != "http://jaeger:4318/v1/traces" {
		t.Errorf("base endpoint: have %q", e)
	}
	if e := otlpEndpoint(env(map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://b:4318/x"})); e != "http://b:4318/x" {
		t.Errorf("traces endpoint: have %q", e)
	}
	if _, err := NewTracing(context.Background(), env(map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}), "s", "i", "v"); err == nil {
		t.Error("OTEL_EXPORTER_OTLP_PROTOCOL=grpc: want refused at start")
	}
	if tr, err := NewTracing(context.Background(), env(nil), "s", "i", "v"); err != nil || tr.Provider != nil || tr.Exports != "" {
		t.Errorf("no endpoint: want IDs only, no provider and no export; have %+v, %v", tr, err)
	}
}
