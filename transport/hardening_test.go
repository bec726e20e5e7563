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

	"github.com/kitmesh/stringsvc/internal/metricstest"
	"github.com/kitmesh/stringsvc/internal/poll"
	"github.com/kitmesh/stringsvc/service"
)

// Regression tests of the hardening issue, one per defect of the
// transport. Each failed on the code before its fix.

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
		ep, guard, _ := NewUpstreamFactory(UpstreamOptions{RateLimit: 1e6, RateBurst: 1000, BreakerFailures: 3, BreakerTimeout: time.Minute, Transport: http.DefaultTransport})(textServer(t, code, body, &calls))
		for i := 0; i < 10; i++ {
			resp, err := ep(context.Background(), UppercaseRequest{S: "a"})
			if err != nil {
				t.Fatalf("%d: want the answer as a response, have error %v", code, err)
			}
			var re *RequestError
			if r := resp.(UppercaseResponse); !errors.As(r.Err, &re) || re.Status != code || string(re.Body) != body {
				t.Fatalf("%d: want a RequestError with the upstream's status and body, have %#v", code, r.Err)
			}
			if !errors.Is(resp.(UppercaseResponse).Err, service.ErrInvalidRequest) {
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
		ep, guard, _ := NewUpstreamFactory(UpstreamOptions{RateLimit: 1e6, RateBurst: 1000, BreakerFailures: 3, BreakerTimeout: time.Minute, Transport: http.DefaultTransport})(textServer(t, code, `{"error":"busy"}`, &calls))
		for i := 0; i < 3; i++ {
			var ue *UpstreamError
			if _, err := ep(context.Background(), UppercaseRequest{S: "a"}); !errors.As(err, &ue) || ue.Status != code {
				t.Fatalf("%d: want an UpstreamError, have %v", code, err)
			}
		}
		if s := guard.State(); s != "open" {
			t.Errorf("%d three times: want the breaker open, have %s", code, s)
		}
	}
}

// The client's own bytes go to the upstream: no re-encoding, so nothing
// grows past the upstream's body limit on the way.
func TestForwardsTheClientsBytes(t *testing.T) {
	var got atomic.Value
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got.Store(string(b))
		io.WriteString(w, `{"v":"OK"}`)
	}))
	defer upstream.Close()
	ep, _, _ := NewUpstreamFactory(UpstreamOptions{RateLimit: 1e6, RateBurst: 1000, BreakerFailures: 3, BreakerTimeout: time.Minute, Transport: http.DefaultTransport})(strings.TrimPrefix(upstream.URL, "http://"))
	// The entry member: its service forwards every Uppercase through ep.
	entry := httptest.NewServer(NewHTTPHandler(MakeServerEndpoints(forwarding{ep}), HandlerOptions{}))
	defer entry.Close()

	for _, body := range []string{
		`{"s":"` + strings.Repeat("<&>", 1000) + `"}`,
		"{\"s\":\"\xff\xfe invalid UTF-8\", \"extra\": [1, 2]}",
		`{ "s" : "spaced \u00e9" }`,
	} {
		if code, _, resp := do(t, "POST", entry.URL+"/uppercase", body, nil); code != 200 || resp != `{"v":"OK"}`+"\n" {
			t.Errorf("want 200 OK, have %d %s", code, resp)
		}
		if have, _ := got.Load().(string); have != body {
			t.Errorf("upstream got %d bytes %.40q, want the client's %d bytes %.40q", len(have), have, len(body), body)
		}
	}
}

// forwarding is a service whose Uppercase calls ep, as the proxying
// middleware does through the balancer.
type forwarding struct {
	ep func(context.Context, interface{}) (interface{}, error)
}

func (f forwarding) Uppercase(ctx context.Context, s string) (string, error) {
	resp, err := f.ep(ctx, UppercaseRequest{S: s})
	if err != nil {
		return "", err
	}
	r := resp.(UppercaseResponse)
	return r.V, r.Err
}
func (f forwarding) Count(_ context.Context, s string) int { return len(s) }

// An upstream's 4xx reaches the client as the upstream sent it.
func TestUpstream4xxPassesThrough(t *testing.T) {
	var calls atomic.Int64
	body := `{"error":"request body is larger than 10 bytes"}` + "\n"
	ep, _, _ := NewUpstreamFactory(UpstreamOptions{RateLimit: 1e6, RateBurst: 1000, BreakerFailures: 3, BreakerTimeout: time.Minute, Transport: http.DefaultTransport})(textServer(t, 413, body, &calls))
	entry := httptest.NewServer(NewHTTPHandler(MakeServerEndpoints(forwarding{ep}), HandlerOptions{}))
	defer entry.Close()
	if code, _, resp := do(t, "POST", entry.URL+"/uppercase", `{"s":"abc"}`, nil); code != 413 || resp != body {
		t.Errorf("want the upstream's 413 %q, have %d %q", body, code, resp)
	}
}

func TestResponsesAreNotHTMLEscaped(t *testing.T) {
	srv := newTestServer(t, service.NewBasicService())
	if code, _, body := do(t, "POST", srv.URL+"/uppercase", `{"s":"<a&b>"}`, nil); code != 200 || body != `{"v":"<A&B>"}`+"\n" {
		t.Errorf(`want 200 {"v":"<A&B>"}, have %d %s`, code, body)
	}
}

// blocking is a service whose calls wait until release is closed.
type blocking struct {
	entered chan struct{}
	release chan struct{}
}

func (b blocking) Uppercase(_ context.Context, s string) (string, error) {
	b.entered <- struct{}{}
	<-b.release
	return strings.ToUpper(s), nil
}
func (b blocking) Count(_ context.Context, s string) int { return len(s) }

// Past the in-flight cap a request gets 503 and Retry-After before its body
// is read: a body that never ends still gets its answer.
func TestInFlightCap(t *testing.T) {
	svc := blocking{entered: make(chan struct{}, 2), release: make(chan struct{})}
	responses := metricstest.NewRecorder()
	srv := httptest.NewServer(NewHTTPHandler(MakeServerEndpoints(svc), HandlerOptions{MaxInFlight: 1, Responses: responses}))
	defer srv.Close()
	var released atomic.Bool
	release := func() {
		if !released.Swap(true) {
			close(svc.release)
		}
	}
	defer release()
	first := make(chan int, 1)
	go func() {
		code, _, _ := do(t, "POST", srv.URL+"/uppercase", `{"s":"a"}`, nil)
		first <- code
	}()
	<-svc.entered

	pr, pw := io.Pipe() // a body that never ends
	defer pw.Close()
	req, _ := http.NewRequest("POST", srv.URL+"/count", pr)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := http.DefaultTransport.RoundTrip(req.WithContext(ctx))
	if err != nil {
		pw.CloseWithError(err)
		t.Fatalf("past the cap: want a 503, have %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" || !strings.Contains(string(b), `"error":`) {
		t.Errorf("past the cap: want 503 with Retry-After and a JSON error, have %d %q %s", resp.StatusCode, resp.Header.Get("Retry-After"), b)
	}
	if !resp.Close {
		t.Error("past the cap with a body of unknown length: want Connection: close, so that its body is never waited for")
	}
	if code, _, _ := do(t, "GET", srv.URL+"/health", "", nil); code != 200 {
		t.Errorf("/health past the cap: want 200, have %d", code)
	}
	// A shed request with a small body keeps its connection, so that
	// overload does not turn into handshakes: the next request on the
	// same socket is answered.
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(conn, "POST /count HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\n{\"s\":\"a\"}")
	br := bufio.NewReader(conn)
	shed, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("shed on a raw socket: %v", err)
	}
	io.Copy(io.Discard, shed.Body)
	if shed.StatusCode != 503 || shed.Close {
		t.Errorf("shed with a small body: want 503 keeping the connection, have %d close=%v", shed.StatusCode, shed.Close)
	}
	io.WriteString(conn, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
	if next, err := http.ReadResponse(br, nil); err != nil || next.StatusCode != 200 {
		t.Errorf("the next request on the shed's connection: want 200, have %v %v", next, err)
	}
	release()
	if code := <-first; code != 200 {
		t.Errorf("the request within the cap: want 200, have %d", code)
	}
	if have := responses.Sum("path", "/count", "code", "503"); have != 2 {
		t.Errorf("503s counted: want 2, have %v", have)
	}
}

// failingWriter is a ResponseWriter whose client went away: every Write
// fails. It counts the WriteHeader calls.
type failingWriter struct {
	header  http.Header
	headers int
	code    int
}

func (w *failingWriter) Header() http.Header { return w.header }
func (w *failingWriter) WriteHeader(code int) {
	w.headers++
	if w.headers == 1 {
		w.code = code
	}
}
func (w *failingWriter) Write([]byte) (int, error) {
	if w.headers == 0 {
		w.WriteHeader(200)
	}
	return 0, errors.New("write: broken pipe")
}

// A client that hangs up during the response is a 499, and no error is
// encoded over a header already sent.
func TestClientGoneDuringResponse(t *testing.T) {
	responses := metricstest.NewRecorder()
	h := NewHTTPHandler(MakeServerEndpoints(service.NewBasicService()), HandlerOptions{Responses: responses})
	w := &failingWriter{header: http.Header{}}
	h.ServeHTTP(w, httptest.NewRequest("POST", "/uppercase", strings.NewReader(`{"s":"a"}`)))
	if w.headers != 1 || w.code != 200 {
		t.Errorf("WriteHeader: want once with 200, have %d times (first %d)", w.headers, w.code)
	}
	if have := responses.Sum("path", "/uppercase", "code", "499"); have != 1 {
		t.Errorf("want the answer counted as 499, have 499=%v 500=%v", have, responses.Sum("path", "/uppercase", "code", "500"))
	}
}

// With response metrics on, a 413 still closes the connection, as
// http.MaxBytesReader asks: the rest of the body is never read.
func TestTooLargeClosesTheConnection(t *testing.T) {
	srv := httptest.NewServer(NewHTTPHandler(MakeServerEndpoints(service.NewBasicService()), HandlerOptions{MaxBodyBytes: 1024, Responses: metricstest.NewRecorder()}))
	defer srv.Close()
	conn, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body := `{"s":"` + strings.Repeat("a", 4096) + `"}`
	fmt.Fprintf(conn, "POST /count HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 413 || !resp.Close {
		t.Errorf("want 413 with Connection: close, have %d close=%v", resp.StatusCode, resp.Close)
	}
}

// What an upstream says about a failure is cut to about 256 bytes before
// anyone logs it.
func TestUpstreamErrorTextIsBounded(t *testing.T) {
	var calls atomic.Int64
	long := strings.Repeat("é", 4000) // 2-byte runes, so a cut can split one
	ep, _, _ := NewUpstreamFactory(UpstreamOptions{RateLimit: 1e6, RateBurst: 1000, BreakerFailures: 3, BreakerTimeout: time.Minute, Transport: http.DefaultTransport})(textServer(t, 500, `{"error":"`+long+`"}`, &calls))
	_, err := ep(context.Background(), UppercaseRequest{S: "a"})
	var ue *UpstreamError
	if !errors.As(err, &ue) {
		t.Fatalf("want an UpstreamError, have %v", err)
	}
	if len(ue.Msg) > 300 || !strings.HasPrefix(ue.Msg, "éé") || !isValidUTF8(ue.Msg) {
		t.Errorf("want at most ~256 bytes of valid UTF-8, have %d bytes", len(ue.Msg))
	}
	if have := NewDirectTransport(0).MaxResponseHeaderBytes; have <= 0 || have > 64<<10 {
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
	_, err := ep(ctx, UppercaseRequest{S: "a"})
	return err
}

// A trial request in half-open state whose caller hangs up proves nothing
// about a hung upstream: the breaker opens again instead of closing.
func TestBreakerCancelledTrialReopens(t *testing.T) {
	var hang atomic.Bool
	arrived := make(chan struct{}, 1)
	ep, guard, _ := NewUpstreamFactory(UpstreamOptions{RateLimit: 1e6, RateBurst: 1000, BreakerFailures: 1, BreakerTimeout: 50 * time.Millisecond, Transport: http.DefaultTransport})(switchServer(t, &hang, arrived))
	ep(context.Background(), UppercaseRequest{S: "a"})
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
	ep, guard, _ := NewUpstreamFactory(UpstreamOptions{RateLimit: 1e6, RateBurst: 1000, BreakerFailures: 3, BreakerTimeout: time.Minute, Transport: http.DefaultTransport})(switchServer(t, &hang, arrived))
	for i := 0; i < 2; i++ {
		ep(context.Background(), UppercaseRequest{S: "a"})
	}
	hang.Store(true)
	cancelled(ep, arrived)
	hang.Store(false)
	if s := guard.State(); s != "closed" {
		t.Fatalf("after 2 failures and a cancellation: want closed, have %s", s)
	}
	ep(context.Background(), UppercaseRequest{S: "a"})
	if s := guard.State(); s != "open" {
		t.Errorf("after a 3rd failure: want open, have %s", s)
	}
}
