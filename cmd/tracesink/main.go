// Command tracesink is a small trace backend for machines that cannot pull
// Jaeger: it receives OTLP/HTTP (protobuf) on /v1/traces and answers the
// part of Jaeger's query API that the compose test and a curl user need:
//
//	GET /api/traces/{traceID}   one trace, in Jaeger's JSON shape
//	GET /api/services           the services that sent spans
//
// It keeps the last -max-spans spans in memory and has no UI. It is the
// offline stand-in of the compose "tracing" profile (TRACES_IMAGE); users
// with a registry get Jaeger v2 itself.
package main

import (
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	collector "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

func main() {
	fs := flag.NewFlagSet("tracesink", flag.ExitOnError)
	otlp := fs.String("otlp.addr", ":4318", "OTLP/HTTP listen address")
	query := fs.String("query.addr", ":16686", "query API listen address")
	maxSpans := fs.Int("max-spans", 100000, "spans kept in memory; the oldest go first")
	fs.Parse(os.Args[1:])

	s := &store{max: *maxSpans}
	errs := make(chan error, 2)
	serve := func(addr string, h http.Handler) {
		srv := &http.Server{Addr: addr, Handler: h, ReadHeaderTimeout: 5 * time.Second}
		errs <- srv.ListenAndServe()
	}
	otlpMux := http.NewServeMux()
	otlpMux.HandleFunc("POST /v1/traces", s.receive)
	queryMux := http.NewServeMux()
	queryMux.HandleFunc("GET /api/traces/{id}", s.trace)
	queryMux.HandleFunc("GET /api/services", s.services)
	queryMux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "tracesink: query API only (/api/traces/{id}, /api/services)")
	})
	go serve(*otlp, otlpMux)
	go serve(*query, queryMux)
	fmt.Fprintf(os.Stderr, "tracesink: OTLP/HTTP on %s, query API on %s\n", *otlp, *query)
	fmt.Fprintln(os.Stderr, "tracesink:", <-errs)
	os.Exit(1)
}

// span is one received span, in the fields Jaeger's JSON shows.
type span struct {
	TraceID, SpanID, ParentID string
	Name, Service, Kind       string
	Instance                  string // service.instance.id
	Start                     time.Time
	Duration                  time.Duration
	Error                     bool
}

type store struct {
	mu    sync.Mutex
	max   int
	spans []span
}

// maxBody bounds one export request.
const maxBody = 16 << 20

func (s *store) receive(w http.ResponseWriter, r *http.Request) {
	if ct := r.Header.Get("Content-Type"); ct != "application/x-protobuf" {
		httpError(w, http.StatusUnsupportedMediaType, "want Content-Type application/x-protobuf, have "+ct)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		httpError(w, http.StatusRequestEntityTooLarge, err.Error())
		return
	}
	var req collector.ExportTraceServiceRequest
	if err := proto.Unmarshal(body, &req); err != nil {
		httpError(w, http.StatusBadRequest, "not an OTLP ExportTraceServiceRequest: "+err.Error())
		return
	}
	var got []span
	for _, rs := range req.GetResourceSpans() {
		service, instance := "unknown", ""
		for _, a := range rs.GetResource().GetAttributes() {
			switch a.GetKey() {
			case "service.name":
				service = a.GetValue().GetStringValue()
			case "service.instance.id":
				instance = a.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, sp := range ss.GetSpans() {
				got = append(got, span{
					TraceID:  hex.EncodeToString(sp.GetTraceId()),
					SpanID:   hex.EncodeToString(sp.GetSpanId()),
					ParentID: hex.EncodeToString(sp.GetParentSpanId()),
					Name:     sp.GetName(),
					Service:  service,
					Instance: instance,
					Kind:     strings.ToLower(strings.TrimPrefix(sp.GetKind().String(), "SPAN_KIND_")),
					Start:    time.Unix(0, int64(sp.GetStartTimeUnixNano())),
					Duration: time.Duration(sp.GetEndTimeUnixNano() - sp.GetStartTimeUnixNano()),
					Error:    sp.GetStatus().GetCode() == tracepb.Status_STATUS_CODE_ERROR,
				})
			}
		}
	}
	s.mu.Lock()
	s.spans = append(s.spans, got...)
	if over := len(s.spans) - s.max; over > 0 {
		s.spans = append([]span(nil), s.spans[over:]...)
	}
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/x-protobuf")
	out, _ := proto.Marshal(&collector.ExportTraceServiceResponse{})
	w.Write(out)
}

// jaegerTrace is the subset of Jaeger's /api/traces answer we fill in.
type jaegerTrace struct {
	TraceID   string                   `json:"traceID"`
	Spans     []jaegerSpan             `json:"spans"`
	Processes map[string]jaegerProcess `json:"processes"`
}

type jaegerSpan struct {
	TraceID       string         `json:"traceID"`
	SpanID        string         `json:"spanID"`
	OperationName string         `json:"operationName"`
	References    []jaegerRef    `json:"references"`
	StartTime     int64          `json:"startTime"` // µs
	Duration      int64          `json:"duration"`  // µs
	ProcessID     string         `json:"processID"`
	Tags          []jaegerKeyVal `json:"tags"`
}

type jaegerRef struct {
	RefType string `json:"refType"`
	TraceID string `json:"traceID"`
	SpanID  string `json:"spanID"`
}

type jaegerKeyVal struct {
	Key   string      `json:"key"`
	Type  string      `json:"type"`
	Value interface{} `json:"value"`
}

type jaegerProcess struct {
	ServiceName string         `json:"serviceName"`
	Tags        []jaegerKeyVal `json:"tags"`
}

func (s *store) trace(w http.ResponseWriter, r *http.Request) {
	id := strings.ToLower(r.PathValue("id"))
	if b, err := hex.DecodeString(id); err != nil || len(b) != 16 {
		httpError(w, http.StatusBadRequest, "trace ID: want 32 hex digits")
		return
	}
	t := jaegerTrace{TraceID: id, Processes: map[string]jaegerProcess{}}
	pids := map[string]string{}
	s.mu.Lock()
	for _, sp := range s.spans {
		if sp.TraceID != id {
			continue
		}
		key := sp.Service + "\x00" + sp.Instance
		pid, ok := pids[key]
		if !ok {
			pid = fmt.Sprintf("p%d", len(pids)+1)
			pids[key] = pid
			p := jaegerProcess{ServiceName: sp.Service, Tags: []jaegerKeyVal{}}
			if sp.Instance != "" {
				p.Tags = append(p.Tags, jaegerKeyVal{Key: "service.instance.id", Type: "string", Value: sp.Instance})
			}
			t.Processes[pid] = p
		}
		js := jaegerSpan{
			TraceID: id, SpanID: sp.SpanID, OperationName: sp.Name, ProcessID: pid,
			StartTime: sp.Start.UnixMicro(), Duration: sp.Duration.Microseconds(),
			References: []jaegerRef{},
			Tags:       []jaegerKeyVal{{Key: "span.kind", Type: "string", Value: sp.Kind}},
		}
		if sp.ParentID != "" {
			js.References = append(js.References, jaegerRef{RefType: "CHILD_OF", TraceID: id, SpanID: sp.ParentID})
		}
		if sp.Error {
			js.Tags = append(js.Tags, jaegerKeyVal{Key: "error", Type: "bool", Value: true})
		}
		t.Spans = append(t.Spans, js)
	}
	s.mu.Unlock()
	if len(t.Spans) == 0 {
		httpError(w, http.StatusNotFound, "trace not found")
		return
	}
	sort.Slice(t.Spans, func(i, j int) bool { return t.Spans[i].StartTime < t.Spans[j].StartTime })
	writeJSON(w, http.StatusOK, map[string]interface{}{"data": []jaegerTrace{t}})
}

func (s *store) services(w http.ResponseWriter, _ *http.Request) {
	set := map[string]bool{}
	s.mu.Lock()
	for _, sp := range s.spans {
		set[sp.Service] = true
	}
	s.mu.Unlock()
	list := []string{}
	for name := range set {
		list = append(list, name)
	}
	sort.Strings(list)
	writeJSON(w, http.StatusOK, map[string]interface{}{"data": list, "total": len(list)})
}

func writeJSON(w http.ResponseWriter, code int, v interface{}) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// httpError answers in Jaeger's error shape.
func httpError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]interface{}{"data": nil, "errors": []map[string]interface{}{{"code": code, "msg": msg}}})
}
