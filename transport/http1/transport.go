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
	"os"
	"sync"
	"syscall"
	"time"
)

// Transport is an HTTP/1.1 http.RoundTripper for the mesh's own requests:
// the calling goroutine writes the request and reads the answer itself, on
// a kept-alive connection from a pool per host, without net/http's hand-offs
// to per-connection goroutines (most of what a hop costs; BENCHMARKS.md, "A
// leaner forward path"). It speaks http and https, no proxies, no HTTP/2,
// no compression; a request must carry its deadline in its context.
//
// A peer's bytes never frame the next answer. Every request carries
// SeqHeader, and a connection is kept alive only once its peer echoed the
// right number; it goes back to the pool only when nothing is buffered past
// the answer, and out again only when nothing arrived while it was idle. A
// peer caught sending unasked bytes gets a connection per request for a
// minute. A request that fails on a reused connection before any answer
// byte, or gets 408 there, is sent once more on a new one when its body can
// be had again: members' requests are idempotent.
type Transport struct {
	// Dialer makes the connections; nil means a net.Dialer with a 2 s
	// timeout.
	Dialer *net.Dialer
	// TLS is the configuration of https connections. Nil refuses https.
	TLS *tls.Config
	// Track, if set, is told of every TLS connection after its handshake,
	// and its result is called once the connection closes: the mesh's
	// identity closes a connection whose peer's certificate stops being
	// valid (see discovery.Identity.TrackClient).
	Track func(sock net.Conn, cs tls.ConnectionState) (untrack func())
	// MaxIdlePerHost bounds the idle connections kept for one host.
	MaxIdlePerHost int
	// IdleTimeout closes a connection idle for longer. It must be shorter
	// than the peers' own idle timeout.
	IdleTimeout time.Duration
	// MaxResponseHeaderBytes bounds an answer's status lines and headers,
	// those of interim (1xx) answers included.
	MaxResponseHeaderBytes int64

	mu        sync.Mutex
	idle      map[connKey][]*directConn
	strays    map[string]time.Time // host -> until when it gets no kept-alive connection
	lastSweep time.Time
}

// strayQuarantine is how long a peer that sent bytes nobody asked for,
// or that does not echo SeqHeader, gets a connection per request: its
// bytes can then reach no other request.
const strayQuarantine = time.Minute

// malformed reports whether err is bytes that are no answer, as opposed
// to a connection that failed or timed out.
func malformed(err error) bool {
	var ne net.Error
	switch {
	case errors.Is(err, ErrProtocol):
		return true
	case errors.As(err, &ne), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, errPeerTimedOut), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.Is(err, errRequestBody), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return false
	}
	return true
}

// NewTransport returns the Transport members forward with:
// maxIdlePerHost idle connections per upstream, closed after 60 s idle
// (members' servers keep them 120 s), answers' headers bounded to 16 KiB.
func NewTransport(maxIdlePerHost int) *Transport {
	if maxIdlePerHost <= 0 {
		maxIdlePerHost = 256
	}
	return &Transport{
		Dialer:                 &net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second},
		MaxIdlePerHost:         maxIdlePerHost,
		IdleTimeout:            60 * time.Second,
		MaxResponseHeaderBytes: maxResponseHeaderBytes,
	}
}

// maxResponseHeaderBytes bounds the headers of an upstream's answer: ours
// have a handful of short ones, where Go's default allows 10 MB.
const maxResponseHeaderBytes = 16 << 10

// RoundTrip implements http.RoundTripper. It closes req.Body on every
// path, as the RoundTripper contract says.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	key, tlsConfig, err := t.route(req)
	if err == nil {
		err = validRequest(req)
	}
	if err != nil {
		closeBody(req)
		return nil, err
	}
	ctx := req.Context()
	for again := false; ; again = true {
		c, single := t.get(key, again)
		reused := c != nil
		if c == nil {
			if c, err = t.dial(ctx, key, tlsConfig); err != nil {
				closeBody(req)
				return nil, err
			}
		}
		resp, sent, err := c.roundTrip(ctx, req, single)
		if err == nil {
			return resp, nil
		}
		c.close()
		if sent && malformed(err) {
			// Bytes that are no answer: stray bytes the peer sent
			// before it, or garbage.
			t.quarantine(key.host)
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if _, ok := ctx.Deadline(); ok && errors.Is(err, os.ErrDeadlineExceeded) {
			// The socket's deadline is the context's, and may fire a
			// moment before the context's own timer.
			return nil, context.DeadlineExceeded
		}
		// 408 says the peer gave up on the connection, not on the
		// request: it never read it (RFC 9110, section 15.5.9).
		timedOut := errors.Is(err, errPeerTimedOut)
		if !reused || (sent && !timedOut) || again || req.GetBody == nil || errors.Is(err, errRequestBody) {
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

// route returns the pool and TLS configuration of req.
func (t *Transport) route(req *http.Request) (connKey, *tls.Config, error) {
	if req.URL == nil || req.URL.Host == "" {
		return connKey{}, nil, errors.New("http1: no host in the request's URL")
	}
	switch req.URL.Scheme {
	case "http":
		return connKey{host: req.URL.Host}, nil, nil
	case "https":
		if t.TLS == nil {
			return connKey{}, nil, errors.New("http1: https without a TLS configuration")
		}
		return connKey{host: req.URL.Host, tls: true}, t.TLS, nil
	default:
		return connKey{}, nil, fmt.Errorf("http1: unsupported scheme %q", req.URL.Scheme)
	}
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}

// CloseIdleConnections closes every idle connection, as http.Transport's
// does.
func (t *Transport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle = nil
	t.mu.Unlock()
	for _, conns := range idle {
		for _, c := range conns {
			c.close()
		}
	}
}

func (t *Transport) dial(ctx context.Context, key connKey, tlsConfig *tls.Config) (*directConn, error) {
	host := key.host
	d := t.Dialer
	if d == nil {
		d = &net.Dialer{Timeout: 2 * time.Second}
	}
	start := time.Now()
	nc, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		return nil, dialError(ctx, err, d, start)
	}
	c := &directConn{t: t, key: key, sock: nc, nc: nc}
	if sc, ok := nc.(syscall.Conn); ok {
		c.raw, _ = sc.SyscallConn()
	}
	if tlsConfig != nil {
		if tlsConfig.ServerName == "" {
			// As net/http does: the name to verify, and to send as SNI.
			tlsConfig = tlsConfig.Clone()
			tlsConfig.ServerName, _, _ = net.SplitHostPort(host)
		}
		c.records = newRecordReader(nc)
		tc := tls.Client(recordConn{Conn: nc, r: c.records}, tlsConfig)
		if err := tc.HandshakeContext(ctx); err != nil {
			nc.Close()
			return nil, err
		}
		c.nc = tc
		if t.Track != nil {
			c.untrack = t.Track(nc, tc.ConnectionState())
		}
	}
	c.peekFn = c.peek
	c.rec.r = c.nc
	c.lr.R = &c.rec
	c.br = bufio.NewReader(&c.lr)
	c.bw = bufio.NewWriter(c.nc)
	return c, nil
}

// dialError is err, a dial d began at start, told apart by whose deadline
// ended it, which is decided as net.Dialer decides which deadline binds,
// not by reading the clock afterwards (a loaded machine reports late). A
// timeout under the context's deadline is the context's DeadlineExceeded:
// the socket's deadline is then the context's and may fire before the
// context's own timer, so that the dial fails with a bare i/o timeout
// while ctx.Err() is still nil, and a caller-bound timeout would count
// against the peer (lb.CallerBound). One under the dialer's own timeout,
// sooner than the context's deadline, is the peer's failure and never
// DeadlineExceeded, even where net reports it through a context of its
// own; its text stays.
func dialError(ctx context.Context, err error, d *net.Dialer, start time.Time) error {
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		return err
	}
	deadline, ok := ctx.Deadline()
	if ok && (d.Timeout <= 0 || !deadline.After(start.Add(d.Timeout))) && (d.Deadline.IsZero() || !deadline.After(d.Deadline)) {
		if errors.Is(err, context.DeadlineExceeded) {
			return err
		}
		return fmt.Errorf("%w: %w", context.DeadlineExceeded, err)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	op := &net.OpError{Op: "dial", Net: "tcp"}
	if e, ok := err.(*net.OpError); ok {
		c := *e
		op = &c
		err = e.Err
	}
	op.Err = ownTimeout{err.Error()}
	return op
}

// ownTimeout is a timeout of the dialer's own: a net.Error that is a
// timeout, and not the context's DeadlineExceeded (it wraps nothing).
type ownTimeout struct{ text string }

func (e ownTimeout) Error() string   { return e.text }
func (e ownTimeout) Timeout() bool   { return true }
func (e ownTimeout) Temporary() bool { return true }

// get returns an idle connection for key that is still clean, or nil
// when there is none or fresh says not to look. single reports a peer in
// quarantine.
func (t *Transport) get(key connKey, fresh bool) (c *directConn, single bool) {
	now := time.Now()
	for {
		t.mu.Lock()
		t.sweep(now)
		if t.quarantined(key.host, now) {
			t.mu.Unlock()
			return nil, true
		}
		if fresh {
			t.mu.Unlock()
			return nil, false
		}
		c = nil
		if conns := t.idle[key]; len(conns) > 0 {
			// The emptied slice stays, for the next put (the sweep
			// drops it once the host is gone).
			c = conns[len(conns)-1]
			conns[len(conns)-1] = nil
			t.idle[key] = conns[:len(conns)-1]
		}
		t.mu.Unlock()
		if c == nil {
			return nil, false
		}
		// The check is outside the lock: it is a system call.
		if now.Sub(c.idleSince) < t.IdleTimeout {
			clean, stray := c.idleClean()
			if clean {
				return c, false
			}
			if stray {
				t.quarantine(key.host)
			}
		}
		c.close()
	}
}

// quarantine gives host a connection per request for strayQuarantine,
// each request with Connection: close, and closes its idle connections.
func (t *Transport) quarantine(host string) {
	t.mu.Lock()
	if t.strays == nil {
		t.strays = map[string]time.Time{}
	}
	t.strays[host] = time.Now().Add(strayQuarantine)
	var drop []*directConn
	for _, key := range []connKey{{host: host}, {host: host, tls: true}} {
		drop = append(drop, t.idle[key]...)
		delete(t.idle, key)
	}
	t.mu.Unlock()
	for _, c := range drop {
		c.close()
	}
}

// quarantined reports whether host is in quarantine. t.mu is held.
func (t *Transport) quarantined(host string, now time.Time) bool {
	until, ok := t.strays[host]
	if ok && !now.Before(until) {
		delete(t.strays, host)
		return false
	}
	return ok
}

// dropIdle closes the idle connections to key.
func (t *Transport) dropIdle(key connKey) {
	t.mu.Lock()
	conns := t.idle[key]
	delete(t.idle, key)
	t.mu.Unlock()
	for _, c := range conns {
		c.close()
	}
}

// put keeps c for the next request to its host, or closes it.
func (t *Transport) put(c *directConn) {
	c.idleSince = time.Now()
	t.mu.Lock()
	if t.idle == nil {
		t.idle = map[connKey][]*directConn{}
	}
	if len(t.idle[c.key]) < t.MaxIdlePerHost && !t.quarantined(c.key.host, c.idleSince) {
		t.idle[c.key] = append(t.idle[c.key], c)
		c = nil
	}
	t.mu.Unlock()
	if c != nil {
		c.close()
	}
}

// sweep closes, at most twice per IdleTimeout, the connections idle for
// longer than it, those of instances that are gone included. t.mu is held.
func (t *Transport) sweep(now time.Time) {
	if now.Sub(t.lastSweep) < t.IdleTimeout/2 {
		return
	}
	t.lastSweep = now
	for host, until := range t.strays {
		if !now.Before(until) {
			delete(t.strays, host)
		}
	}
	for key, conns := range t.idle {
		kept := conns[:0]
		for _, c := range conns {
			if now.Sub(c.idleSince) < t.IdleTimeout {
				kept = append(kept, c)
			} else {
				c.close()
			}
		}
		clear(conns[len(kept):])
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
