package client

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

	"github.com/kitmesh/stringsvc/internal/poll"
	"github.com/kitmesh/stringsvc/internal/probe"
	"github.com/kitmesh/stringsvc/service"
	"github.com/kitmesh/stringsvc/transport"
	"github.com/kitmesh/stringsvc/transport/endpoints"
	"github.com/kitmesh/stringsvc/transport/http1"
)

// statusServer answers every request with code, counting them.
func statusServer(t *testing.T, code int, calls *atomic.Int64) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		if r.Header.Get(transport.HopHeader) == "" {
			t.Errorf("forwarded request without %s", transport.HopHeader)
		}
		w.WriteHeader(code)
		w.Write([]byte(`{"error":"boom"}`))
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func TestUpstreamBreaker(t *testing.T) {
	opts := UpstreamOptions{Forwarded: true, RateLimit: 1e6, RateBurst: 1000, BreakerFailures: 3, BreakerTimeout: 60e9, Transport: http.DefaultTransport}
	ctx := context.Background()

	t.Run("ErrEmpty does not trip it", func(t *testing.T) {
		srv := httptest.NewServer(transport.NewHTTPHandler(endpoints.New(service.NewBasicService()), transport.HandlerOptions{}))
		t.Cleanup(srv.Close)
		ep, closer, err := NewUpstreamFactory(opts)(strings.TrimPrefix(srv.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 10; i++ {
			resp, err := ep(ctx, endpoints.UppercaseRequest{S: ""})
			if err != nil {
				t.Fatalf("want ErrEmpty in the response, have error %v", err)
			}
			if r := resp.(endpoints.UppercaseResponse); !errors.Is(r.Err, service.ErrEmpty) {
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
		var upErr *transport.UpstreamError
		for i := 0; i < 3; i++ {
			if _, err := ep(ctx, endpoints.UppercaseRequest{S: "a"}); !errors.As(err, &upErr) || upErr.Status != 503 {
				t.Fatalf("want an transport.UpstreamError 503, have %v", err)
			}
		}
		if u := closer; u.Available() || u.State() != "open" {
			t.Errorf("breaker: want open, have %s", u.State())
		}
		if _, err := ep(ctx, endpoints.UppercaseRequest{S: "a"}); !errors.Is(err, gobreaker.ErrOpenState) {
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
			if _, err := ep(ctx, endpoints.UppercaseRequest{S: "a"}); errors.Is(err, ratelimit.ErrLimited) {
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
		o.Local = endpoints.MakeUppercaseEndpoint(service.NewBasicService())
		ep, closer, err := NewUpstreamFactory(o)("10.0.0.1:8080")
		if err != nil {
			t.Fatal(err)
		}
		resp, err := ep(ctx, endpoints.UppercaseRequest{S: "in process"})
		if err != nil || resp.(endpoints.UppercaseResponse).V != "IN PROCESS" {
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
	ep, closer, _ := NewUpstreamFactory(UpstreamOptions{Forwarded: true, RateLimit: 1e6, RateBurst: 10, BreakerFailures: 5, BreakerTimeout: 60e9, Transport: http.DefaultTransport})(addr)
	if _, err := ep(context.Background(), endpoints.UppercaseRequest{S: "a"}); err == nil {
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
	ep, closer, _ := NewUpstreamFactory(UpstreamOptions{Forwarded: true, RateLimit: 1e6, RateBurst: 10, BreakerFailures: 2, BreakerTimeout: 60e9, Transport: http.DefaultTransport})(strings.TrimPrefix(srv.URL, "http://"))
	for i := 0; i < 5; i++ {
		ctx, cancel := context.WithCancel(context.Background())
		go func() { <-arrived; cancel() }()
		if _, err := ep(ctx, endpoints.UppercaseRequest{S: "a"}); !errors.Is(err, context.Canceled) {
			t.Fatalf("want context.Canceled, have %v", err)
		}
	}
	if s := closer.State(); s != "closed" {
		t.Errorf("after 5 callers hung up: want the breaker closed, have %s", s)
	}
	// Timeouts, on the other hand, are the instance's slowness.
	for i := 0; i < 2; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
		ep(ctx, endpoints.UppercaseRequest{S: "a"})
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
	ep, closer, _ := NewUpstreamFactory(UpstreamOptions{Forwarded: true, RateLimit: 1e6, RateBurst: 10, BreakerFailures: 5, BreakerTimeout: 60e9, Transport: http.DefaultTransport})(strings.TrimPrefix(srv.URL, "http://"))
	if _, err := ep(context.Background(), endpoints.UppercaseRequest{S: "a"}); err == nil {
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
			addr := rawServer(t, func(c net.Conn, br *bufio.Reader) {
				req, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				seq := req.Header.Get(http1.SeqHeader)
				io.WriteString(c, "HTTP/1.1 "+tc.status+"\r\n"+http1.SeqHeader+": "+seq+"\r\nContent-Length: 100\r\n\r\n{\"v\":\"")
				if reset {
					c.(*net.TCPConn).SetLinger(0)
				}
			})
			ep, guard, _ := NewUpstreamFactory(UpstreamOptions{Forwarded: true, RateLimit: 1e6, RateBurst: 10, BreakerFailures: 5, BreakerTimeout: time.Minute, Transport: http1.NewTransport(0)})(addr)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := ep(ctx, endpoints.UppercaseRequest{S: "a"})
			if !http1.ConnectionLost(err) {
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
			ep, guard, err := NewUpstreamFactory(UpstreamOptions{Forwarded: true, RateLimit: tc.rate, RateBurst: tc.burst, BreakerFailures: 3, BreakerTimeout: time.Minute, Transport: http.DefaultTransport})(addr)
			if err != nil {
				t.Fatal(err)
			}
			refused := 0
			for range 20 {
				if _, err := ep(context.Background(), endpoints.UppercaseRequest{S: "a"}); errors.Is(err, ratelimit.ErrLimited) {
					refused++
				}
			}
			if (refused > 0) != tc.refused || guard.Available() == tc.refused {
				t.Errorf("want refused=%v, have %d of 20 refused, available=%v", tc.refused, refused, guard.Available())
			}
		})
	}
}

// textServer answers every request with code and body, counting them.
func textServer(t *testing.T, code int, body string, calls *atomic.Int64) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		io.WriteString(w, body)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// An upstream's 4xx is the request's own fault: it comes back as the
// response, for the client, and never reaches the breaker.
func TestUpstream4xxIsTheRequestsOwnFault(t *testing.T) {
	for _, code := range []int{400, 404, 405, 413} {
		var calls atomic.Int64
		body := `{"error":"what was wrong"}` + "\n"
		ep, guard, _ := NewUpstreamFactory(UpstreamOptions{Forwarded: true, RateLimit: 1e6, RateBurst: 1000, BreakerFailures: 3, BreakerTimeout: time.Minute, Transport: http.DefaultTransport})(textServer(t, code, body, &calls))
		for i := 0; i < 10; i++ {
			resp, err := ep(context.Background(), endpoints.UppercaseRequest{S: "a"})
			if err != nil {
				t.Fatalf("%d: want the answer as a response, have error %v", code, err)
			}
			var re *transport.RequestError
			if r := resp.(endpoints.UppercaseResponse); !errors.As(r.Err, &re) || re.Status != code || string(re.Body) != body {
				t.Fatalf("%d: want a transport.RequestError with the upstream's status and body, have %#v", code, r.Err)
			}
			if !errors.Is(resp.(endpoints.UppercaseResponse).Err, service.ErrInvalidRequest) {
				t.Fatalf("%d: want it to be service.ErrInvalidRequest", code)
			}
		}
		if s := guard.State(); s != "closed" {
			t.Errorf("%d ten times: want the breaker closed, have %s", code, s)
		}
	}
}

// 429 and 503 are load signals: failures of the instance, retried elsewhere.
func TestUpstreamLoadSignalsAreFailures(t *testing.T) {
	for _, code := range []int{429, 503} {
		var calls atomic.Int64
		ep, guard, _ := NewUpstreamFactory(UpstreamOptions{Forwarded: true, RateLimit: 1e6, RateBurst: 1000, BreakerFailures: 3, BreakerTimeout: time.Minute, Transport: http.DefaultTransport})(textServer(t, code, `{"error":"busy"}`, &calls))
		for i := 0; i < 3; i++ {
			var ue *transport.UpstreamError
			if _, err := ep(context.Background(), endpoints.UppercaseRequest{S: "a"}); !errors.As(err, &ue) || ue.Status != code {
				t.Fatalf("%d: want an transport.UpstreamError, have %v", code, err)
			}
		}
		if s := guard.State(); s != "open" {
			t.Errorf("%d three times: want the breaker open, have %s", code, s)
		}
	}
}

// A forward carries the string the member decoded, encoded with the
// fewest escapes: never the client's bytes, and never longer than them.
func TestForwardsTheDecodedString(t *testing.T) {
	var got atomic.Value
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got.Store(string(b))
		io.WriteString(w, `{"v":"OK"}`)
	}))
	defer upstream.Close()
	ep, _, _ := NewUpstreamFactory(UpstreamOptions{Forwarded: true, RateLimit: 1e6, RateBurst: 1000, BreakerFailures: 3, BreakerTimeout: time.Minute, Transport: http.DefaultTransport})(strings.TrimPrefix(upstream.URL, "http://"))
	// The entry member: its service forwards every Uppercase through ep.
	entry := httptest.NewServer(transport.NewHTTPHandler(endpoints.New(forwarding{ep}), transport.HandlerOptions{}))
	defer entry.Close()

	for _, tc := range []struct{ body, want string }{
		{`{"s":"` + strings.Repeat("<&>", 1000) + `"}`, `{"s":"` + strings.Repeat("<&>", 1000) + `"}`},
		{`{ "s" : "spaced \u00e9 \/ \u0001", "extra": [1, 2] }`, `{"s":"spaced é / \u0001"}`},
		{"{\"s\":\"\u2028\\t\"}", "{\"s\":\"\u2028\\t\"}"},
	} {
		if code, resp := post(t, entry.URL+"/uppercase", tc.body); code != 200 || resp != `{"v":"OK"}`+"\n" {
			t.Errorf("want 200 OK, have %d %s", code, resp)
		}
		have, _ := got.Load().(string)
		if have != tc.want {
			t.Errorf("upstream got %.60q, want %.60q", have, tc.want)
		}
		if len(have) > len(tc.body) {
			t.Errorf("the forward grew from the client's %d bytes to %d", len(tc.body), len(have))
		}
	}
}

// forwarding is a service whose Uppercase calls ep, as the proxying
// middleware does through the balancer.
type forwarding struct {
	ep func(context.Context, interface{}) (interface{}, error)
}

func (f forwarding) Uppercase(ctx context.Context, s string) (string, error) {
	resp, err := f.ep(ctx, endpoints.UppercaseRequest{S: s})
	if err != nil {
		return "", err
	}
	r := resp.(endpoints.UppercaseResponse)
	return r.V, r.Err
}

func (f forwarding) Count(_ context.Context, s string) int { return len(s) }

// An upstream's 4xx reaches the client as the upstream sent it.
func TestUpstream4xxPassesThrough(t *testing.T) {
	var calls atomic.Int64
	body := `{"error":"request body is larger than 10 bytes"}` + "\n"
	ep, _, _ := NewUpstreamFactory(UpstreamOptions{Forwarded: true, RateLimit: 1e6, RateBurst: 1000, BreakerFailures: 3, BreakerTimeout: time.Minute, Transport: http.DefaultTransport})(textServer(t, 413, body, &calls))
	entry := httptest.NewServer(transport.NewHTTPHandler(endpoints.New(forwarding{ep}), transport.HandlerOptions{}))
	defer entry.Close()
	if code, resp := post(t, entry.URL+"/uppercase", `{"s":"abc"}`); code != 413 || resp != body {
		t.Errorf("want the upstream's 413 %q, have %d %q", body, code, resp)
	}
}

// What an upstream says about a failure is cut to about 256 bytes before
// anyone logs it.
func TestUpstreamErrorTextIsBounded(t *testing.T) {
	var calls atomic.Int64
	long := strings.Repeat("é", 4000) // 2-byte runes, so a cut can split one
	ep, _, _ := NewUpstreamFactory(UpstreamOptions{Forwarded: true, RateLimit: 1e6, RateBurst: 1000, BreakerFailures: 3, BreakerTimeout: time.Minute, Transport: http.DefaultTransport})(textServer(t, 500, `{"error":"`+long+`"}`, &calls))
	_, err := ep(context.Background(), endpoints.UppercaseRequest{S: "a"})
	var ue *transport.UpstreamError
	if !errors.As(err, &ue) {
		t.Fatalf("want an transport.UpstreamError, have %v", err)
	}
	if len(ue.Msg) > 300 || !strings.HasPrefix(ue.Msg, "éé") || !isValidUTF8(ue.Msg) {
		t.Errorf("want at most ~256 bytes of valid UTF-8, have %d bytes", len(ue.Msg))
	}
	if have := http1.NewTransport(0).MaxResponseHeaderBytes; have <= 0 || have > 64<<10 {
		t.Errorf("MaxResponseHeaderBytes: want a small limit, have %d", have)
	}
}

func isValidUTF8(s string) bool { return strings.ToValidUTF8(s, "\uFFFD") == s }

// switchServer fails (500) or hangs until the caller goes, as told. A
// request that hangs is announced on arrived.
func switchServer(t *testing.T, hang *atomic.Bool, arrived chan<- struct{}) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if hang.Load() {
			arrived <- struct{}{}
			<-r.Context().Done()
			return
		}
		w.WriteHeader(500)
		io.WriteString(w, `{"error":"boom"}`)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// cancelled calls ep with a context that the caller cancels once the
// request arrived at the server.
func cancelled(ep func(context.Context, interface{}) (interface{}, error), arrived <-chan struct{}) error {
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-arrived; cancel() }()
	_, err := ep(ctx, endpoints.UppercaseRequest{S: "a"})
	return err
}

// A trial request in half-open state whose caller hangs up proves nothing
// about a hung upstream: the breaker opens again instead of closing.
func TestBreakerCancelledTrialReopens(t *testing.T) {
	var hang atomic.Bool
	arrived := make(chan struct{}, 1)
	ep, guard, _ := NewUpstreamFactory(UpstreamOptions{Forwarded: true, RateLimit: 1e6, RateBurst: 1000, BreakerFailures: 1, BreakerTimeout: time.Second, Transport: http.DefaultTransport})(switchServer(t, &hang, arrived))
	ep(context.Background(), endpoints.UppercaseRequest{S: "a"})
	// A second's timeout: State() reads the clock, and a shorter one
	// could pass between the call and the check on a loaded machine.
	if s := guard.State(); s != "open" {
		t.Fatalf("after a failure: want open, have %s", s)
	}
	if err := poll.Until(10*time.Second, 10*time.Millisecond, func() error {
		if s := guard.State(); s != "half-open" {
			return fmt.Errorf("breaker %s, want half-open", s)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	hang.Store(true)
	if err := cancelled(ep, arrived); !errors.Is(err, context.Canceled) {
		t.Fatalf("trial: want context.Canceled, have %v", err)
	}
	if s := guard.State(); s != "open" {
		t.Errorf("after a cancelled trial: want open, have %s", s)
	}
}

// While closed, a caller hanging up is neither a success nor a failure: it
// does not reset the count of consecutive failures.
func TestBreakerCancellationIsNeutralWhileClosed(t *testing.T) {
	var hang atomic.Bool
	arrived := make(chan struct{}, 1)
	ep, guard, _ := NewUpstreamFactory(UpstreamOptions{Forwarded: true, RateLimit: 1e6, RateBurst: 1000, BreakerFailures: 3, BreakerTimeout: time.Minute, Transport: http.DefaultTransport})(switchServer(t, &hang, arrived))
	for i := 0; i < 2; i++ {
		ep(context.Background(), endpoints.UppercaseRequest{S: "a"})
	}
	hang.Store(true)
	cancelled(ep, arrived)
	hang.Store(false)
	if s := guard.State(); s != "closed" {
		t.Fatalf("after 2 failures and a cancellation: want closed, have %s", s)
	}
	ep(context.Background(), endpoints.UppercaseRequest{S: "a"})
	if s := guard.State(); s != "open" {
		t.Errorf("after a 3rd failure: want open, have %s", s)
	}
}

// post sends body to url and returns the answer's status and body.
func post(t *testing.T, url, body string) (int, string) {
	t.Helper()
	resp, err := probe.Do(http.MethodPost, url, body, nil)
	if err != nil {
		t.Fatal(err)
	}
	return resp.Status, resp.Body
}

// rawServer serves every connection with handle, which writes raw bytes,
// and closes the connection after it.
func rawServer(t *testing.T, handle func(c net.Conn, br *bufio.Reader)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c, bufio.NewReader(c))
			}()
		}
	}()
	return ln.Addr().String()
}
