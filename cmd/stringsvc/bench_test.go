package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/go-kit/log"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kitmesh/stringsvc/discovery"
	"github.com/kitmesh/stringsvc/service"
	"github.com/kitmesh/stringsvc/transport"
)

// benchStack is the handler stack of run(), with request logging on (to
// io.Discard) and real metrics, optionally forwarding Uppercase to remote.
func benchStack(b *testing.B, remote string) http.Handler {
	b.Helper()
	m := newMetrics(prometheus.NewRegistry())
	logger := log.With(log.NewLogfmtLogger(newLogSink(io.Discard).Buffered()), "ts", log.DefaultTimestampUTC)
	var local service.StringService = service.NewBasicService()
	local = service.LoggingMiddleware(logger)(local)
	local = service.InstrumentingMiddleware(m.requests, m.duration, m.countResult)(local)
	svc := local
	if remote != "" {
		pool := discovery.NewPool(log.NewNopLogger())
		factory := pool.Factory(transport.NewUpstreamFactory(transport.UpstreamOptions{
			Client: &http.Client{Transport: transport.NewHTTPTransport(64)}, RateLimit: 1e9, RateBurst: 1e6,
			BreakerFailures: 5, BreakerTimeout: 5e9,
		}))
		if _, _, err := factory(remote); err != nil {
			b.Fatal(err)
		}
		bal, _ := discovery.NewBalancer("p2c", pool)
		fwd := discovery.Retry(bal, discovery.RetryOptions{Budget: discovery.NewBudget(0.2, 10)})
		svc = service.ProxyingMiddleware(makeForwarder(fwd), m.fallbacks)(local)
	}
	return transport.NewHTTPHandler(transport.MakeServerEndpoints(svc), transport.HandlerOptions{Responses: m.responses})
}

func serveOne(b *testing.B, h http.Handler, path, body string) {
	req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if w.Code != 200 {
		b.Fatalf("status %d: %s", w.Code, w.Body)
	}
}

// BenchmarkLocalCount is the local path: /count served in-process.
func BenchmarkLocalCount(b *testing.B) {
	h := benchStack(b, "")
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		serveOne(b, h, "/count", `{"s":"hello, world"}`)
	}
}

// BenchmarkProxiedUppercase is the proxied path: /uppercase forwarded over
// loopback HTTP to another member's real handler.
func BenchmarkProxiedUppercase(b *testing.B) {
	upstream := httptest.NewServer(benchStack(b, ""))
	defer upstream.Close()
	h := benchStack(b, strings.TrimPrefix(upstream.URL, "http://"))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		serveOne(b, h, "/uppercase", `{"s":"hello, world"}`)
	}
}

// BenchmarkBaselineCount is the plain net/http handler of cmd/bench.
func BenchmarkBaselineCount(b *testing.B) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			S string `json:"s"`
		}
		if err := jsonDecode(r.Body, &req); err != nil {
			http.Error(w, "bad", 400)
			return
		}
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		jsonEncode(w, struct {
			V int `json:"v"`
		}{len(req.S)})
	})
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		serveOne(b, h, "/count", `{"s":"hello, world"}`)
	}
}
