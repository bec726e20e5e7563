package http1

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/kitmesh/stringsvc/internal/poll"
)

// connCounter is an httptest server that counts the connections it
// accepted.
type connCounter struct {
	*httptest.Server
	conns atomic.Int64
}

func newCounted(t *testing.T, tlsToo bool, h http.HandlerFunc) *connCounter {
	t.Helper()
	c := &connCounter{}
	c.Server = httptest.NewUnstartedServer(EchoSeq(h))
	c.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			c.conns.Add(1)
		}
	}
	if tlsToo {
		c.StartTLS()
	} else {
		c.Start()
	}
	t.Cleanup(c.Close)
	return c
}

func echoUpper(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, strings.ToUpper(string(b)))
}

// post sends body to url through rt with a fresh request that can be sent
// again (GetBody), as the client endpoints build them, and returns the
// answer's body.
func post(ctx context.Context, rt http.RoundTripper, url, body string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return "", err
	}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func newDirect() *Transport {
	t := NewTransport(4)
	return t
}

// gate holds a server's requests to /wait until as many as a test wants
// are in, so that a client ends up with that many connections.
type gate struct {
	in      atomic.Int64
	release chan struct{}
}

func newGate() *gate { return &gate{release: make(chan struct{})} }

// hold wraps next: a request to /wait waits at the gate.
func (g *gate) hold(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/wait" {
			g.in.Add(1)
			<-g.release
		}
		next(w, r)
	}
}

// openConns sends n requests to url's /wait at once through rt and
// returns when all n were answered: the server holds each until all n
// arrived, so rt is left with n connections, idle.
func (g *gate) openConns(t *testing.T, rt http.RoundTripper, url string, n int64) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := int64(0); i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := post(context.Background(), rt, url+"/wait", "a"); err != nil {
				errs <- err
			}
		}()
	}
	err := poll.Until(10*time.Second, 5*time.Millisecond, func() error {
		if in := g.in.Load(); in < n {
			return fmt.Errorf("%d of %d requests at the server", in, n)
		}
		return nil
	})
	close(g.release)
	wg.Wait()
	close(errs)
	if err != nil {
		t.Fatal(err)
	}
	for err := range errs {
		t.Fatal(err)
	}
}

func TestDirectTransportKeepsConnectionsAlive(t *testing.T) {
	srv := newCounted(t, false, echoUpper)
	rt := newDirect()
	defer rt.CloseIdleConnections()
	for i := 0; i < 50; i++ {
		got, err := post(context.Background(), rt, srv.URL+"/x", `{"s":"abc"}`)
		if err != nil || got != `{"S":"ABC"}` {
			t.Fatalf("request %d: have %q, %v", i, got, err)
		}
	}
	if n := srv.conns.Load(); n != 1 {
		t.Errorf("50 sequential requests: want 1 connection, have %d", n)
	}
}

func TestDirectTransportConcurrentRequestsUseSeveralConnections(t *testing.T) {
	g := newGate()
	srv := newCounted(t, false, g.hold(echoUpper))
	rt := newDirect()
	defer rt.CloseIdleConnections()
	g.openConns(t, rt, srv.URL, 3)
	if n := srv.conns.Load(); n != 3 {
		t.Errorf("3 concurrent requests: want 3 connections, have %d", n)
	}
	// The three are idle now, within MaxIdlePerHost (4): 30 more
	// sequential requests open none.
	for i := 0; i < 30; i++ {
		if _, err := post(context.Background(), rt, srv.URL, "a"); err != nil {
			t.Fatal(err)
		}
	}
	if n := srv.conns.Load(); n != 3 {
		t.Errorf("after 30 more sequential requests: want 3 connections, have %d", n)
	}
}

// A peer that closed an idle connection costs nothing: the request goes
// once more on a new connection.
func TestDirectTransportRetriesADeadIdleConnection(t *testing.T) {
	srv := newCounted(t, false, echoUpper)
	rt := newDirect()
	defer rt.CloseIdleConnections()
	if _, err := post(context.Background(), rt, srv.URL, "a"); err != nil {
		t.Fatal(err)
	}
	srv.CloseClientConnections()
	got, err := post(context.Background(), rt, srv.URL, "b")
	if err != nil || got != "B" {
		t.Fatalf("after the peer closed the idle connection: have %q, %v", got, err)
	}
	if n := srv.conns.Load(); n != 2 {
		t.Errorf("want 2 connections, have %d", n)
	}

	// The idle check sees a connection the peer closed before a request
	// is written on it: even a request that cannot be sent again (no
	// GetBody) goes on a new connection.
	srv.CloseClientConnections()
	peekWait(t, rt)
	req, _ := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader("c"))
	req.GetBody = nil
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatalf("without GetBody, after the idle check saw the close: %v", err)
	}
	resp.Body.Close()
	if n := srv.conns.Load(); n != 3 {
		t.Errorf("want 3 connections, have %d", n)
	}
}

// A peer that restarted leaves every idle connection to it dead: the
// retry must not take another of them (TestCompose caught that: a member
// restarted under load was never used again within 10 s).
func TestDirectTransportPeerClosedAllIdleConnections(t *testing.T) {
	g := newGate()
	srv := newCounted(t, false, g.hold(echoUpper))
	rt := newDirect()
	defer rt.CloseIdleConnections()
	g.openConns(t, rt, srv.URL, 4)
	if n := srv.conns.Load(); n != 4 {
		t.Fatalf("the test needs 4 idle connections, have %d connections", n)
	}
	srv.CloseClientConnections()
	for i := 0; i < 3; i++ {
		if got, err := post(context.Background(), rt, srv.URL, "b"); err != nil || got != "B" {
			t.Fatalf("request %d after the peer closed all 4 idle connections: have %q, %v", i, got, err)
		}
	}
	if n := srv.conns.Load(); n != 5 {
		t.Errorf("want one new connection, reused for the next requests: 5 in all, have %d", n)
	}
}

func TestDirectTransportCancellation(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	arrived := make(chan struct{}, 2)
	srv := newCounted(t, false, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hang" {
			arrived <- struct{}{}
			select {
			case <-release:
			case <-r.Context().Done():
			}
			return
		}
		echoUpper(w, r)
	})
	rt := newDirect()
	defer rt.CloseIdleConnections()
	if _, err := post(context.Background(), rt, srv.URL, "a"); err != nil {
		t.Fatal(err)
	}

	t.Run("cancel", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		go func() { <-arrived; cancel() }()
		begin := time.Now()
		_, err := post(ctx, rt, srv.URL+"/hang", "a")
		if !errors.Is(err, context.Canceled) {
			t.Errorf("want context.Canceled, have %v", err)
		}
		if took := time.Since(begin); took > 5*time.Second {
			t.Errorf("cancelled once the request arrived, returned after %v", took)
		}
	})
	t.Run("deadline", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		_, err := post(ctx, rt, srv.URL+"/hang", "a")
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("want context.DeadlineExceeded, have %v", err)
		}
	})
	// The connections of the two abandoned requests were closed, not
	// pooled: the next requests work, on the one connection still idle
	// or on new ones.
	for i := 0; i < 5; i++ {
		if got, err := post(context.Background(), rt, srv.URL, "z"); err != nil || got != "Z" {
			t.Fatalf("after the cancellations: have %q, %v", got, err)
		}
	}
}

func TestDirectTransportDoesNotReuseWhatItCannot(t *testing.T) {
	long := strings.Repeat("x", 64<<10)
	srv := newCounted(t, false, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		switch r.URL.Path {
		case "/close":
			w.Header().Set("Connection", "close")
			io.WriteString(w, "bye")
		case "/long":
			io.WriteString(w, long)
		default:
			io.WriteString(w, "ok")
		}
	})
	rt := newDirect()
	defer rt.CloseIdleConnections()

	// Connection: close, then a new connection.
	if got, err := post(context.Background(), rt, srv.URL+"/close", "a"); err != nil || got != "bye" {
		t.Fatalf("have %q, %v", got, err)
	}
	if _, err := post(context.Background(), rt, srv.URL, "a"); err != nil {
		t.Fatal(err)
	}
	if n := srv.conns.Load(); n != 2 {
		t.Errorf("after Connection: close: want 2 connections, have %d", n)
	}

	// An answer closed before its end: that connection is closed too.
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/long", strings.NewReader("a"))
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Read(make([]byte, 10))
	resp.Body.Close()
	if got, err := post(context.Background(), rt, srv.URL, "a"); err != nil || got != "ok" {
		t.Fatalf("have %q, %v", got, err)
	}
	// The idle connection of the request before /long was reused for it;
	// the last request needed a third.
	if n := srv.conns.Load(); n != 3 {
		t.Errorf("after an answer closed early: want 3 connections, have %d", n)
	}
}

func TestDirectTransportBoundsTheAnswersHeader(t *testing.T) {
	srv := newCounted(t, false, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Big", strings.Repeat("b", 64<<10))
		io.WriteString(w, "ok")
	})
	rt := newDirect()
	defer rt.CloseIdleConnections()
	_, err := post(context.Background(), rt, srv.URL, "a")
	if !errors.Is(err, errTooManyHeaderBytes) {
		t.Errorf("a 64 KiB header against a %d byte bound: want errTooManyHeaderBytes, have %v", maxResponseHeaderBytes, err)
	}
}

func TestDirectTransportIdleTimeout(t *testing.T) {
	srv := newCounted(t, false, echoUpper)
	rt := newDirect()
	defer rt.CloseIdleConnections()
	if _, err := post(context.Background(), rt, srv.URL, "a"); err != nil {
		t.Fatal(err)
	}
	// The idle connection's clock set back past the timeout, rather than
	// a test that sleeps through it.
	rt.mu.Lock()
	idle := 0
	for _, conns := range rt.idle {
		for _, c := range conns {
			c.idleSince = c.idleSince.Add(-2 * rt.IdleTimeout)
			idle++
		}
	}
	rt.mu.Unlock()
	if idle != 1 {
		t.Fatalf("the test needs 1 idle connection, have %d", idle)
	}
	if _, err := post(context.Background(), rt, srv.URL, "a"); err != nil {
		t.Fatal(err)
	}
	if n := srv.conns.Load(); n != 2 {
		t.Errorf("want a new connection after the idle timeout, have %d connections", n)
	}
}

func TestDirectTransportTLS(t *testing.T) {
	srv := newCounted(t, true, echoUpper)
	rt := newDirect()
	defer rt.CloseIdleConnections()
	if _, err := post(context.Background(), rt, srv.URL, "a"); err == nil {
		t.Error("https without a TLS configuration: want an error, have none")
	}
	rt.TLS = srv.Client().Transport.(*http.Transport).TLSClientConfig
	for i := 0; i < 10; i++ {
		if got, err := post(context.Background(), rt, srv.URL, "abc"); err != nil || got != "ABC" {
			t.Fatalf("request %d over TLS: have %q, %v", i, got, err)
		}
	}
	if n := srv.conns.Load(); n != 1 {
		t.Errorf("10 requests over TLS: want 1 connection (one handshake), have %d", n)
	}

	// A configuration that does not trust the server (system roots
	// only), and one whose VerifyConnection refuses it: no request.
	for name, config := range map[string]*tls.Config{
		"untrusted":        {},
		"VerifyConnection": {InsecureSkipVerify: true, VerifyConnection: func(tls.ConnectionState) error { return errors.New("not our peer") }},
	} {
		other := newDirect()
		other.TLS = config
		if _, err := post(context.Background(), other, srv.URL, "a"); err == nil {
			t.Errorf("%s: want a handshake error, have none", name)
		}
	}
}

// A peer that is gone reads as a lost connection, which opens an
// upstream's breaker at once.
func TestDirectTransportLostPeer(t *testing.T) {
	srv := newCounted(t, false, echoUpper)
	rt := newDirect()
	defer rt.CloseIdleConnections()
	if _, err := post(context.Background(), rt, srv.URL, "a"); err != nil {
		t.Fatal(err)
	}
	srv.Close()
	_, err := post(context.Background(), rt, srv.URL, "a")
	if err == nil || !ConnectionLost(err) {
		t.Errorf("after the peer closed: want a lost connection, have %v", err)
	}
}

// A body of unknown length is read to count it; the server receives it
// whole, with its headers. A header value that would end its line is
// refused before anything is sent.
func TestDirectTransportWritesTheRequest(t *testing.T) {
	var seen http.Header
	var requests atomic.Int64
	srv := newCounted(t, false, func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		seen = r.Header.Clone()
		echoUpper(w, r)
	})
	rt := newDirect()
	defer rt.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/p?q=1", io.MultiReader(strings.NewReader("ab"), strings.NewReader("c")))
	req.Header.Set("X-Test", "one")
	if req.ContentLength != 0 {
		t.Fatalf("the test needs a body of unknown length, have ContentLength %d", req.ContentLength)
	}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "ABC" {
		t.Errorf("want the whole body echoed, have %q", b)
	}
	if seen.Get("X-Test") != "one" || seen.Get(SeqHeader) != "1" {
		t.Errorf("want X-Test and the request's number, have %q", seen)
	}

	req, _ = http.NewRequest(http.MethodPost, srv.URL, strings.NewReader("a"))
	req.Header.Set("X-Test", "one\r\nX-Forged: two")
	if _, err := rt.RoundTrip(req); err == nil {
		t.Error("a newline in a header value: want an error, have an answer")
	}
	if n := requests.Load(); n != 1 {
		t.Errorf("want 1 request at the server, have %d", n)
	}
}

// Only bytes that are no answer quarantine a peer; a failed connection,
// a 408, a request's own body or a cancellation never do.
func TestMalformed(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("%w: stale", ErrProtocol), true},
		{errors.New(`malformed HTTP response "junk"`), true},
		{io.EOF, false},
		{io.ErrUnexpectedEOF, false},
		{errPeerTimedOut, false},
		{errBodyShort, false},
		{context.Canceled, false},
		{&net.OpError{Op: "read", Err: os.ErrDeadlineExceeded}, false},
	} {
		if have := malformed(tc.err); have != tc.want {
			t.Errorf("malformed(%v): want %v, have %v", tc.err, tc.want, have)
		}
	}
}

// deadlineOnly is a context whose deadline has passed but whose timer has
// not fired yet: Err is still nil, as on a loaded machine.
type deadlineOnly struct {
	context.Context
	at time.Time
}

func (c deadlineOnly) Deadline() (time.Time, bool) { return c.at, true }

// A dial cut short by the caller's deadline is DeadlineExceeded even when
// the socket's timeout beats the context's timer; the dialer's own
// timeout never is, even as net reports it, and any other failure stays
// what it was.
func TestDialErrorIsTheCallersDeadline(t *testing.T) {
	now := time.Now()
	passed := deadlineOnly{context.Background(), now}
	later := deadlineOnly{context.Background(), now.Add(10 * time.Second)}
	dial := func(err error) error { return &net.OpError{Op: "dial", Net: "tcp", Err: err} }
	refused := dial(os.NewSyscallError("connect", syscall.ECONNREFUSED))
	tests := []struct {
		name     string
		ctx      context.Context
		err      error
		deadline bool // want errors.Is(context.DeadlineExceeded)
		keep     bool // want errors.Is(the error given)
	}{
		{"the caller's deadline, timer not fired", passed, dial(os.ErrDeadlineExceeded), true, true},
		{"the caller's deadline, as net says it", passed, dial(context.DeadlineExceeded), true, true},
		{"the caller's deadline in a DNS lookup", passed, &net.DNSError{Err: "i/o timeout", IsTimeout: true}, true, true},
		{"no deadline", context.Background(), dial(os.ErrDeadlineExceeded), false, true},
		{"the dialer's own, before the caller's", later, dial(os.ErrDeadlineExceeded), false, true},
		{"the dialer's own, as net says it", later, dial(context.DeadlineExceeded), false, false},
		{"the dialer's own in a DNS lookup, as net says it", later, dial(&net.DNSError{Err: "i/o timeout", Name: "peer.example", IsTimeout: true, UnwrapErr: context.DeadlineExceeded}), false, false},
		{"the caller's deadline binds, though the clock has not reached it", deadlineOnly{context.Background(), now.Add(time.Second)}, dial(os.ErrDeadlineExceeded), true, true},
		{"refused", passed, refused, false, true},
	}
	for _, tt := range tests {
		err := dialError(tt.ctx, tt.err, &net.Dialer{Timeout: 2 * time.Second}, now)
		if have := errors.Is(err, context.DeadlineExceeded); have != tt.deadline {
			t.Errorf("%s: want DeadlineExceeded %v, have %v (%v)", tt.name, tt.deadline, have, err)
		}
		if have := errors.Is(err, tt.err); have != tt.keep {
			t.Errorf("%s: want the dial's error kept %v, have %v (%v)", tt.name, tt.keep, have, err)
		}
		if !strings.Contains(err.Error(), tt.err.Error()) {
			t.Errorf("%s: want the dial's text %q kept, have %q", tt.name, tt.err, err)
		}
		if _, isDNS := tt.err.(*net.DNSError); !isDNS && !ConnectionLost(err) {
			t.Errorf("%s: want a failed dial, which ejects the peer unless neutral, have %v", tt.name, err)
		}
	}
}
