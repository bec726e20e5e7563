package service_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/go-kit/log"

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
	svc := service.LoggingMiddleware(log.NewLogfmtLogger(&buf))(service.NewBasicService())
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

func TestInstrumenting(t *testing.T) {
	requests, latency, counts := newRecorder(), newRecorder(), newRecorder()
	svc := service.InstrumentingMiddleware(requests, histogram{latency}, histogram{counts})(service.NewBasicService())
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
		if have := requests.sum(tc.lvs...); have != tc.want {
			t.Errorf("requests %v: want %v, have %v", tc.lvs, tc.want, have)
		}
		if have := len(latency.vals[strings.Join(tc.lvs, ",")]); float64(have) != tc.want {
			t.Errorf("latency observations %v: want %v, have %v", tc.lvs, tc.want, have)
		}
	}
	if have := counts.sum(); have != 4 {
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
	}{
		{"forwarded answer", context.Background(), "a", func(context.Context, string) (string, error) { return "FROM-PEER", nil }, "FROM-PEER", nil, 1, ""},
		{"hop header serves locally", service.WithLocalOnly(context.Background()), "a", nil, "A", nil, 0, ""},
		{"empty string never leaves", context.Background(), "", nil, "", service.ErrEmpty, 0, ""},
		{"peer says empty", context.Background(), "a", func(context.Context, string) (string, error) { return "", service.ErrEmpty }, "", service.ErrEmpty, 1, ""},
		{"no upstreams falls back", context.Background(), "a", func(context.Context, string) (string, error) { return "", service.ErrNoUpstreams }, "A", nil, 1, "no_upstreams"},
		{"failed upstreams fall back", context.Background(), "a", func(context.Context, string) (string, error) { return "", errDown }, "A", nil, 1, "upstreams_failed"},
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
			fallbacks := newRecorder()
			svc := service.ProxyingMiddleware(fwd, fallbacks)(service.NewBasicService())
			have, err := svc.Uppercase(tc.ctx, tc.in)
			if have != tc.want || !errors.Is(err, tc.wantErr) {
				t.Errorf("want %q, %v; have %q, %v", tc.want, tc.wantErr, have, err)
			}
			if forwards != tc.wantForwards {
				t.Errorf("forwards: want %d, have %d", tc.wantForwards, forwards)
			}
			for _, reason := range []string{"no_upstreams", "upstreams_failed"} {
				want := 0.0
				if reason == tc.wantFallback {
					want = 1
				}
				if have := fallbacks.sum("reason", reason); have != want {
					t.Errorf("fallbacks %s: want %v, have %v", reason, want, have)
				}
			}
		})
	}
}

func TestProxyingCountIsLocal(t *testing.T) {
	fwd := func(context.Context, string) (string, error) { t.Fatal("Count was forwarded"); return "", nil }
	svc := service.ProxyingMiddleware(fwd, newRecorder())(service.NewBasicService())
	if have := svc.Count(context.Background(), "abc"); have != 3 {
		t.Errorf("want 3, have %d", have)
	}
}
