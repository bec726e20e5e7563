package main

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-kit/log"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	collector "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/kitmesh/stringsvc/discovery/consultest"
	"github.com/kitmesh/stringsvc/internal/clustertest"
	"github.com/kitmesh/stringsvc/internal/member"
	"github.com/kitmesh/stringsvc/internal/probe"
	"github.com/kitmesh/stringsvc/internal/syncbuf"
	"github.com/kitmesh/stringsvc/transport"
)

// memberHandler builds a member with newMember, as run() does, from
// flags, with its request log written to requests (through run()'s own
// request logger) and traces to tr.
func memberHandler(tb testing.TB, tr transport.Tracing, requests io.Writer, args ...string) (http.Handler, *prometheus.Registry) {
	tb.Helper()
	cfg, err := parseConfig(append([]string{"-consul.addr", member.ConsulNone}, args...), func(string) string { return "" }, io.Discard)
	if err != nil {
		tb.Fatal(err)
	}
	logs := member.Loggers{Ops: log.NewNopLogger(), Requests: requestLogger(requests)}
	registry := prometheus.NewRegistry()
	mb, err := member.New(cfg, member.Bound{HTTP: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080}}, logs, registry, tr)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(mb.Close)
	return mb.Handler, registry
}

// waitPool waits until the member of registry balances over want
// upstreams: the pool takes the -proxy list in asynchronously.
func waitPool(t *testing.T, registry *prometheus.Registry, want float64) {
	t.Helper()
	consultest.Eventually(t, 5*time.Second, func() error {
		mfs, err := registry.Gather()
		if err != nil {
			return err
		}
		for _, mf := range mfs {
			if mf.GetName() == "stringsvc_upstreams" {
				if have := mf.GetMetric()[0].GetGauge().GetValue(); have != want {
					return fmt.Errorf("%v upstreams, want %v", have, want)
				}
				return nil
			}
		}
		return fmt.Errorf("no stringsvc_upstreams")
	})
}

// recorded is the spans of one test, with a way to find them.
type recorded struct {
	t   *testing.T
	exp *tracetest.InMemoryExporter
}

func newRecorded(t *testing.T) (recorded, transport.Tracing) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { tp.Shutdown(context.Background()) })
	return recorded{t, exp}, transport.Tracing{
		Provider:   tp,
		Propagator: propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}),
	}
}

// children returns the spans of trace id whose parent is parent, in the
// order they started.
func (r recorded) children(id trace.TraceID, parent trace.SpanID) []tracetest.SpanStub {
	var out []tracetest.SpanStub
	for _, s := range r.exp.GetSpans() {
		if s.SpanContext.TraceID() == id && s.Parent.SpanID() == parent {
			out = append(out, s)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].StartTime.Before(out[j].StartTime) })
	return out
}

// only returns the one child of parent named name, or fails.
func (r recorded) only(id trace.TraceID, parent trace.SpanID, name string) tracetest.SpanStub {
	r.t.Helper()
	kids := r.children(id, parent)
	if len(kids) != 1 || kids[0].Name != name {
		var names []string
		for _, k := range kids {
			names = append(names, k.Name)
		}
		r.t.Fatalf("under %s: want one span %q, have %q", parent, name, names)
	}
	return kids[0]
}

func hasEvent(s tracetest.SpanStub, name, reason string) bool {
	for _, e := range s.Events {
		if e.Name != name {
			continue
		}
		for _, a := range e.Attributes {
			if string(a.Key) == "reason" && a.Value.AsString() == reason {
				return true
			}
		}
	}
	return false
}

const incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

func post(t *testing.T, h http.Handler, traceparent string) string {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, "/uppercase", strings.NewReader(`{"s":"trace me"}`))
	if traceparent != "" {
		req.Header.Set("traceparent", traceparent)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if w.Code != 200 || w.Body.String() != `{"v":"TRACE ME"}`+"\n" {
		t.Fatalf("want TRACE ME, have %d %s", w.Code, w.Body)
	}
	return w.Body.String()
}

// TestTraceOfAForwardedRequest follows one request that enters member A,
// whose first attempt fails on a broken upstream and whose second is
// served by member B: one trace, continued from the caller's traceparent.
func TestTraceOfAForwardedRequest(t *testing.T) {
	rec, tr := newRecorded(t)
	var logsB syncbuf.Buffer
	hB, _ := memberHandler(t, tr, &logsB)
	b := httptest.NewServer(hB)
	defer b.Close()
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, `{"error":"broken"}`, http.StatusInternalServerError)
	}))
	defer broken.Close()
	var logsA syncbuf.Buffer
	// Round robin over [broken, B], with a budget that allows a retry on
	// every request: the first or the second request starts on broken.
	hA, regA := memberHandler(t, tr, &logsA, "-proxy", broken.URL+","+b.URL, "-proxy.balancer", "roundrobin", "-proxy.retry-min", "1000")
	waitPool(t, regA, 2)

	var root tracetest.SpanStub
	for i := 0; i < 2 && root.Name == ""; i++ {
		rec.exp.Reset()
		post(t, hA, incoming)
		id, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
		caller, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
		server := rec.only(id, caller, "POST /uppercase")
		svc := rec.only(id, server.SpanContext.SpanID(), "stringsvc.uppercase")
		fwd := rec.only(id, svc.SpanContext.SpanID(), "proxy.forward")
		if attempts := rec.children(id, fwd.SpanContext.SpanID()); len(attempts) == 2 {
			root = server
			if attempts[0].Status.Code != codes.Error || attempts[1].Status.Code == codes.Error {
				t.Errorf("attempts: want the first failed and the second not, have %v and %v", attempts[0].Status, attempts[1].Status)
			}
			for _, a := range attempts {
				if a.SpanKind != trace.SpanKindClient || a.Name != "attempt POST /uppercase" {
					t.Errorf("attempt span: want a client span \"attempt POST /uppercase\", have %s %q", a.SpanKind, a.Name)
				}
			}
			// B's server span is a child of the second attempt: the
			// traceparent crossed the hop.
			bServer := rec.only(id, attempts[1].SpanContext.SpanID(), "POST /uppercase")
			if bServer.SpanKind != trace.SpanKindServer {
				t.Errorf("B's span: want a server span, have %s", bServer.SpanKind)
			}
			rec.only(id, bServer.SpanContext.SpanID(), "stringsvc.uppercase")
		}
	}
	if root.Name == "" {
		t.Fatal("no request of two took a retry")
	}
	if root.SpanKind != trace.SpanKindServer || root.Parent.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Errorf("A's server span: want a server span continuing the caller's trace, have %s with parent %v", root.SpanKind, root.Parent)
	}
	// Both members logged the request with the caller's trace ID.
	for name, l := range map[string]string{"A": logsA.String(), "B": logsB.String()} {
		if !strings.Contains(l, "trace_id=4bf92f3577b34da6a3ce929d0e0e4736 span_id=") {
			t.Errorf("%s's request log does not carry the trace: %q", name, l)
		}
	}
}

// TestTraceOfAFallback: with no upstream that answers, the member serves
// locally and says so on its service span; a request without a
// traceparent starts a new trace.
func TestTraceOfAFallback(t *testing.T) {
	rec, tr := newRecorded(t)
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, `{"error":"broken"}`, http.StatusServiceUnavailable)
	}))
	defer broken.Close()
	hA, regA := memberHandler(t, tr, io.Discard, "-proxy", broken.URL)
	waitPool(t, regA, 1)
	post(t, hA, "")
	var server tracetest.SpanStub
	for _, s := range rec.exp.GetSpans() {
		if s.Name == "POST /uppercase" && !s.Parent.IsValid() {
			server = s
		}
	}
	if server.Name == "" {
		t.Fatal("no root server span: a request without traceparent must start a trace")
	}
	id := server.SpanContext.TraceID()
	svc := rec.only(id, server.SpanContext.SpanID(), "stringsvc.uppercase")
	if !hasEvent(svc, "fallback", "upstreams_failed") {
		t.Errorf("want a fallback event with its reason on the service span, have %v", svc.Events)
	}
}

// TestTraceOfABreakerRejection: a call the breaker refuses is an event on
// the balancer's span, with its reason.
func TestTraceOfABreakerRejection(t *testing.T) {
	rec, tr := newRecorded(t)
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, `{"error":"broken"}`, http.StatusInternalServerError)
	}))
	defer broken.Close()
	// One failure opens the breaker; with a single upstream the balancer
	// still tries it (nothing else is there), and the breaker refuses.
	hA, regA := memberHandler(t, tr, io.Discard, "-proxy", broken.URL, "-proxy.breaker-failures", "1", "-proxy.breaker-timeout", "1h")
	waitPool(t, regA, 1)
	// The first request opens the breaker; the second is refused.
	post(t, hA, "")
	rec.exp.Reset()
	post(t, hA, "")
	var rejected bool
	for _, s := range rec.exp.GetSpans() {
		if s.Name == "proxy.forward" && hasEvent(s, "upstream rejected", "breaker_open") {
			rejected = true
		}
	}
	if !rejected {
		t.Errorf("want an \"upstream rejected\" event with reason breaker_open on proxy.forward; spans: %v", names(rec.exp.GetSpans()))
	}
}

func names(spans tracetest.SpanStubs) []string {
	var out []string
	for _, s := range spans {
		var ev []string
		for _, e := range s.Events {
			ev = append(ev, e.Name)
		}
		out = append(out, s.Name+"("+strings.Join(ev, ",")+")")
	}
	return out
}

// TestTraceIDInLogsAcrossMembers: real processes and Consul. A request
// with a known traceparent, sent to an edge and served by a member, leaves
// a log line on both that carries the caller's trace ID.
func TestTraceIDInLogsAcrossMembers(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	agent := consultest.Start(t)
	b := clustertest.StartNode(t, "B", agent.Addr, "-log.requests=true")
	edge := clustertest.StartNode(t, "edge", agent.Addr, "-log.requests=true", "-service.name", "stringsvc-e2e-edge", "-proxy.service", "stringsvc-e2e")
	waitUpstreams(t, 1, edge)
	resp, err := probe.Do(http.MethodPost, "http://"+edge.Addr+"/uppercase", `{"s":"traced"}`, http.Header{"Traceparent": {incoming}})
	if err != nil || resp.Status != 200 {
		t.Fatalf("want 200, have %v %v", resp, err)
	}
	if served := b.Metric(clustertest.ServedUppercase); served != 1 {
		t.Fatalf("B served %v requests, want the one forwarded", served)
	}
	for _, n := range []*clustertest.Node{edge, b} {
		consultest.Eventually(t, 5*time.Second, func() error { // request lines are buffered
			if !strings.Contains(n.Log(), "trace_id=4bf92f3577b34da6a3ce929d0e0e4736 span_id=") {
				return fmt.Errorf("%s has logged no line with the caller's trace ID", n.Name)
			}
			return nil
		})
	}
}

// TestSpansAreFlushedOnShutdown: a member exporting to a real OTLP/HTTP
// receiver serves one request and gets SIGTERM at once, long before the
// exporter's 5s batch timer: the span arrives during the shutdown.
func TestSpansAreFlushedOnShutdown(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	var mu sync.Mutex
	var got []string // trace IDs received
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var req collector.ExportTraceServiceRequest
		if err := proto.Unmarshal(body, &req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		for _, rs := range req.GetResourceSpans() {
			for _, ss := range rs.GetScopeSpans() {
				for _, sp := range ss.GetSpans() {
					got = append(got, hex.EncodeToString(sp.GetTraceId()))
				}
			}
		}
		mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer receiver.Close()
	addr := "127.0.0.1:" + strconv.Itoa(consultest.FreePort(t))
	n := clustertest.StartProcessEnv(t, "exporter", addr, []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + receiver.URL},
		"-http.addr", addr, "-consul.addr", "none", "-shutdown.timeout", "5s")
	resp, err := probe.Do(http.MethodPost, "http://"+addr+"/count", `{"s":"abc"}`, http.Header{"Traceparent": {incoming}})
	if err != nil || resp.Status != 200 {
		t.Fatalf("want 200, have %v %v", resp, err)
	}
	n.Kill(syscall.SIGTERM)
	if err := n.Wait(10 * time.Second); err != nil {
		t.Fatalf("exit: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	var ours int
	for _, id := range got {
		if id == "4bf92f3577b34da6a3ce929d0e0e4736" {
			ours++
		}
	}
	if ours < 2 { // the server span and the service span
		t.Errorf("want the request's spans flushed at shutdown, have %d of trace 4bf9… among %d spans", ours, len(got))
	}
}

// TestExemplarsInOpenMetrics: a recorded request's trace is an exemplar of
// the duration histogram, which /metrics serves when the scraper asks for
// OpenMetrics (Prometheus's text format has no exemplars).
func TestExemplarsInOpenMetrics(t *testing.T) {
	_, tr := newRecorded(t)
	h, _ := memberHandler(t, tr, io.Discard)
	post(t, h, incoming)
	for _, tc := range []struct {
		accept string
		want   bool
	}{
		{"application/openmetrics-text; version=1.0.0", true},
		{"text/plain", false},
	} {
		req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
		req.Header.Set("Accept", tc.accept)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		// An exemplar follows its bucket's value after " # "; its labels
		// come in no fixed order.
		has := false
		for _, line := range strings.Split(w.Body.String(), "\n") {
			if strings.HasPrefix(line, `stringsvc_request_duration_seconds_bucket{error="false",method="uppercase"`) &&
				strings.Contains(line, " # {") && strings.Contains(line, `trace_id="4bf92f3577b34da6a3ce929d0e0e4736"`) {
				has = true
			}
		}
		if has != tc.want {
			t.Errorf("Accept %s: want exemplar %v, have %v (Content-Type %s)", tc.accept, tc.want, has, w.Header().Get("Content-Type"))
		}
	}
}
