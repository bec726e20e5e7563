package transport

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kitmesh/stringsvc/internal/metricstest"
	"github.com/kitmesh/stringsvc/service"
	"github.com/kitmesh/stringsvc/transport/endpoints"
	"github.com/kitmesh/stringsvc/transport/http1"
)

func TestParseTimeout(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"0", 0, true},
		{"1", time.Millisecond, true},
		{"250", 250 * time.Millisecond, true},
		{"99999999", 99999999 * time.Millisecond, true},
		{"", 0, false},
		{"123456789", 0, false}, // 9 digits
		{"-1", 0, false},
		{"1.5", 0, false},
		{"1s", 0, false},
		{" 5", 0, false},
		{"+5", 0, false},
	}
	for _, tt := range tests {
		have, err := parseTimeout(tt.in)
		if (err == nil) != tt.ok || have != tt.want {
			t.Errorf("%q: want %v ok=%v, have %v err=%v", tt.in, tt.want, tt.ok, have, err)
		}
	}
}

func TestFormatTimeoutRoundsDown(t *testing.T) {
	tests := []struct {
		left time.Duration
		want string
	}{
		{-time.Second, "0"},
		{999 * time.Microsecond, "0"}, // less than a millisecond left: expired on arrival
		{1999 * time.Microsecond, "1"},
		{250 * time.Millisecond, "250"},
		{1000 * time.Hour, "99999999"},
	}
	for _, tt := range tests {
		if have := formatTimeout(tt.left); have != tt.want {
			t.Errorf("%v: want %q, have %q", tt.left, tt.want, have)
		}
	}
}

// deadlineProbe records the deadline of every call and counts them.
type deadlineProbe struct {
	calls chan time.Duration // time left at the call; -1 without a deadline
	service.StringService
}

func (p deadlineProbe) Uppercase(ctx context.Context, s string) (string, error) {
	left := time.Duration(-1)
	if d, ok := ctx.Deadline(); ok {
		left = time.Until(d)
	}
	p.calls <- left
	return strings.ToUpper(s), nil
}

func TestServerAppliesTheCallersDeadline(t *testing.T) {
	probe := deadlineProbe{calls: make(chan time.Duration, 10), StringService: service.NewBasicService()}
	expired := metricstest.NewRecorder()
	srv := httptest.NewServer(NewHTTPHandler(endpoints.New(probe), HandlerOptions{MaxTimeout: 30 * time.Second, Expired: expired}))
	defer srv.Close()
	tests := []struct {
		header   []string // nil: no header
		code     int
		called   bool
		maxLeft  time.Duration
		minLeft  time.Duration
		expireds float64
	}{
		{header: nil, code: 200, called: true, maxLeft: -1, minLeft: -1},
		// Wide bounds: a loaded machine may stall seconds between the
		// header's parse and the call; 5 s still tells milliseconds
		// from seconds or microseconds.
		{header: []string{"10000"}, code: 200, called: true, maxLeft: 10 * time.Second, minLeft: 5 * time.Second},
		{header: []string{"99999999"}, code: 200, called: true, maxLeft: 30 * time.Second, minLeft: 20 * time.Second}, // capped at MaxTimeout
		{header: []string{"0"}, code: 504, expireds: 1},
		{header: []string{"soon"}, code: 400, expireds: 1},
		{header: []string{"5", "6"}, code: 400, expireds: 1},
	}
	for _, tt := range tests {
		h := http.Header{}
		if tt.header != nil {
			h[TimeoutHeader] = tt.header
		}
		code, _, body := do(t, "POST", srv.URL+"/uppercase", `{"s":"a"}`, h)
		if code != tt.code || !strings.Contains(body, `"`) {
			t.Errorf("%v: want %d with a JSON body, have %d %s", tt.header, tt.code, code, body)
		}
		select {
		case left := <-probe.calls:
			switch {
			case !tt.called:
				t.Errorf("%v: want the request dropped unserved, have it served", tt.header)
			case tt.maxLeft < 0 && left != -1:
				t.Errorf("%v: want no deadline, have %v left", tt.header, left)
			case tt.maxLeft >= 0 && (left > tt.maxLeft || left < tt.minLeft):
				t.Errorf("%v: want between %v and %v left, have %v", tt.header, tt.minLeft, tt.maxLeft, left)
			}
		default:
			if tt.called {
				t.Errorf("%v: want it served, have nothing served", tt.header)
			}
		}
		if have := expired.Sum(); have != tt.expireds {
			t.Errorf("%v: want %v expired so far, have %v", tt.header, tt.expireds, have)
		}
	}
}

func TestClientSendsTheRemainingTime(t *testing.T) {
	got := make(chan string, 2)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- strings.Join(r.Header.Values(TimeoutHeader), ",")
		w.Write([]byte(`{"v":"A"}`))
	}))
	defer srv.Close()
	eps, err := MakeClientEndpoints(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := eps.UppercaseEndpoint(context.Background(), endpoints.UppercaseRequest{S: "a"}); err != nil {
		t.Fatal(err)
	}
	if have := <-got; have != "" {
		t.Errorf("without a deadline: want no %s, have %q", TimeoutHeader, have)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := eps.UppercaseEndpoint(ctx, endpoints.UppercaseRequest{S: "a"}); err != nil {
		t.Fatal(err)
	}
	have := <-got
	ms, err := strconv.Atoi(have)
	if err != nil || ms > 10000 || ms < 5000 {
		t.Errorf("with 10s left: want 5000 to 10000 (milliseconds), have %q", have)
	}
}

// BenchmarkDeadline measures what a request's TimeoutHeader costs the
// member that serves it: a context with a deadline (a timer) and a copy
// of the request.
func BenchmarkDeadline(b *testing.B) {
	h := NewHTTPHandler(endpoints.New(service.NewBasicService()), HandlerOptions{})
	for _, header := range []string{"", "250"} {
		name := "without"
		if header != "" {
			name = "with"
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				r := httptest.NewRequest("POST", "/count", strings.NewReader(`{"s":"hello"}`))
				if header != "" {
					r.Header[TimeoutHeader] = []string{header}
				}
				h.ServeHTTP(httptest.NewRecorder(), r)
			}
		})
	}
}

// A peer's 504 is an attempt timeout (context.DeadlineExceeded, with the
// instance's status kept), and its answer is read, so the connection is
// kept: under overload a peer answers 504 to requests whose deadline ended
// their wait, and on the mesh a new connection is a TLS handshake.
func TestPeer504IsATimeoutAndKeepsTheConnection(t *testing.T) {
	var conns atomic.Int64
	// A member's server, as every member's is: it echoes the request's
	// number, without which the mesh client never reuses a connection.
	srv := httptest.NewUnstartedServer(http1.EchoSeq(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		writeError(w, http.StatusGatewayTimeout, "the request's deadline passed while it waited for a slot; not served")
	})))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	eps, err := MakeClientEndpoints(strings.TrimPrefix(srv.URL, "http://"), WithRoundTripper(http1.NewTransport(4)))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		_, err := eps.UppercaseEndpoint(context.Background(), endpoints.UppercaseRequest{S: "a"})
		var ue *UpstreamError
		if !errors.Is(err, context.DeadlineExceeded) || !errors.As(err, &ue) || ue.Status != 504 {
			t.Fatalf("want an UpstreamError 504 that is context.DeadlineExceeded, have %v", err)
		}
	}
	if have := conns.Load(); have != 1 {
		t.Errorf("want one connection for three 504s, have %d", have)
	}
}
