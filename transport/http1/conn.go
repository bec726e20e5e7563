package http1

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// SeqHeader carries a request's number on its connection. Members echo it
// in every answer (see NewHTTPHandler), so that Transport can tell
// the answer to a request from one that a peer left on the connection
// before it. HTTP/1.1 itself has no way to: an extra answer that arrives
// just after the next request was written looks like that request's.
const SeqHeader = "X-Stringsvc-Seq"

// EchoSeq echoes a request's SeqHeader in its answer, whatever the
// answer, so that the caller's Transport can tell it from a stale
// one. It passes the server's own ResponseWriter on, so that a body limit
// inside it can still close the connection after a 413.
func EchoSeq(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if v, ok := r.Header[SeqHeader]; ok {
			w.Header()[SeqHeader] = v
		}
		next.ServeHTTP(w, r)
	})
}

// ErrProtocol is an answer that breaks HTTP/1.1 or the mesh's framing
// rules: unsolicited or stale bytes, a switch of protocols, contradicting
// lengths. It is the peer's failure, never the request's.
var ErrProtocol = errors.New("peer broke HTTP/1.1")

var (
	// errTooManyHeaderBytes is an answer whose header exceeds
	// MaxResponseHeaderBytes.
	errTooManyHeaderBytes = fmt.Errorf("%w: answer's header too large", ErrProtocol)
	// errPeerTimedOut is a 408: the peer closed the connection, idle or
	// not, and never read the request.
	errPeerTimedOut = errors.New("peer answered 408 Request Timeout: it closed the connection")
	// errReadAfterClose is a read of an answer already closed.
	errReadAfterClose = errors.New("read on a closed answer")
)

// maxInterim bounds the 1xx answers skipped before the final one, as
// net/http does.
const maxInterim = 5

// directConn is one kept-alive connection.
type directConn struct {
	t       *Transport
	key     connKey
	sock    net.Conn        // the TCP connection
	raw     syscall.RawConn // sock's descriptor, for the idle check; nil if it has none
	nc      net.Conn        // what requests and answers travel on: sock, or TLS over it
	untrack func()          // from Transport.Track; nil without
	records *recordReader   // under TLS: hands it whole records only; nil without
	lr      io.LimitedReader
	rec     recorder // the header bytes of an answer, for checks net/http hides
	br      *bufio.Reader
	bw      *bufio.Writer
	num     [20]byte   // formats numbers
	one     [1]byte    // the idle check's read, and peek's
	seq     uint64     // requests written on this connection
	echoes  bool       // the peer echoed SeqHeader on this connection
	bodyErr error      // the request body's own failure, while writing it
	src     bodySource // reads the request body, keeping bodyErr

	idleSince time.Time
	peekFn    func(fd uintptr) // c.peek, made once
	peekN     int
	peekErr   error
}

// aLongTimeAgo is a deadline that fails every pending read and write at
// once.
var aLongTimeAgo = time.Unix(1, 0)

// close closes the socket itself: tls.Conn's Close would send an alert
// first, and could wait for a peer that does not read.
func (c *directConn) close() {
	c.sock.Close()
	if c.untrack != nil {
		c.untrack()
	}
}

// roundTrip sends req and reads the answer's header. sent reports whether
// any byte of an answer arrived, after which the request must not be sent
// again. single asks the peer to close the connection after its answer
// (Connection: close), so that the peer, not this member, holds the
// closed connection's TIME_WAIT.
func (c *directConn) roundTrip(ctx context.Context, req *http.Request, single bool) (resp *http.Response, sent bool, err error) {
	body, n, err := countedBody(req)
	if err != nil {
		return nil, false, err
	}
	deadline, _ := ctx.Deadline() // zero: none
	if err := c.nc.SetDeadline(deadline); err != nil {
		if body != nil {
			body.Close()
		}
		return nil, false, err
	}
	stop := context.AfterFunc(ctx, func() { c.nc.SetDeadline(aLongTimeAgo) })
	c.seq++
	var (
		toPeer bool
		werr   error
	)
	if n < asideFrom {
		if toPeer, werr = c.writeRequest(req, body, n, single); werr != nil && !toPeer {
			stop()
			return nil, false, werr
		}
		// After a failed write the peer may still have answered
		// before it stopped reading: that answer is the request's.
		resp, sent, err = c.readAnswer(req)
	} else {
		var cut bool
		var bodyErr error
		resp, sent, err, cut, bodyErr = c.writeAside(req, body, n, single)
		switch {
		case err == nil:
			// The answer is the request's, whatever became of the
			// body's last bytes; nothing can follow it.
			resp.Close = resp.Close || cut || bodyErr != nil
		case bodyErr != nil:
			stop()
			return nil, sent, bodyErr
		}
		if err != nil {
			stop()
			return nil, sent, err
		}
	}
	if err == nil && werr != nil {
		resp.Close = true // the request was cut: nothing can follow it
	}
	if err != nil {
		stop()
		if werr != nil {
			return nil, sent, werr
		}
		return nil, sent, err
	}
	resp.Body = &directBody{c: c, rc: resp.Body, req: req, stop: stop, reusable: !resp.Close && (resp.ContentLength >= 0 || len(resp.TransferEncoding) > 0)}
	return resp, true, nil
}

// writeAside writes a large body from a goroutine of its own while it
// reads the answer: a peer may answer before it has read it all (a 413
// to a body over its limit), and then stop reading without closing
// (net/http's server waits half a second), and RFC 9112, section 9.5,
// asks a client to watch for that answer while it sends. (A function of
// its own, so that the mesh's small requests do not pay for the
// variables the goroutine shares.)
func (c *directConn) writeAside(req *http.Request, body io.ReadCloser, n int64, single bool) (resp *http.Response, sent bool, err error, cut bool, bodyErr error) {
	written := make(chan struct{})
	var (
		toPeer bool
		werr   error
	)
	go func() {
		defer close(written)
		if toPeer, werr = c.writeRequest(req, body, n, single); werr != nil && !toPeer {
			c.nc.SetReadDeadline(aLongTimeAgo) // no answer comes to a request its own body cut short
		}
	}()
	resp, sent, err = c.readAnswer(req)
	select {
	case <-written:
	default:
		// An answer, or the reader's failure, before the whole body
		// went: stop sending it. The writer's error is then this
		// function's doing, and the reader's is the one that counts.
		c.nc.SetWriteDeadline(aLongTimeAgo)
		<-written
		if toPeer {
			return resp, sent, err, true, nil
		}
	}
	if werr != nil && !toPeer {
		return resp, sent, err, true, werr
	}
	return resp, sent, err, werr != nil, nil
}

// asideFrom is the size from which a request body is written by a
// goroutine of its own while the answer is read. The mesh's requests are
// far smaller, and are written by the calling goroutine.
const asideFrom = 64 << 10

// readAnswer reads the answer's status line and header, skipping interim
// answers as RFC 9110, section 15.2, says, and checks them.
func (c *directConn) readAnswer(req *http.Request) (*http.Response, bool, error) {
	limit := c.t.MaxResponseHeaderBytes
	if limit <= 0 {
		limit = 1 << 20
	}
	c.lr.N = limit
	c.rec.start(int(limit))
	defer func() { c.lr.N = math.MaxInt64; c.rec.stop() }()
	for interim := 0; ; interim++ {
		resp, err := http.ReadResponse(c.br, req)
		sent := c.lr.N < limit || c.br.Buffered() > 0
		if err != nil {
			if c.lr.N <= 0 { // the header reached the bound
				err = errTooManyHeaderBytes
			}
			return nil, sent, err
		}
		switch code := resp.StatusCode; {
		case code < 100 || code > 599:
			// RFC 9110, section 15: not a status code at all.
			return nil, true, fmt.Errorf("%w: status %d", ErrProtocol, code)
		case code >= 200:
			return resp, true, c.check(resp)
		case code == http.StatusSwitchingProtocols:
			return nil, true, fmt.Errorf("%w: answered 101 Switching Protocols to a request that asked for no switch", ErrProtocol)
		case interim == maxInterim:
			return nil, true, fmt.Errorf("%w: more than %d interim (1xx) answers", ErrProtocol, maxInterim)
		}
		// 100 Continue, 103 Early Hints and the rest have no body.
		c.rec.restart(c.br.Buffered())
	}
}

// check refuses a final answer that cannot be this request's, or whose
// framing is in doubt.
func (c *directConn) check(resp *http.Response) error {
	if resp.StatusCode == http.StatusRequestTimeout {
		// First: a server that closes an idle connection writes it
		// unasked, without the request's number.
		return errPeerTimedOut
	}
	if v := resp.Header[SeqHeader]; len(v) > 0 {
		if len(v) != 1 || !isSeq(v[0], c.seq) {
			return fmt.Errorf("%w: a stale answer: it echoes request %.20q on a connection whose request %d is waiting", ErrProtocol, v[0], c.seq)
		}
		c.echoes = true
	} else if c.echoes {
		return fmt.Errorf("%w: an answer without %s on a connection whose earlier answers echoed it", ErrProtocol, SeqHeader)
	}
	if len(resp.TransferEncoding) > 0 && c.rec.has("content-length") {
		// RFC 9112, section 6.3: it "ought to be handled as an error";
		// net/http drops the Content-Length without a word.
		return fmt.Errorf("%w: both Transfer-Encoding and Content-Length", ErrProtocol)
	}
	if !resp.ProtoAtLeast(1, 1) && c.rec.has("transfer-encoding") {
		// RFC 9112, section 6.1: the framing is faulty, and net/http
		// ignores the field in an HTTP/1.0 answer.
		return fmt.Errorf("%w: Transfer-Encoding in an HTTP/1.0 answer", ErrProtocol)
	}
	return nil
}

// isSeq reports whether s is n in decimal, without allocating.
func isSeq(s string, n uint64) bool {
	v, err := strconv.ParseUint(s, 10, 64)
	return err == nil && v == n && len(s) < 21
}

// reusable reports whether nothing is buffered past the answer just read:
// bytes there are not the next answer.
func (c *directConn) reusable() bool {
	return c.br.Buffered() == 0 && !c.records.holding()
}

// idleClean reports whether nothing arrived on c while it sat idle: no
// byte, no end of stream, no reset. It never waits, unless bytes arrived:
// stray then says whether they were stray (see leftover).
func (c *directConn) idleClean() (clean, stray bool) {
	if !c.reusable() {
		return false, c.leftoverStray()
	}
	// Control, not Read: the peek never waits, and Read would first
	// refuse a socket whose last deadline has passed.
	if c.raw == nil || c.raw.Control(c.peekFn) != nil {
		return false, false
	}
	if !peekedNothing(c.peekN, c.peekErr) {
		return false, c.peekN > 0 && c.leftoverStray()
	}
	if c.records != nil {
		// TLS may hold the plaintext of a record that bufio did not
		// take. A read with a past deadline returns it, or fails at
		// once without reading the socket.
		c.nc.SetReadDeadline(aLongTimeAgo)
		n, err := c.nc.Read(c.one[:])
		if n > 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
			return false, n > 0
		}
	}
	return true, false
}

// goodbye408 begins the status line of the 408 that some servers write
// before they close an idle connection.
const goodbye408 = "HTTP/1.1 408"

// leftoverStray judges bytes that a peer sent and no request asked for,
// past an answer or while the connection was idle: they are stray unless
// they are a goodbye (the end of the stream, a TLS close_notify among
// them, or an idle 408). The bytes are there, or on their way: it waits a
// millisecond at most for them. The connection is closed either way. (A
// record that TLS keeps to itself, a KeyUpdate say, or half a record,
// counts as stray: a peer could otherwise make every idle connection cost
// that millisecond. Members never send one.)
func (c *directConn) leftoverStray() bool {
	c.sock.SetReadDeadline(time.Now().Add(time.Millisecond))
	p, err := c.br.Peek(len(goodbye408))
	switch {
	case len(p) == 0 && err == io.EOF:
		return false
	case len(p) == len(goodbye408) && (string(p) == goodbye408 || string(p) == "HTTP/1.0 408"):
		return false
	}
	return true
}

// directBody returns its connection to the pool once the answer was read
// to its end and closed, and closes it otherwise. Close never waits for
// the peer: it ends a Read in flight rather than wait for it, and never
// reads the rest of an answer.
type directBody struct {
	c        *directConn
	rc       io.ReadCloser
	req      *http.Request
	stop     func() bool
	reusable bool
	closed   atomic.Bool
	mu       sync.Mutex // held by Read, and by Close when no Read is in flight
	eof      bool
}

func (b *directBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed.Load() {
		return 0, errReadAfterClose
	}
	n, err := b.rc.Read(p)
	switch {
	case err == io.EOF:
		b.eof = true
	case err != nil:
		ctx := b.req.Context()
		if ctx.Err() != nil {
			err = ctx.Err()
		} else if _, ok := ctx.Deadline(); ok && errors.Is(err, os.ErrDeadlineExceeded) {
			err = context.DeadlineExceeded
		}
	}
	return n, err
}

func (b *directBody) Close() error {
	if b.closed.Swap(true) {
		return nil
	}
	if !b.mu.TryLock() {
		// A Read is in flight: closing the connection ends it.
		b.stop()
		b.c.close()
		return nil
	}
	defer b.mu.Unlock()
	if !b.eof && b.reusable {
		// The answer may be at its end without its reader having seen
		// EOF yet: a read that cannot wait tells.
		b.c.nc.SetReadDeadline(aLongTimeAgo)
		n, err := b.rc.Read(b.c.one[:])
		b.eof = n == 0 && err == io.EOF
	}
	// stop is false once the context's AfterFunc ran (or is running): the
	// connection's deadline is then in the past, and it is closed.
	if b.stop() && b.eof && b.reusable {
		switch {
		case !b.c.echoes:
			// A peer that does not echo SeqHeader gets a connection
			// per request: a stale answer of its could not be told
			// from the next one's.
			b.c.t.quarantine(b.c.key.host)
		case b.c.reusable():
			b.c.t.put(b.c)
			return nil
		case b.c.leftoverStray():
			// Bytes past the answer's end: not the next answer, and
			// a sign that this peer sends some nobody asked for.
			b.c.t.quarantine(b.c.key.host)
		}
	}
	b.c.close()
	return nil
}

// recorder keeps the bytes an answer's header arrived in, so that check
// can see what net/http's parser drops. The header bound (a
// LimitedReader under it) bounds what it keeps.
type recorder struct {
	r     io.Reader
	on    bool
	limit int
	buf   []byte
}

func (r *recorder) start(limit int) { r.on, r.limit, r.buf = true, limit, r.buf[:0] }
func (r *recorder) stop()           { r.on = false }

// restart drops what was recorded but the last buffered bytes, which
// bufio holds for the next answer: an interim one was just read.
func (r *recorder) restart(buffered int) {
	r.buf = append(r.buf[:0], r.buf[max(0, len(r.buf)-buffered):]...)
}

func (r *recorder) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if r.on && len(r.buf) < r.limit {
		r.buf = append(r.buf, p[:min(n, r.limit-len(r.buf))]...)
	}
	return n, err
}

// has reports whether the header recorded has a field called name (in
// lower case). Its lines end at the first empty one.
func (r *recorder) has(name string) bool {
	for head := r.buf; len(head) > 0; {
		line := head
		if i := bytes.IndexByte(head, '\n'); i >= 0 {
			line, head = head[:i], head[i+1:]
		} else {
			head = nil
		}
		line = bytes.TrimSuffix(line, []byte("\r"))
		if len(line) == 0 {
			return false
		}
		if i := bytes.IndexByte(line, ':'); i > 0 && bytes.EqualFold(bytes.TrimRight(line[:i], " \t"), []byte(name)) {
			return true
		}
	}
	return false
}

// ConnectionLost reports whether err says the connection could not be
// made or was dropped by the other side: refused, reset, a broken pipe, or
// closed before the answer.
func ConnectionLost(err error) bool {
	if err == nil {
		return false // and no *net.OpError to allocate for errors.As
	}
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial" ||
		errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, io.EOF) ||
		errors.Is(err, io.ErrUnexpectedEOF)
}
