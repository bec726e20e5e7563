package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kitmesh/stringsvc/discovery/consultest"
	"github.com/kitmesh/stringsvc/internal/baseline"
	"github.com/kitmesh/stringsvc/internal/clustertest"
	"github.com/kitmesh/stringsvc/internal/logsink"
	"github.com/kitmesh/stringsvc/internal/member"
	"github.com/kitmesh/stringsvc/internal/poll"
	"github.com/kitmesh/stringsvc/internal/probe"
	"github.com/kitmesh/stringsvc/internal/syncbuf"
	"github.com/kitmesh/stringsvc/internal/telemetry"
	"github.com/kitmesh/stringsvc/transport"
)

// benchMember builds a member with newMember, as run() does, from the
// given flags, with request logging on (to io.Discard) and real metrics. It
// returns the handler and the member's metrics registry.
func benchMember(b *testing.B, args ...string) (http.Handler, *prometheus.Registry) {
	b.Helper()
	return benchMemberTraced(b, transport.Tracing{}, args...)
}

// benchMemberTraced is benchMember with tracing.
func benchMemberTraced(b *testing.B, tr transport.Tracing, args ...string) (http.Handler, *prometheus.Registry) {
	b.Helper()
	return memberHandler(b, tr, logsink.New(io.Discard).Buffered(), args...)
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
	h, _ := benchMember(b)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		serveOne(b, h, "/count", `{"s":"hello, world"}`)
	}
}

// BenchmarkLocalCountTraced is the local path with tracing as a member
// runs it by default: spans and IDs for every request, export off.
func BenchmarkLocalCountTraced(b *testing.B) {
	tr, err := telemetry.NewTracing(context.Background(), func(string) string { return "" }, "stringsvc", "bench", "dev")
	if err != nil {
		b.Fatal(err)
	}
	h, _ := benchMemberTraced(b, tr.Tracing)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		serveOne(b, h, "/count", `{"s":"hello, world"}`)
	}
}

// BenchmarkProxiedUppercase is the proxied path: /uppercase forwarded over
// loopback HTTP to another member's real handler, through a static -proxy
// upstream. It checks that the upstream served every request, so that the
// local fallback cannot hide a broken forward path.
func BenchmarkProxiedUppercase(b *testing.B) {
	upstreamHandler, _ := benchMember(b)
	upstream := httptest.NewServer(upstreamHandler)
	defer upstream.Close()
	upstreamAddr := strings.TrimPrefix(upstream.URL, "http://")
	benchForward(b, upstreamAddr)
}

// benchForward measures /uppercase on a member whose one -proxy upstream
// is upstreamAddr, and checks that the upstream served every request, so
// that the local fallback cannot hide a broken forward path. The
// per-upstream rate limit (5,000/s by default) is a safety valve, not what
// this measures: the benchmark runs faster than that.
func benchForward(b *testing.B, upstreamAddr string, args ...string) {
	h, _ := benchMember(b, append([]string{"-proxy", upstreamAddr, "-proxy.rate", "1e9", "-proxy.burst", "1000000"}, args...)...)
	served := func() float64 {
		v, err := probe.Metric(upstreamAddr, clustertest.ServedUppercase)
		if err != nil {
			b.Fatal(err)
		}
		return v
	}
	before := served()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		serveOne(b, h, "/uppercase", `{"s":"hello, world"}`)
	}
	b.StopTimer()
	if have := served() - before; have != float64(b.N) {
		b.Fatalf("the upstream served %v of %d requests; the rest fell back locally", have, b.N)
	}
}

// BenchmarkForwardingMember is BenchmarkProxiedUppercase with the upstream
// in a process of its own: what it counts is the forwarding member alone,
// the client's request and its own serving included, and the benchmark's
// httptest request and recorder (BenchmarkLocalUppercase has those too).
func BenchmarkForwardingMember(b *testing.B) {
	benchForward(b, startUpstreamProcess(b))
}

// BenchmarkLocalUppercase is /uppercase served in-process by a member
// without upstreams: what BenchmarkForwardingMember adds to it is the
// forward.
func BenchmarkLocalUppercase(b *testing.B) {
	h, _ := benchMember(b)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		serveOne(b, h, "/uppercase", `{"s":"hello, world"}`)
	}
}

// startUpstreamProcess runs this test binary as a member (see TestMain) on
// a free loopback port, without Consul, and returns its address once it
// answers /health. The process is killed when the benchmark ends.
func startUpstreamProcess(b *testing.B) string {
	b.Helper()
	addr := "127.0.0.1:" + strconv.Itoa(consultest.FreePort(b))
	cmd := exec.Command(os.Args[0], "-http.addr", addr, "-consul.addr", member.ConsulNone, "-log.requests=false")
	cmd.Env = append(os.Environ(), asMemberEnv+"=1")
	var out syncbuf.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	err := poll.Until(30*time.Second, 20*time.Millisecond, func() error {
		_, err := probe.Do(http.MethodGet, "http://"+addr+"/health", "", nil)
		return err
	})
	if err != nil {
		b.Fatalf("upstream process: %v\n%s", err, out.String())
	}
	return addr
}

// BenchmarkBaselineCount is the plain net/http handler of the bench (internal/e2e/cmd/bench).
func BenchmarkBaselineCount(b *testing.B) {
	h := baseline.Handler()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		serveOne(b, h, "/count", `{"s":"hello, world"}`)
	}
}
