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
	"github.com/kitmesh/stringsvc/service"
	"github.com/kitmesh/stringsvc/transport/endpoints"
)

// Regression tests of the hardening issue, one per defect of the
// transport. Each failed on the code before its fix.

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
	srv := httptest.NewServer(NewHTTPHandler(endpoints.New(svc), HandlerOptions{MaxInFlight: 1, Responses: responses}))
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
	h := NewHTTPHandler(endpoints.New(service.NewBasicService()), HandlerOptions{Responses: responses})
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
	srv := httptest.NewServer(NewHTTPHandler(endpoints.New(service.NewBasicService()), HandlerOptions{MaxBodyBytes: 1024, Responses: metricstest.NewRecorder()}))
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
