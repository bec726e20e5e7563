package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// This file holds the raw-TCP upstream of the hostile-peer suite
// (hostile_test.go): it reads requests as an honest server would and
// answers them byte by byte as its misbehaviour says.

// seqHeader is http1.SeqHeader, spelled out so that this suite also
// runs against builds from before it existed.
const seqHeader = "X-Stringsvc-Seq"

// peerReq is one request as the hostile peer read it.
type peerReq struct {
	s   string // its "s"
	seq string // its seqHeader, "" without
	n   int    // its number on its connection, from 1
	// prev is the "s" of the connection's request before it
	prev string
	// length is its Content-Length
	length int64
	conn   net.Conn
}

// hostilePeer is a raw-TCP upstream. serve writes the answer to one
// request and says whether to read the next one from the connection;
// early peers answer before they read a request's body.
type hostilePeer struct {
	ln       net.Listener
	serve    func(*hostilePeer, *peerReq) bool
	early    bool
	requests atomic.Int64 // requests read
	twice    atomic.Int64 // requests whose string it had read before
	seen     sync.Map     // string -> struct{}
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    []net.Conn
	closed   chan struct{}
}

func startHostilePeer(t *testing.T, early bool, serve func(*hostilePeer, *peerReq) bool) *hostilePeer {
	t.Helper()
	var lc net.ListenConfig
	if early {
		// A small receive window, so that a large request is still
		// being written when the peer has answered and gone.
		lc.Control = func(_, _ string, c syscall.RawConn) error {
			return c.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		}
	}
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &hostilePeer{ln: ln, serve: serve, early: early, closed: make(chan struct{})}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *hostilePeer) addr() string { return p.ln.Addr().String() }

func (p *hostilePeer) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		p.conns = append(p.conns, c)
		p.mu.Unlock()
		p.wg.Add(1)
		go p.handle(c)
	}
}

func (p *hostilePeer) handle(c net.Conn) {
	defer p.wg.Done()
	defer c.Close()
	br := bufio.NewReader(c)
	prev := ""
	for n := 1; ; n++ {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		r := &peerReq{n: n, seq: req.Header.Get(seqHeader), prev: prev, length: req.ContentLength, conn: c}
		if !p.early || r.length <= 1<<20 {
			b, err := io.ReadAll(io.LimitReader(req.Body, 64<<20))
			if err != nil {
				return
			}
			var w struct{ S string }
			json.Unmarshal(b, &w)
			r.s = w.S
			if _, dup := p.seen.LoadOrStore(r.s, struct{}{}); dup {
				p.twice.Add(1)
			}
		}
		p.requests.Add(1)
		prev = r.s
		if !p.serve(p, r) {
			return
		}
	}
}

// close stops the peer and waits for its goroutines.
func (p *hostilePeer) close() {
	select {
	case <-p.closed:
		return
	default:
		close(p.closed)
	}
	p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// pause waits d, or less if the peer is closed: the peer's own timing,
// not the test's synchronisation.
func (p *hostilePeer) pause(d time.Duration) bool {
	select {
	case <-p.closed:
		return false
	case <-time.After(d):
		return true
	}
}

// write sends raw bytes and reports whether they went.
func (r *peerReq) write(s string) bool {
	_, err := io.WriteString(r.conn, s)
	return err == nil
}

// reset closes the connection with a TCP reset.
func (r *peerReq) reset() {
	if tc, ok := r.conn.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	r.conn.Close()
}

// answer formats a complete answer with its Content-Length; echo adds
// the request's seqHeader.
func (r *peerReq) answer(status, body string, echo bool, headers ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "HTTP/1.1 %s\r\nContent-Type: application/json\r\n", status)
	if echo && r.seq != "" {
		fmt.Fprintf(&b, "%s: %s\r\n", seqHeader, r.seq)
	}
	for _, h := range headers {
		b.WriteString(h + "\r\n")
	}
	fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n%s", len(body), body)
	return b.String()
}

// ok is the right answer, echoing seqHeader as members do.
func (r *peerReq) ok() string { return r.answer("200 OK", r.value(), true) }

// okBare is the right answer from a peer that does not echo seqHeader.
func (r *peerReq) okBare() string { return r.answer("200 OK", r.value(), false) }

func (r *peerReq) value() string { return `{"v":"` + strings.ToUpper(r.s) + `"}` }

// dup is a second answer to the same request, which any later request
// would take for its own: its value belongs to this one.
func (r *peerReq) dup(echo bool) string {
	return r.answer("200 OK", `{"v":"`+strings.ToUpper(r.s)+`"}`, echo)
}
