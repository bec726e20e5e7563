package http1

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/kitmesh/stringsvc/internal/poll"
)

// rawServer is a TCP server whose handler writes raw bytes. It counts the
// connections it accepted.
type rawServer struct {
	ln    net.Listener
	conns atomic.Int64
	wg    sync.WaitGroup
}

// startRaw serves every connection with handle until the test ends. rcvbuf,
// if positive, shrinks the connections' receive buffer.
func startRaw(t *testing.T, rcvbuf int, handle func(n int64, c net.Conn, br *bufio.Reader)) *rawServer {
	t.Helper()
	var lc net.ListenConfig
	if rcvbuf > 0 {
		lc.Control = func(_, _ string, c syscall.RawConn) error {
			return c.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvbuf) })
		}
	}
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &rawServer{ln: ln}
	var mu sync.Mutex
	var open []net.Conn
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			open = append(open, c)
			mu.Unlock()
			n := s.conns.Add(1)
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				handle(n, c, bufio.NewReader(c))
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range open {
			c.Close()
		}
		mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *rawServer) url() string { return "http://" + s.ln.Addr().String() }

// readRequest reads one request and its body; it returns the body and the
// request's SeqHeader.
func readRequest(br *bufio.Reader) (body, seq string, err error) {
	req, err := http.ReadRequest(br)
	if err != nil {
		return "", "", err
	}
	b, err := io.ReadAll(req.Body)
	return string(b), req.Header.Get(SeqHeader), err
}

// answering serves every request of a connection with what answer writes
// for its SeqHeader and its body upper-cased.
func answering(answer func(seq, body string) string) func(int64, net.Conn, *bufio.Reader) {
	return func(_ int64, c net.Conn, br *bufio.Reader) {
		for {
			body, seq, err := readRequest(br)
			if err != nil {
				return
			}
			io.WriteString(c, answer(seq, strings.ToUpper(body)))
		}
	}
}

// rawAnswer is a complete 200 with body, echoing seq unless it is "".
func rawAnswer(seq, body string) string {
	echo := ""
	if seq != "" {
		echo = SeqHeader + ": " + seq + "\r\n"
	}
	return fmt.Sprintf("HTTP/1.1 200 OK\r\n%sContent-Length: %d\r\n\r\n%s", echo, len(body), body)
}

// timed is a context that bounds a test's request.
func timed(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestDirectTransportInterimAnswers(t *testing.T) {
	for _, tc := range []struct {
		name, interim string
		ok            bool
	}{
		{name: "100 Continue", interim: "HTTP/1.1 100 Continue\r\n\r\n", ok: true},
		{name: "103 Early Hints", interim: "HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n", ok: true},
		{name: "102 and 100", interim: "HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n", ok: true},
		{name: "101 Switching Protocols", interim: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n"},
		{name: "six interim answers", interim: strings.Repeat("HTTP/1.1 100 Continue\r\n\r\n", 6)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startRaw(t, 0, answering(func(seq, body string) string { return tc.interim + rawAnswer(seq, body) }))
			rt := newDirect()
			defer rt.CloseIdleConnections()
			for i := 0; i < 3; i++ {
				got, err := post(timed(t), rt, srv.url(), "abc")
				switch {
				case tc.ok && (err != nil || got != "ABC"):
					t.Fatalf("request %d: want ABC, have %q, %v", i, got, err)
				case !tc.ok && !errors.Is(err, ErrProtocol):
					t.Fatalf("request %d: want ErrProtocol, have %q, %v", i, got, err)
				}
			}
			if want := map[bool]int64{true: 1, false: 3}[tc.ok]; srv.conns.Load() != want {
				t.Errorf("want %d connections, have %d", want, srv.conns.Load())
			}
		})
	}
}

// A 408 is the connection's fault: on a reused connection the request
// goes once more on a new one; on a new connection it is an error, not
// an answer.
func TestDirectTransport408(t *testing.T) {
	srv := startRaw(t, 0, func(n int64, c net.Conn, br *bufio.Reader) {
		for i := 0; ; i++ {
			body, seq, err := readRequest(br)
			if err != nil {
				return
			}
			if i == 1 || n == 3 {
				io.WriteString(c, "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
				return
			}
			io.WriteString(c, rawAnswer(seq, strings.ToUpper(body)))
		}
	})
	rt := newDirect()
	defer rt.CloseIdleConnections()
	for _, s := range []string{"a", "b"} {
		if got, err := post(timed(t), rt, srv.url(), s); err != nil || got != strings.ToUpper(s) {
			t.Fatalf("want %q, have %q, %v", strings.ToUpper(s), got, err)
		}
	}
	if n := srv.conns.Load(); n != 2 {
		t.Errorf("the 408 on the reused connection: want the request on a second one, have %d connections", n)
	}
	// The third connection answers 408 to its first request.
	rt.CloseIdleConnections()
	if _, err := post(timed(t), rt, srv.url(), "c"); !errors.Is(err, errPeerTimedOut) {
		t.Errorf("a 408 on a new connection: want errPeerTimedOut, have %v", err)
	}
}

// A peer that answers while the request is still being written, and
// closes, has its answer read: the write's broken pipe is not the
// answer.
func TestDirectTransportEarlyAnswer(t *testing.T) {
	srv := startRaw(t, 4096, func(_ int64, c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 413 Request Entity Too Large\r\nConnection: close\r\nContent-Length: 14\r\n\r\n{\"error\":\"no\"}")
		// Closing with the body unread resets the connection.
	})
	rt := newDirect()
	defer rt.CloseIdleConnections()
	body := strings.Repeat("x", 32<<20) // more than both sides' buffers
	for i := 0; i < 3; i++ {
		req, _ := http.NewRequestWithContext(timed(t), http.MethodPost, srv.url(), strings.NewReader(body))
		resp, err := rt.RoundTrip(req)
		if err != nil {
			t.Fatalf("request %d: want the peer's 413, have %v", i, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge || string(b) != `{"error":"no"}` {
			t.Errorf("request %d: want the 413 as written, have %d %q", i, resp.StatusCode, b)
		}
	}
}

// A peer that answers a large body early and then stops reading, without
// closing, has its answer read while the body is still being written.
func TestDirectTransportEarlyAnswerWithoutClose(t *testing.T) {
	hold := make(chan struct{})
	defer close(hold)
	srv := startRaw(t, 4096, func(_ int64, c net.Conn, br *bufio.Reader) {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 413 Request Entity Too Large\r\n"+SeqHeader+": "+req.Header.Get(SeqHeader)+"\r\nConnection: close\r\nContent-Length: 2\r\n\r\nno")
		<-hold // reads nothing more, and keeps the connection open
	})
	rt := newDirect()
	defer rt.CloseIdleConnections()
	req, _ := http.NewRequestWithContext(timed(t), http.MethodPost, srv.url(), strings.NewReader(strings.Repeat("x", 32<<20)))
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatalf("want the peer's 413, have %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("want 413, have %d", resp.StatusCode)
	}
}

// Closing an answer never waits for the peer: not for a body it trickles,
// not for a Read in flight.
func TestDirectBodyCloseNeverBlocks(t *testing.T) {
	stop := make(chan struct{})
	defer close(stop)
	srv := startRaw(t, 0, func(_ int64, c net.Conn, br *bufio.Reader) {
		_, seq, err := readRequest(br)
		if err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\n"+SeqHeader+": "+seq+"\r\nContent-Length: 100000000\r\n\r\nabc")
		<-stop
	})
	rt := newDirect()
	defer rt.CloseIdleConnections()
	for _, concurrent := range []bool{false, true} {
		req, _ := http.NewRequestWithContext(timed(t), http.MethodPost, srv.url(), strings.NewReader("a"))
		resp, err := rt.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(resp.Body, make([]byte, 3)); err != nil {
			t.Fatal(err)
		}
		read := make(chan error, 1)
		if concurrent {
			// A Read that waits for bytes that never come, in flight
			// once it holds the body's lock.
			go func() { _, err := resp.Body.Read(make([]byte, 10)); read <- err }()
			body := resp.Body.(*directBody)
			if err := poll.Until(5*time.Second, time.Millisecond, func() error {
				if body.mu.TryLock() {
					body.mu.Unlock()
					return errors.New("the Read is not in flight yet")
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
		}
		closed := make(chan struct{})
		go func() { resp.Body.Close(); close(closed) }()
		select {
		case <-closed:
		case <-time.After(5 * time.Second): // the request's deadline is 10 s
			t.Fatalf("concurrent read %v: Close still waiting after 5 s", concurrent)
		}
		if concurrent {
			if err := <-read; err == nil {
				t.Error("the Read in flight: want an error once closed, have none")
			}
		}
	}
	if n := srv.conns.Load(); n != 2 {
		t.Errorf("want each unfinished answer's connection closed (2 connections), have %d", n)
	}
}

// An answer that does not echo its request's number on a connection whose
// peer echoes is stale: an error, and the peer loses kept-alive
// connections for a while.
func TestDirectTransportStaleAnswer(t *testing.T) {
	for _, tc := range []struct {
		name  string
		echo  func(seq string) string
		wants string
	}{
		{name: "the previous number", echo: func(seq string) string { return map[string]string{"1": "1", "2": "1"}[seq] }},
		{name: "no number", echo: func(seq string) string { return map[string]string{"1": "1"}[seq] }},
		{name: "two numbers", echo: func(seq string) string {
			if seq == "2" {
				return "2\r\n" + SeqHeader + ": 2"
			}
			return seq
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startRaw(t, 0, answering(func(seq, body string) string { return rawAnswer(tc.echo(seq), body) }))
			rt := newDirect()
			defer rt.CloseIdleConnections()
			if got, err := post(timed(t), rt, srv.url(), "a"); err != nil || got != "A" {
				t.Fatalf("first answer: %q, %v", got, err)
			}
			if got, err := post(timed(t), rt, srv.url(), "b"); !errors.Is(err, ErrProtocol) {
				t.Fatalf("second answer: want ErrProtocol, have %q, %v", got, err)
			}
			rt.mu.Lock()
			_, quarantined := rt.strays[strings.TrimPrefix(srv.url(), "http://")]
			rt.mu.Unlock()
			if !quarantined {
				t.Error("want the peer in quarantine")
			}
		})
	}
}

// A peer that does not echo SeqHeader gets a connection per request; one
// that sends bytes past an answer gets one per request for a while.
func TestDirectTransportReusesOnlyProvablyCleanConnections(t *testing.T) {
	for _, tc := range []struct {
		name      string
		answer    func(seq, body string) string
		wantConns int64
	}{
		{name: "echoes", answer: rawAnswer, wantConns: 1},
		{name: "does not echo", answer: func(_, body string) string { return rawAnswer("", body) }, wantConns: 4},
		{name: "a CRLF past the answer", answer: func(seq, body string) string { return rawAnswer(seq, body) + "\r\n" }, wantConns: 4},
		{name: "an answer past the answer", answer: func(seq, body string) string { return rawAnswer(seq, body) + rawAnswer(seq, "STALE") }, wantConns: 4},
		{name: "a 304 with a body", answer: func(seq, body string) string {
			return "HTTP/1.1 304 Not Modified\r\n" + SeqHeader + ": " + seq + "\r\n\r\n" + rawAnswer(seq, "STALE")
		}, wantConns: 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startRaw(t, 0, answering(tc.answer))
			rt := newDirect()
			defer rt.CloseIdleConnections()
			for i := 0; i < 4; i++ {
				s := fmt.Sprint("r", i)
				got, err := post(timed(t), rt, srv.url(), s)
				if err != nil || (got != strings.ToUpper(s) && got != "") {
					t.Fatalf("request %d: want %q, have %q, %v", i, strings.ToUpper(s), got, err)
				}
			}
			if n := srv.conns.Load(); n != tc.wantConns {
				t.Errorf("want %d connections for 4 requests, have %d", tc.wantConns, n)
			}
		})
	}
}

// An answer whose bytes arrive a moment after the answer before it, while
// its connection is idle, is found by the check that takes the
// connection out of the pool.
func TestDirectTransportIdleCheck(t *testing.T) {
	sent := make(chan struct{}, 1)
	srv := startRaw(t, 0, func(_ int64, c net.Conn, br *bufio.Reader) {
		for {
			body, seq, err := readRequest(br)
			if err != nil {
				return
			}
			io.WriteString(c, rawAnswer(seq, strings.ToUpper(body)))
			if seq == "1" {
				io.WriteString(c, "late bytes")
				sent <- struct{}{}
			}
		}
	})
	rt := newDirect()
	defer rt.CloseIdleConnections()
	if got, err := post(timed(t), rt, srv.url(), "a"); err != nil || got != "A" {
		t.Fatalf("have %q, %v", got, err)
	}
	<-sent
	peekWait(t, rt)
	if got, err := post(timed(t), rt, srv.url(), "b"); err != nil || got != "B" {
		t.Fatalf("after the late bytes: want B, have %q, %v", got, err)
	}
	if n := srv.conns.Load(); n != 2 {
		t.Errorf("want the late bytes' connection closed, and a second one: have %d", n)
	}
}

// RFC 9112, section 6.3: Content-Length with Transfer-Encoding ought to
// be handled as an error; net/http's parser drops the Content-Length. So
// are Transfer-Encoding in HTTP/1.0 (section 6.1) and a status outside
// 100 to 599 (RFC 9110, section 15).
func TestDirectTransportFaultyFraming(t *testing.T) {
	for _, tc := range []struct {
		name, header, proto string
		ok                  bool
		limit               int64
	}{
		{name: "chunked", header: "Transfer-Encoding: chunked\r\n", ok: true},
		{name: "both", header: "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n"},
		{name: "both, lower case, after", header: "Transfer-Encoding: chunked\r\ncontent-length: 3\r\n"},
		{name: "HTTP/1.0 and chunked", header: "Transfer-Encoding: chunked\r\n", proto: "HTTP/1.0 200 OK"},
		{name: "status 099", header: "Transfer-Encoding: chunked\r\n", proto: "HTTP/1.1 099 Low"},
		{name: "status 600", header: "Transfer-Encoding: chunked\r\n", proto: "HTTP/1.1 600 High"},
		{name: "both, past 16 KiB of header", header: "X-Pad: " + strings.Repeat("p", 17<<10) + "\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n", limit: 64 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.proto == "" {
				tc.proto = "HTTP/1.1 200 OK"
			}
			srv := startRaw(t, 0, func(_ int64, c net.Conn, br *bufio.Reader) {
				_, seq, err := readRequest(br)
				if err != nil {
					return
				}
				io.WriteString(c, tc.proto+"\r\n"+SeqHeader+": "+seq+"\r\n"+tc.header+"\r\n3\r\nABC\r\n0\r\n\r\n")
			})
			rt := newDirect()
			if tc.limit > 0 {
				rt.MaxResponseHeaderBytes = tc.limit
			}
			defer rt.CloseIdleConnections()
			got, err := post(timed(t), rt, srv.url(), "abc")
			if tc.ok != (err == nil) || tc.ok && got != "ABC" {
				t.Errorf("want ok %v, have %q, %v", tc.ok, got, err)
			}
			if !tc.ok && !errors.Is(err, ErrProtocol) {
				t.Errorf("want ErrProtocol, have %v", err)
			}
		})
	}
}

// Over TLS too, bytes past an answer never frame the next one, whether
// they came in the answer's TLS record or in one of their own.
func TestDirectTransportTLSBytesPastTheAnswer(t *testing.T) {
	cert := httptest.NewUnstartedServer(nil)
	cert.StartTLS()
	serverTLS := cert.TLS
	clientTLS := cert.Client().Transport.(*http.Transport).TLSClientConfig
	cert.Close()
	for _, sameRecord := range []bool{true, false} {
		t.Run(fmt.Sprint("same record ", sameRecord), func(t *testing.T) {
			srv := startRaw(t, 0, func(_ int64, raw net.Conn, _ *bufio.Reader) {
				c := tls.Server(raw, serverTLS)
				br := bufio.NewReader(c)
				for {
					body, seq, err := readRequest(br)
					if err != nil {
						return
					}
					answer, extra := rawAnswer(seq, strings.ToUpper(body)), rawAnswer(seq, "STALE")
					if sameRecord {
						io.WriteString(c, answer+extra)
					} else {
						io.WriteString(c, answer)
						io.WriteString(c, extra)
					}
				}
			})
			rt := newDirect()
			rt.TLS = clientTLS
			defer rt.CloseIdleConnections()
			url := "https://" + srv.ln.Addr().String()
			stale := int64(0)
			for i := 0; i < 4; i++ {
				s := fmt.Sprint("t", i)
				got, err := post(timed(t), rt, url, s)
				if err != nil {
					stale++
				}
				// A record of its own may arrive after the idle check,
				// and then fails the next request as stale: an error,
				// never another request's answer.
				if !(err == nil && got == strings.ToUpper(s)) && !(!sameRecord && errors.Is(err, ErrProtocol)) {
					t.Fatalf("request %d: want %q, have %q, %v", i, strings.ToUpper(s), got, err)
				}
			}
			if n := srv.conns.Load(); n+stale != 4 {
				t.Errorf("want a connection per request, but for one that failed stale on a reused one: have %d, and %d stale, for 4", n, stale)
			}
		})
	}
}

// The pool under -race: requests, idle sweeps, quarantines and
// CloseIdleConnections at once, each answer checked.
func TestDirectTransportPoolStress(t *testing.T) {
	srv := newCounted(t, false, echoUpper)
	rt := newDirect()
	rt.IdleTimeout = 2 * time.Millisecond // sweeps and expiries all the time
	defer rt.CloseIdleConnections()
	host := strings.TrimPrefix(srv.URL, "http://")
	var wg sync.WaitGroup
	var wrong atomic.Int64
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				s := fmt.Sprint("g", g, "i", i)
				got, err := post(timed(t), rt, srv.URL, s)
				if err != nil || got != strings.ToUpper(s) {
					wrong.Add(1)
				}
				switch i % 50 {
				case 10:
					rt.CloseIdleConnections()
				case 20:
					rt.quarantine(host)
				case 30:
					rt.mu.Lock()
					delete(rt.strays, host)
					rt.mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if n := wrong.Load(); n != 0 {
		t.Errorf("want 1600 right answers, have %d wrong or failed", n)
	}
}

// A connection the peer closed while idle is never written on, so that
// the pool's retry is left for the rare close that races the request.
func TestDirectTransportDropsIdleConnectionsThePeerClosed(t *testing.T) {
	srv := startRaw(t, 0, func(n int64, c net.Conn, br *bufio.Reader) {
		body, seq, err := readRequest(br)
		if err != nil {
			return
		}
		io.WriteString(c, rawAnswer(seq, strings.ToUpper(body)))
		// and close
	})
	rt := newDirect()
	defer rt.CloseIdleConnections()
	for i := 0; i < 3; i++ {
		if i > 0 {
			if err := poll.Until(5*time.Second, time.Millisecond, func() error {
				rt.mu.Lock()
				defer rt.mu.Unlock()
				for _, conns := range rt.idle {
					for _, c := range conns {
						if clean, _ := c.idleClean(); clean {
							return errors.New("the closed connection still looks clean")
						}
					}
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
		}
		req, _ := http.NewRequestWithContext(timed(t), http.MethodPost, srv.url(), strings.NewReader("a"))
		req.GetBody = nil // no second chance: the check must find the close
		resp, err := rt.RoundTrip(req)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		resp.Body.Close()
	}
}

// peekWait waits until every idle connection of rt has bytes or an end
// of stream waiting, looking with the raw peek alone (idleClean would
// read and judge them).
func peekWait(t *testing.T, rt *Transport) {
	t.Helper()
	err := poll.Until(5*time.Second, time.Millisecond, func() error {
		rt.mu.Lock()
		defer rt.mu.Unlock()
		for _, conns := range rt.idle {
			for _, c := range conns {
				if err := c.raw.Control(c.peekFn); err == nil && peekedNothing(c.peekN, c.peekErr) {
					return errors.New("an idle connection has nothing waiting yet")
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// quarantined reports how many peers rt has in quarantine.
func quarantined(rt *Transport) int {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return len(rt.strays)
}

// A peer that says goodbye, with a TLS close_notify or with the 408 some
// servers write to an idle connection, is not a peer that sends stray
// bytes: it stays out of quarantine, whether the goodbye comes while the
// connection is idle or right behind an answer.
func TestDirectTransportGoodbyeIsNotStray(t *testing.T) {
	for _, overTLS := range []bool{false, true} {
		t.Run(fmt.Sprint("idle, TLS ", overTLS), func(t *testing.T) {
			srv := newCounted(t, overTLS, echoUpper)
			rt := newDirect()
			if overTLS {
				rt.TLS = srv.Client().Transport.(*http.Transport).TLSClientConfig
			}
			defer rt.CloseIdleConnections()
			if _, err := post(timed(t), rt, srv.URL, "a"); err != nil {
				t.Fatal(err)
			}
			// httptest closes idle connections as http.Server's
			// Shutdown does: with close_notify under TLS.
			srv.CloseClientConnections()
			peekWait(t, rt)
			if got, err := post(timed(t), rt, srv.URL, "b"); err != nil || got != "B" {
				t.Fatalf("have %q, %v", got, err)
			}
			if n := quarantined(rt); n != 0 {
				t.Errorf("want no peer in quarantine, have %d", n)
			}
		})
	}
	cert := httptest.NewUnstartedServer(nil)
	cert.StartTLS()
	serverTLS, clientTLS := cert.TLS, cert.Client().Transport.(*http.Transport).TLSClientConfig
	cert.Close()
	for _, tc := range []struct {
		name    string
		tls     bool
		goodbye func(c net.Conn)
	}{
		{name: "close_notify behind the answer", tls: true, goodbye: func(c net.Conn) { c.Close() }},
		{name: "408 while idle", goodbye: func(c net.Conn) {
			io.WriteString(c, "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
		}},
		{name: "408 while idle, TLS", tls: true, goodbye: func(c net.Conn) {
			io.WriteString(c, "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			said := make(chan struct{}, 1)
			srv := startRaw(t, 0, func(_ int64, raw net.Conn, br *bufio.Reader) {
				c := raw
				if tc.tls {
					c = tls.Server(raw, serverTLS)
					br = bufio.NewReader(c)
				}
				body, seq, err := readRequest(br)
				if err != nil {
					return
				}
				io.WriteString(c, rawAnswer(seq, strings.ToUpper(body)))
				tc.goodbye(c)
				said <- struct{}{}
				c.Close()
			})
			rt := newDirect()
			rt.TLS = clientTLS
			defer rt.CloseIdleConnections()
			url := srv.url()
			if tc.tls {
				url = "https://" + srv.ln.Addr().String()
			}
			if got, err := post(timed(t), rt, url, "a"); err != nil || got != "A" {
				t.Fatalf("have %q, %v", got, err)
			}
			<-said
			if got, err := post(timed(t), rt, url, "b"); err != nil || got != "B" {
				t.Fatalf("after the goodbye: have %q, %v", got, err)
			}
			if n := quarantined(rt); n != 0 {
				t.Errorf("want no peer in quarantine, have %d", n)
			}
		})
	}
}

// An answer that breaks the rules while a large body is still being
// written fails as itself, not as the deadline that stopped the writer.
func TestDirectTransportBadAnswerWhileWriting(t *testing.T) {
	hold := make(chan struct{})
	defer close(hold)
	srv := startRaw(t, 4096, func(_ int64, c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 600 Nonsense\r\nContent-Length: 0\r\n\r\n")
		<-hold
	})
	rt := newDirect()
	defer rt.CloseIdleConnections()
	req, _ := http.NewRequestWithContext(timed(t), http.MethodPost, srv.url(), strings.NewReader(strings.Repeat("x", 32<<20)))
	if _, err := rt.RoundTrip(req); !errors.Is(err, ErrProtocol) {
		t.Errorf("want ErrProtocol, have %v", err)
	}
	if n := quarantined(rt); n != 1 {
		t.Errorf("want the peer in quarantine, have %d peers there", n)
	}
}

// Track is told of every TLS connection once, after its handshake, and its
// untrack runs when the connection closes.
func TestDirectTransportTracksTLSConnections(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(SeqHeader, r.Header.Get(SeqHeader))
		io.WriteString(w, `{"v":"A"}`)
	}))
	srv.StartTLS()
	defer srv.Close()
	rt := NewTransport(4)
	rt.TLS = srv.Client().Transport.(*http.Transport).TLSClientConfig
	var tracked, untracked atomic.Int32
	rt.Track = func(sock net.Conn, cs tls.ConnectionState) func() {
		if !cs.HandshakeComplete || sock == nil {
			t.Error("tracked before the handshake completed")
		}
		tracked.Add(1)
		return func() { untracked.Add(1) }
	}
	for i := 0; i < 3; i++ {
		if _, err := post(timed(t), rt, srv.URL, "a"); err != nil {
			t.Fatal(err)
		}
	}
	if tracked.Load() != 1 || untracked.Load() != 0 {
		t.Errorf("3 requests on one connection: want it tracked once, have %d tracked, %d untracked", tracked.Load(), untracked.Load())
	}
	rt.CloseIdleConnections()
	if untracked.Load() != 1 {
		t.Errorf("closed: want it untracked, have %d", untracked.Load())
	}
}
