package service_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/go-kit/log"

	"github.com/kitmesh/stringsvc/internal/metricstest"
	"github.com/kitmesh/stringsvc/service"
)

func TestUppercase(t *testing.T) {
	svc := service.NewBasicService()
	for _, tc := range []struct {
		in, want string
		err      error
	}{
		{"hello, world", "HELLO, WORLD", nil},
		{"ÿé", "ŸÉ", nil},
		{"", "", service.ErrEmpty},
	} {
		have, err := svc.Uppercase(context.Background(), tc.in)
		if have != tc.want || !errors.Is(err, tc.err) {
			t.Errorf("Uppercase(%q): want %q, %v; have %q, %v", tc.in, tc.want, tc.err, have, err)
		}
	}
}

func TestCountIsBytes(t *testing.T) {
	svc := service.NewBasicService()
	for in, want := range map[string]int{"": 0, "hello, world": 12, "é": 2} {
		if have := svc.Count(context.Background(), in); have != want {
			t.Errorf("Count(%q): want %d, have %d", in, want, have)
		}
	}
}

func TestLoggingTruncatesLongValues(t *testing.T) {
	var buf bytes.Buffer
	svc := service.LoggingMiddleware(log.NewLogfmtLogger(&buf), nil)(service.NewBasicService())
	in := strings.Repeat("a", 1<<20)
	if _, err := svc.Uppercase(context.Background(), in); err != nil {
		t.Fatal(err)
	}
	line := buf.String()
	if len(line) > 2*service.MaxLoggedLen+200 {
		t.Errorf("want a log line under %d bytes, have %d", 2*service.MaxLoggedLen+200, len(line))
	}
	if !strings.Contains(line, "more bytes") {
		t.Errorf("want a truncation marker, have %q", line)
	}
	for _, key := range []string{"method=uppercase", "input=", "output=", "err=", "took="} {
		if !strings.Contains(line, key) {
			t.Errorf("want %q in %q", key, line)
		}
	}
}

type ctxKey struct{}

func TestLoggingCarriesContextFields(t *testing.T) {
	var buf bytes.Buffer
	fields := func(ctx context.Context, kv []interface{}) []interface{} {
		if id, ok := ctx.Value(ctxKey{}).(string); ok {
			return append(kv, "trace_id", id)
		}
		return kv
	}
	svc := service.LoggingMiddleware(log.NewLogfmtLogger(&buf), fields)(service.NewBasicService())
	svc.Uppercase(context.WithValue(context.Background(), ctxKey{}, "4bf92f3577b34da6a3ce929d0e0e4736"), "a")
	svc.Count(context.Background(), "a")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "trace_id=4bf92f3577b34da6a3ce929d0e0e4736 method=uppercase") || strings.Contains(lines[1], "trace_id") {
		t.Errorf("want the trace ID on the first line only, have %q", lines)
	}
}

func TestInstrumenting(t *testing.T) {
	requests, latency, counts := metricstest.NewRecorder(), metricstest.NewRecorder(), metricstest.NewRecorder()
	svc := service.InstrumentingMiddleware(requests, latency.Histogram(), counts.Histogram())(service.NewBasicService())
	svc.Uppercase(context.Background(), "a")
	svc.Uppercase(context.Background(), "")
	svc.Uppercase(context.Background(), "b")
	svc.Count(context.Background(), "abcd")
	for _, tc := range []struct {
		lvs  []string
		want float64
	}{
		{[]string{"method", "uppercase", "error", "false"}, 2},
		{[]string{"method", "uppercase", "error", "true"}, 1},
		{[]string{"method", "count", "error", "false"}, 1},
	} {
		if have := requests.Sum(tc.lvs...); have != tc.want {
			t.Errorf("requests %v: want %v, have %v", tc.lvs, tc.want, have)
		}
		if have := len(latency.Values(tc.lvs...)); float64(have) != tc.want {
			t.Errorf("latency observations %v: want %v, have %v", tc.lvs, tc.want, have)
		}
	}
	if have := counts.Sum(); have != 4 {
		t.Errorf("count result: want 4, have %v", have)
	}
}

func TestProxying(t *testing.T) {
	errDown := errors.New("connection refused")
	for _, tc := range []struct {
		name         string
		ctx          context.Context
		in           string
		forward      service.Forwarder
		want         string
		wantErr      error
		wantForwards int
		wantFallback string
		onDenied     service.OnDenied
		mayServe     func(context.Context) error
	}{
		{name: "forwarded answer", ctx: context.Background(), in: "a", forward: func(context.Context, string) (string, error) { return "FROM-PEER", nil }, want: "FROM-PEER", wantForwards: 1},
		{name: "hop header serves locally", ctx: service.WithLocalOnly(context.Background()), in: "a", want: "A", wantForwards: 0},
		{name: "empty string never leaves", ctx: context.Background(), in: "", wantErr: service.ErrEmpty, wantForwards: 0},
		{name: "peer says empty", ctx: context.Background(), in: "a", forward: func(context.Context, string) (string, error) { return "", service.ErrEmpty }, wantErr: service.ErrEmpty, wantForwards: 1},
		{name: "no upstreams falls back", ctx: context.Background(), in: "a", forward: func(context.Context, string) (string, error) { return "", service.ErrNoUpstreams }, want: "A", wantForwards: 1, wantFallback: "no_upstreams"},
		{name: "a member denied serves locally", ctx: context.Background(), in: "a", forward: func(context.Context, string) (string, error) {
			return "", fmt.Errorf("%w: intention", service.ErrDenied)
		}, want: "A", wantForwards: 1, wantFallback: "denied"},
		{name: "an edge denied refuses", ctx: context.Background(), in: "a", onDenied: service.Refuse, forward: func(context.Context, string) (string, error) {
			return "", fmt.Errorf("%w: intention", service.ErrDenied)
		}, wantErr: service.ErrDenied, wantForwards: 1},
		{name: "failed upstreams fall back", ctx: context.Background(), in: "a", forward: func(context.Context, string) (string, error) { return "", errDown }, want: "A", wantForwards: 1, wantFallback: "upstreams_failed"},
		{name: "a member denied past its deadline does not serve", ctx: passedDeadline{context.Background()}, in: "a", forward: func(context.Context, string) (string, error) {
			return "", fmt.Errorf("%w: intention", service.ErrDenied)
		}, wantErr: context.DeadlineExceeded, wantForwards: 1},
		{name: "an edge denied past its deadline still says denied", ctx: passedDeadline{context.Background()}, in: "a", onDenied: service.Refuse, forward: func(context.Context, string) (string, error) {
			return "", fmt.Errorf("%w: intention", service.ErrDenied)
		}, wantErr: service.ErrDenied, wantForwards: 1},
		{name: "a caller past its deadline gets no fallback, timer or not", ctx: passedDeadline{context.Background()}, in: "a", forward: func(context.Context, string) (string, error) { return "", errDown }, wantErr: context.DeadlineExceeded, wantForwards: 1},
		{name: "an edge allowed to serve locally does", ctx: context.Background(), in: "a", onDenied: service.Refuse, mayServe: func(context.Context) error { return nil },
			forward: func(context.Context, string) (string, error) { return "", service.ErrNoUpstreams }, want: "A", wantForwards: 1, wantFallback: "no_upstreams"},
		{name: "an edge under a deny never serves locally", ctx: context.Background(), in: "a", onDenied: service.Refuse, mayServe: func(context.Context) error { return service.ErrDenied },
			forward: func(context.Context, string) (string, error) { return "", service.ErrNoUpstreams }, wantErr: service.ErrDenied, wantForwards: 1},
		{name: "an edge under a deny ignores a caller's hop header", ctx: service.WithLocalOnly(context.Background()), in: "a", onDenied: service.Refuse, mayServe: func(context.Context) error { return service.ErrDenied },
			wantErr: service.ErrDenied, wantForwards: 0},
		{name: "an edge that cannot tell never serves locally", ctx: context.Background(), in: "a", onDenied: service.Refuse, mayServe: func(context.Context) error { return service.ErrUnavailable },
			forward: func(context.Context, string) (string, error) { return "", errDown }, wantErr: service.ErrUnavailable, wantForwards: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			forwards := 0
			fwd := func(ctx context.Context, s string) (string, error) {
				forwards++
				if tc.forward == nil {
					t.Fatalf("forward called for %q", s)
				}
				return tc.forward(ctx, s)
			}
			fallbacks := metricstest.NewRecorder()
			svc := service.ProxyingMiddleware(fwd, service.ProxyOptions{Fallbacks: fallbacks, OnDenied: tc.onDenied, MayServeLocally: tc.mayServe})(service.NewBasicService())
			have, err := svc.Uppercase(tc.ctx, tc.in)
			if have != tc.want || !errors.Is(err, tc.wantErr) {
				t.Errorf("want %q, %v; have %q, %v", tc.want, tc.wantErr, have, err)
			}
			if forwards != tc.wantForwards {
				t.Errorf("forwards: want %d, have %d", tc.wantForwards, forwards)
			}
			for _, reason := range []string{"no_upstreams", "upstreams_failed", "denied"} {
				want := 0.0
				if reason == tc.wantFallback {
					want = 1
				}
				if have := fallbacks.Sum("reason", reason); have != want {
					t.Errorf("fallbacks %s: want %v, have %v", reason, want, have)
				}
			}
		})
	}
}

func TestProxyingCountIsLocal(t *testing.T) {
	fwd := func(context.Context, string) (string, error) { t.Fatal("Count was forwarded"); return "", nil }
	svc := service.ProxyingMiddleware(fwd, service.ProxyOptions{Fallbacks: metricstest.NewRecorder()})(service.NewBasicService())
	if have := svc.Count(context.Background(), "abc"); have != 3 {
		t.Errorf("want 3, have %d", have)
	}
}

func TestDelayMiddleware(t *testing.T) {
	svc := service.DelayMiddleware(time.Hour)(service.NewBasicService())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { _, err := svc.Uppercase(ctx, "a"); done <- err }()
	select {
	case err := <-done:
		// Past the deadline the work is not done: the caller has gone.
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("want context.DeadlineExceeded, have %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("an hour's delay outlived the caller's 20ms deadline")
	}
}

// A cut in the middle of a multi-byte rune would write invalid UTF-8.
func TestLoggingTruncatesOnARuneBoundary(t *testing.T) {
	var input string
	svc := service.LoggingMiddleware(log.LoggerFunc(func(kv ...interface{}) error {
		input = kv[3].(string) // "method", "count", "input", value
		return nil
	}), nil)(service.NewBasicService())
	svc.Count(context.Background(), "a"+strings.Repeat("é", 200)) // byte 256 is inside an é
	if !utf8.ValidString(input) || !strings.HasPrefix(input, "aé") {
		t.Errorf("the logged input is not valid UTF-8: %q", input)
	}
}

// passedDeadline is a context whose deadline has passed but whose timer
// has not fired: Err is still nil, as on a loaded machine.
type passedDeadline struct{ context.Context }

func (passedDeadline) Deadline() (time.Time, bool) { return time.Now().Add(-time.Millisecond), true }
