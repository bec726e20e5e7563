package transport

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-kit/kit/ratelimit"
	"github.com/sony/gobreaker"

	"github.com/kitmesh/stringsvc/service"
)

// statusServer answers every request with code, counting them.
func statusServer(t *testing.T, code int, calls *atomic.Int64) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		if r.Header.Get(HopHeader) == "" {
			t.Errorf("forwarded request without %s", HopHeader)
		}
		w.WriteHeader(code)
		w.Write([]byte(`{"error":"boom"}`))
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func TestUpstreamBreaker(t *testing.T) {
	opts := UpstreamOptions{RateLimit: 1e6, RateBurst: 1000, BreakerFailures: 3, BreakerTimeout: 60e9, Transport: http.DefaultTransport}
	ctx := context.Background()

	t.Run("ErrEmpty does not trip it", func(t *testing.T) {
		srv := newTestServer(t, service.NewBasicService())
		ep, closer, err := NewUpstreamFactory(opts)(strings.TrimPrefix(srv.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 10; i++ {
			resp, err := ep(ctx, UppercaseRequest{S: ""})
			if err != nil {
				t.Fatalf("want ErrEmpty in the response, have error %v", err)
			}
			if r := resp.(UppercaseResponse); !errors.Is(r.Err, service.ErrEmpty) {
				t.Fatalf("want ErrEmpty, have %v", r.Err)
			}
		}
		if u := closer; !u.Available() || u.State() != "closed" {
			t.Errorf("breaker: want closed, have %s", u.State())
		}
	})

	t.Run("5xx trips it", func(t *testing.T) {
		var calls atomic.Int64
		ep, closer, _ := NewUpstreamFactory(opts)(statusServer(t, 503, &calls))
		var upErr *UpstreamError
		for i := 0; i < 3; i++ {
			if _, err := ep(ctx, UppercaseRequest{S: "a"}); !errors.As(err, &upErr) || upErr.Status != 503 {
				t.Fatalf("want an UpstreamError 503, have %v", err)
			}
		}
		if u := closer; u.Available() || u.State() != "open" {
			t.Errorf("breaker: want open, have %s", u.State())
		}
		if _, err := ep(ctx, UppercaseRequest{S: "a"}); !errors.Is(err, gobreaker.ErrOpenState) {
			t.Errorf("want ErrOpenState, have %v", err)
		}
		if have := calls.Load(); have != 3 {
			t.Errorf("calls reaching the upstream: want 3, have %d", have)
		}
	})

	t.Run("rate limit lets the burst through, then limits", func(t *testing.T) {
		var calls atomic.Int64
		o := opts
		// One token per ~12 days: however slow this machine, no token
		// comes back during the loop, so exactly the burst passes.
		o.RateLimit, o.RateBurst = 1e-6, 5
		o.BreakerFailures = 1000
		ep, _, _ := NewUpstreamFactory(o)(statusServer(t, 200, &calls))
		var limited int
		for i := 0; i < 8; i++ {
			if _, err := ep(ctx, UppercaseRequest{S: "a"}); errors.Is(err, ratelimit.ErrLimited) {
				limited++
			}
		}
		if limited != 3 || calls.Load() != 5 {
			t.Errorf("want 3 of 8 limited and 5 sent with burst 5, have %d limited and %d sent", limited, calls.Load())
		}
	})

	t.Run("self is called in-process", func(t *testing.T) {
		o := opts
		o.Self = func() string { return "10.0.0.1:8080" }
		o.Local = MakeUppercaseEndpoint(service.NewBasicService())
		ep, closer, err := NewUpstreamFactory(o)("10.0.0.1:8080")
		if err != nil {
			t.Fatal(err)
		}
		resp, err := ep(ctx, UppercaseRequest{S: "in process"})
		if err != nil || resp.(UppercaseResponse).V != "IN PROCESS" {
			t.Errorf("want IN PROCESS, have %v, %v", resp, err)
		}
		if s := closer.State(); s != "local" {
			t.Errorf("state: want local, have %s", s)
		}
	})
}

func TestUpstreamBreakerEjectsUnreachableAtOnce(t *testing.T) {
	// A port nobody listens on: bind, note it, close.
	srv := httptest.NewServer(http.NotFoundHandler())
	addr := strings.TrimPrefix(srv.URL, "http://")
	srv.Close()
	ep, closer, _ := NewUpstreamFactory(UpstreamOptions{RateLimit: 1e6, RateBurst: 10, BreakerFailures: 5, BreakerTimeout: 60e9, Transport: http.DefaultTransport})(addr)
	if _, err := ep(context.Background(), UppercaseRequest{S: "a"}); err == nil {
		t.Fatal("want a connection error, have none")
	}
	if u := closer; u.State() != "open" {
		t.Errorf("breaker after one refused connection: want open, have %s", u.State())
	}
}

func TestUpstreamBreakerIgnoresCallersWhoHangUp(t *testing.T) {
	arrived := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body) // so the server notices the hang-up
		select {
		case arrived <- struct{}{}:
		default: // the timeouts below: nobody waits for them
		}
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	}))
	defer srv.Close()
	ep, closer, _ := NewUpstreamFactory(UpstreamOptions{RateLimit: 1e6, RateBurst: 10, BreakerFailures: 2, BreakerTimeout: 60e9, Transport: http.DefaultTransport})(strings.TrimPrefix(srv.URL, "http://"))
	for i := 0; i < 5; i++ {
		ctx, cancel := context.WithCancel(context.Background())
		go func() { <-arrived; cancel() }()
		if _, err := ep(ctx, UppercaseRequest{S: "a"}); !errors.Is(err, context.Canceled) {
			t.Fatalf("want context.Canceled, have %v", err)
		}
	}
	if s := closer.State(); s != "closed" {
		t.Errorf("after 5 callers hung up: want the breaker closed, have %s", s)
	}
	// Timeouts, on the other hand, are the instance's slowness.
	for i := 0; i < 2; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
		ep(ctx, UppercaseRequest{S: "a"})
		cancel()
	}
	if s := closer.State(); s != "open" {
		t.Errorf("after 2 timeouts: want the breaker open, have %s", s)
	}
}

func TestUpstreamBreakerEjectsOnDroppedConnection(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Die mid-request, as a killed process does.
		conn, _, _ := w.(http.Hijacker).Hijack()
		conn.Close()
	}))
	defer srv.Close()
	ep, closer, _ := NewUpstreamFactory(UpstreamOptions{RateLimit: 1e6, RateBurst: 10, BreakerFailures: 5, BreakerTimeout: 60e9, Transport: http.DefaultTransport})(strings.TrimPrefix(srv.URL, "http://"))
	if _, err := ep(context.Background(), UppercaseRequest{S: "a"}); err == nil {
		t.Fatal("want an error, have none")
	}
	if s := closer.State(); s != "open" {
		t.Errorf("after one dropped connection: want the breaker open, have %s", s)
	}
}

// A connection lost in the middle of an answer's body ejects at once
// too: the error under the unreadable body keeps its type.
func TestUpstreamBreakerEjectsOnALostBody(t *testing.T) {
	for _, tc := range []struct {
		status string
		reset  bool
	}{
		{"200 OK", false}, {"200 OK", true}, {"400 Bad Request", false}, {"413 Request Entity Too Large", true}, {"500 Internal Server Error", false},
	} {
		name, reset := fmt.Sprint(tc.status, " reset ", tc.reset), tc.reset
		t.Run(name, func(t *testing.T) {
			srv := startRaw(t, 0, func(_ int64, c net.Conn, br *bufio.Reader) {
				_, seq, err := readRequest(br)
				if err != nil {
					return
				}
				io.WriteString(c, "HTTP/1.1 "+tc.status+"\r\n"+SeqHeader+": "+seq+"\r\nContent-Length: 100\r\n\r\n{\"v\":\"")
				if reset {
					c.(*net.TCPConn).SetLinger(0)
				}
			})
			ep, guard, _ := NewUpstreamFactory(UpstreamOptions{RateLimit: 1e6, RateBurst: 10, BreakerFailures: 5, BreakerTimeout: time.Minute, Transport: NewDirectTransport(0)})(srv.ln.Addr().String())
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := ep(ctx, UppercaseRequest{S: "a"})
			if !isConnectionLost(err) {
				t.Errorf("want a lost connection, have %v", err)
			}
			if s := guard.State(); s != "open" {
				t.Errorf("after one answer cut short: want the breaker open, have %s", s)
			}
		})
	}
}

// RateLimit 0 is no limit: the guard stays available and no call is
// refused for its rate, where a limit of one per second with a burst of
// one refuses the second call at once.
func TestUpstreamRateLimitOff(t *testing.T) {
	var calls atomic.Int64
	addr := textServer(t, 200, `{"v":"A"}`, &calls)
	for _, tc := range []struct {
		name    string
		rate    float64
		burst   int
		refused bool
	}{
		{name: "no limit", rate: 0},
		{name: "one a second", rate: 1, burst: 1, refused: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ep, guard, err := NewUpstreamFactory(UpstreamOptions{RateLimit: tc.rate, RateBurst: tc.burst, BreakerFailures: 3, BreakerTimeout: time.Minute, Transport: http.DefaultTransport})(addr)
			if err != nil {
				t.Fatal(err)
			}
			refused := 0
			for range 20 {
				if _, err := ep(context.Background(), UppercaseRequest{S: "a"}); errors.Is(err, ratelimit.ErrLimited) {
					refused++
				}
			}
			if (refused > 0) != tc.refused || guard.Available() == tc.refused {
				t.Errorf("want refused=%v, have %d of 20 refused, available=%v", tc.refused, refused, guard.Available())
			}
		})
	}
}
