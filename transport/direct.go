package transport

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// DirectTransport is an HTTP/1.1 http.RoundTripper for the mesh's own
// requests: the calling goroutine writes the request and reads the answer
// itself, on a kept-alive connection from a pool per host. net/http's
// Transport hands every request to a write goroutine and every answer back
// from a read goroutine of its connection; on a forward those hand-offs
// between threads are most of what a hop adds (BENCHMARKS.md, "A leaner
// forward path").
//
// It serves what members send each other and no more: http and https
// (with TLS, the mesh's mutual TLS), no proxies, no HTTP/2, no
// compression, no 1xx answers. A request must carry its deadline or
// cancellation in its context, as lb.Retry's attempts do; a cancelled
// request closes its connection. A request that fails on a reused
// connection before any byte of the answer arrived (the peer closed it
// while it was idle, or restarted) is sent once more on a new connection,
// when its body can be had again (Request.GetBody): members' requests are
// idempotent. The other idle connections to that peer are closed then too.
type DirectTransport struct {
	// Dialer makes the connections; nil means a net.Dialer with a 2 s
	// timeout.
	Dialer *net.Dialer
	// TLS is the configuration of https connections. Nil refuses https.
	TLS *tls.Config
	// MaxIdlePerHost bounds the idle connections kept for one host.
	MaxIdlePerHost int
	// IdleTimeout closes a connection idle for longer. It must be shorter
	// than the peers' own idle timeout.
	IdleTimeout time.Duration
	// MaxResponseHeaderBytes bounds an answer's status line and headers.
	MaxResponseHeaderBytes int64

	mu        sync.Mutex
	idle      map[connKey][]*directConn
	lastSweep time.Time
}

// NewDirectTransport returns the DirectTransport members forward with:
// maxIdlePerHost idle connections per upstream, closed after 60 s idle
// (members' servers keep them 120 s), answers' headers bounded as
// NewHTTPTransport's are.
func NewDirectTransport(maxIdlePerHost int) *DirectTransport {
	if maxIdlePerHost <= 0 {
		maxIdlePerHost = 256
	}
	return &DirectTransport{
		Dialer:                 &net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second},
		MaxIdlePerHost:         maxIdlePerHost,
		IdleTimeout:            60 * time.Second,
		MaxResponseHeaderBytes: maxResponseHeaderBytes,
	}
}

// errTooManyHeaderBytes is an answer whose header exceeds
// MaxResponseHeaderBytes.
var errTooManyHeaderBytes = errors.New("answer's header too large")

// RoundTrip implements http.RoundTripper.
func (t *DirectTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL == nil || req.URL.Host == "" {
		return nil, errors.New("direct transport: no host in the request's URL")
	}
	var tlsConfig *tls.Config
	switch req.URL.Scheme {
	case "http":
	case "https":
		if tlsConfig = t.TLS; tlsConfig == nil {
			return nil, errors.New("direct transport: https without a TLS configuration")
		}
	default:
		return nil, fmt.Errorf("direct transport: unsupported scheme %q", req.URL.Scheme)
	}
	ctx := req.Context()
	key := connKey{host: req.URL.Host, tls: tlsConfig != nil}
	for again := false; ; again = true {
		var c *directConn
		if !again {
			c = t.get(key)
		}
		reused := c != nil
		if c == nil {
			var err error
			if c, err = t.dial(ctx, key, tlsConfig); err != nil {
				return nil, err
			}
		}
		resp, sent, err := c.roundTrip(ctx, req)
		if err == nil {
			return resp, nil
		}
		c.nc.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if _, ok := ctx.Deadline(); ok && errors.Is(err, os.ErrDeadlineExceeded) {
			// The socket's deadline is the context's, and may fire a
			// moment before the context's own timer.
			return nil, context.DeadlineExceeded
		}
		if !reused || sent || again || req.GetBody == nil {
			return nil, err
		}
		// The idle connection was dead, and so, most likely, are the
		// others to the same peer (it closed them all, or restarted):
		// drop them, and send the request once more on a new one.
		t.dropIdle(key)
		body, gerr := req.GetBody()
		if gerr != nil {
			return nil, err
		}
		req = req.Clone(ctx)
		req.Body = body
	}
}

// CloseIdleConnections closes every idle connection, as http.Transport's
// does.
func (t *DirectTransport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle = nil
	t.mu.Unlock()
	for _, conns := range idle {
		for _, c := range conns {
			c.nc.Close()
		}
	}
}

func (t *DirectTransport) dial(ctx context.Context, key connKey, tlsConfig *tls.Config) (*directConn, error) {
	host := key.host
	d := t.Dialer
	if d == nil {
		d = &net.Dialer{Timeout: 2 * time.Second}
	}
	nc, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		return nil, err
	}
	if tlsConfig != nil {
		if tlsConfig.ServerName == "" {
			// As net/http does: the name to verify, and to send as SNI.
			tlsConfig = tlsConfig.Clone()
			tlsConfig.ServerName, _, _ = net.SplitHostPort(host)
		}
		tc := tls.Client(nc, tlsConfig)
		if err := tc.HandshakeContext(ctx); err != nil {
			nc.Close()
			return nil, err
		}
		nc = tc
	}
	c := &directConn{t: t, key: key, nc: nc}
	c.lr.R = nc
	c.br = bufio.NewReader(&c.lr)
	c.bw = bufio.NewWriter(nc)
	return c, nil
}

// get returns an idle connection for key, or nil.
func (t *DirectTransport) get(key connKey) *directConn {
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.sweep(now)
	conns := t.idle[key]
	for len(conns) > 0 {
		c := conns[len(conns)-1]
		conns = conns[:len(conns)-1]
		if now.Sub(c.idleSince) < t.IdleTimeout {
			t.idle[key] = conns
			return c
		}
		c.nc.Close()
	}
	delete(t.idle, key)
	return nil
}

// dropIdle closes the idle connections to key.
func (t *DirectTransport) dropIdle(key connKey) {
	t.mu.Lock()
	conns := t.idle[key]
	delete(t.idle, key)
	t.mu.Unlock()
	for _, c := range conns {
		c.nc.Close()
	}
}

// put keeps c for the next request to its host, or closes it.
func (t *DirectTransport) put(c *directConn) {
	c.idleSince = time.Now()
	t.mu.Lock()
	if t.idle == nil {
		t.idle = map[connKey][]*directConn{}
	}
	if len(t.idle[c.key]) < t.MaxIdlePerHost {
		t.idle[c.key] = append(t.idle[c.key], c)
		c = nil
	}
	t.mu.Unlock()
	if c != nil {
		c.nc.Close()
	}
}

// sweep closes, at most twice per IdleTimeout, the connections idle for
// longer than it, those of instances that are gone included. t.mu is held.
func (t *DirectTransport) sweep(now time.Time) {
	if now.Sub(t.lastSweep) < t.IdleTimeout/2 {
		return
	}
	t.lastSweep = now
	for key, conns := range t.idle {
		kept := conns[:0]
		for _, c := range conns {
			if now.Sub(c.idleSince) < t.IdleTimeout {
				kept = append(kept, c)
			} else {
				c.nc.Close()
			}
		}
		if len(kept) == 0 {
			delete(t.idle, key)
		} else {
			t.idle[key] = kept
		}
	}
}

// connKey names the connections that can carry a request: its host and
// whether it goes over TLS. (A struct, so that finding them allocates no
// string.)
type connKey struct {
	host string
	tls  bool
}

// directConn is one kept-alive connection.
type directConn struct {
	t         *DirectTransport
	key       connKey
	nc        net.Conn
	lr        io.LimitedReader // bounds the answer's header
	br        *bufio.Reader
	bw        *bufio.Writer
	num       [20]byte // formats Content-Length
	idleSince time.Time
}

// aLongTimeAgo is a deadline that fails every pending read and write at
// once.
var aLongTimeAgo = time.Unix(1, 0)

// roundTrip sends req and reads the answer's header. sent reports whether
// any byte of an answer arrived, after which the request must not be sent
// again.
func (c *directConn) roundTrip(ctx context.Context, req *http.Request) (resp *http.Response, sent bool, err error) {
	deadline, _ := ctx.Deadline() // zero: none
	if err := c.nc.SetDeadline(deadline); err != nil {
		return nil, false, err
	}
	stop := context.AfterFunc(ctx, func() { c.nc.SetDeadline(aLongTimeAgo) })
	if err := c.writeRequest(req); err != nil {
		stop()
		return nil, false, err
	}
	limit := c.t.MaxResponseHeaderBytes
	if limit <= 0 {
		limit = 1 << 20
	}
	c.lr.N = limit
	resp, err = http.ReadResponse(c.br, req)
	sent = c.lr.N < limit || c.br.Buffered() > 0
	exhausted := c.lr.N <= 0 // the header reached the bound
	c.lr.N = math.MaxInt64
	if err != nil {
		stop()
		if exhausted {
			err = errTooManyHeaderBytes
		}
		return nil, sent, err
	}
	if resp.StatusCode < 200 {
		stop()
		resp.Body.Close()
		return nil, true, fmt.Errorf("direct transport: unexpected %s", resp.Status)
	}
	resp.Body = &directBody{c: c, rc: resp.Body, stop: stop, reusable: !resp.Close && (resp.ContentLength >= 0 || len(resp.TransferEncoding) > 0)}
	return resp, true, nil
}

// writeRequest writes req as HTTP/1.1 and flushes it. It is
// Request.Write cut down to the mesh's requests, and it leaves a failed
// write's error as the network's (Request.Write hides a broken pipe in
// an error type of its own, which made a dead peer look like a failed
// request body).
func (c *directConn) writeRequest(req *http.Request) error {
	body, n := req.Body, req.ContentLength
	if body != nil && body != http.NoBody && n <= 0 {
		// Unknown length: the mesh's bodies are small; read it to count.
		b, err := io.ReadAll(body)
		body.Close()
		if err != nil {
			return fmt.Errorf("direct transport: reading the request body: %w", err)
		}
		body, n = io.NopCloser(bytes.NewReader(b)), int64(len(b))
	}
	if body != nil {
		defer body.Close()
	}
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	method := req.Method
	if method == "" {
		method = http.MethodGet
	}
	w := c.bw
	w.WriteString(method)
	w.WriteByte(' ')
	w.WriteString(req.URL.RequestURI())
	w.WriteString(" HTTP/1.1\r\nHost: ")
	w.WriteString(headerValue.Replace(host))
	w.WriteString("\r\n")
	if _, ok := req.Header["User-Agent"]; !ok {
		w.WriteString("User-Agent: stringsvc\r\n")
	}
	if n > 0 || method == http.MethodPost || method == http.MethodPut {
		w.WriteString("Content-Length: ")
		w.Write(strconv.AppendInt(c.num[:0], n, 10))
		w.WriteString("\r\n")
	}
	// Header.Write drops Host and Content-Length (they are the request's
	// fields, written above) and turns newlines in values into spaces.
	if err := req.Header.WriteSubset(w, excludedHeaders); err != nil {
		return err
	}
	w.WriteString("\r\n")
	if n > 0 {
		if _, err := io.CopyN(w, body, n); err != nil {
			return err
		}
	}
	return w.Flush()
}

// excludedHeaders are written from the request's fields, not its Header.
var excludedHeaders = map[string]bool{"Host": true, "Content-Length": true, "Transfer-Encoding": true, "Connection": true}

// headerValue keeps a request's Host from ending its line early.
var headerValue = strings.NewReplacer("\r", " ", "\n", " ")

// directBody returns its connection to the pool once the answer was read
// to its end and closed, and closes it otherwise.
type directBody struct {
	c        *directConn
	rc       io.ReadCloser
	stop     func() bool
	reusable bool
	eof      bool
	done     bool
}

func (b *directBody) Read(p []byte) (int, error) {
	if b.done {
		return 0, errors.New("read on a closed answer")
	}
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.eof = true
	}
	return n, err
}

func (b *directBody) Close() error {
	if b.done {
		return nil
	}
	b.done = true
	err := b.rc.Close()
	// stop is false once the context's AfterFunc ran (or is running): the
	// connection's deadline is then in the past, and it is closed.
	if b.stop() && b.eof && b.reusable && err == nil {
		b.c.t.put(b.c)
		return nil
	}
	b.c.nc.Close()
	return err
}
