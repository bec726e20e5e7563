package http1

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/kitmesh/stringsvc/internal/clip"
)

// maxUnknownBody bounds a request body of unknown length, which is read
// to count it.
const maxUnknownBody = 16 << 20

// errRequestBody is a failure of the request's own body, never the
// peer's: the request is not sent again.
var errRequestBody = errors.New("http1: the request body")

// errBodyShort is a body that ended before its Content-Length.
var errBodyShort = fmt.Errorf("%w is shorter than its ContentLength", errRequestBody)

// validRequest refuses what net/http's client refuses, so that nothing in
// a request can end a line early or frame a second request: a method that
// is not a token, a control character in the host, the target or a header,
// and a length that no body backs.
func validRequest(req *http.Request) error {
	if req.Method != "" && !isToken(req.Method) {
		return fmt.Errorf("http1: invalid method %q", clip.String(req.Method, 64))
	}
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	if !isPrintable(host, false) {
		return fmt.Errorf("http1: invalid host %q", clip.String(host, 64))
	}
	if req.URL.Opaque == "" && !isPrintable(req.URL.RawQuery, false) {
		return fmt.Errorf("http1: invalid query %q", clip.String(req.URL.RawQuery, 64))
	}
	if !isPrintable(req.URL.Opaque, false) {
		return fmt.Errorf("http1: invalid target %q", clip.String(req.URL.Opaque, 64))
	}
	for k, vs := range req.Header {
		if !isToken(k) {
			return fmt.Errorf("http1: invalid header name %q", clip.String(k, 64))
		}
		for _, v := range vs {
			if !isPrintable(v, true) {
				return fmt.Errorf("http1: invalid value of header %s", k)
			}
		}
	}
	noBody := req.Body == nil || req.Body == http.NoBody
	switch n := req.ContentLength; {
	case n < -1:
		return fmt.Errorf("http1: invalid ContentLength %d", n)
	case n != 0 && noBody:
		return fmt.Errorf("http1: ContentLength %d with no body", n)
	}
	return nil
}

// isToken reports whether s is an RFC 9110 token (section 5.6.2).
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// isPrintable reports whether s has no control character (CR, LF and NUL
// among them) and, unless spaces are allowed (a header value), no space;
// a header value may hold a tab.
func isPrintable(s string, spaces bool) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == 0x7f || c < ' ' && !(spaces && c == '\t') || c == ' ' && !spaces {
			return false
		}
	}
	return true
}

// countedBody returns req's body and its length; a body of unknown
// length is read to count it (the mesh's bodies are small). It closes
// req.Body when it fails.
func countedBody(req *http.Request) (io.ReadCloser, int64, error) {
	body, n := req.Body, req.ContentLength
	if body == http.NoBody {
		body = nil
	}
	if body == nil || n > 0 {
		return body, n, nil
	}
	b, err := io.ReadAll(io.LimitReader(body, maxUnknownBody+1))
	body.Close()
	switch {
	case err != nil:
		return nil, 0, fmt.Errorf("%w failed: %w", errRequestBody, err)
	case len(b) > maxUnknownBody:
		return nil, 0, fmt.Errorf("http1: a request body of unknown length over %d bytes", maxUnknownBody)
	}
	return io.NopCloser(bytes.NewReader(b)), int64(len(b)), nil
}

// writeRequest writes req with body, n bytes long, as HTTP/1.1 and
// flushes it; validRequest passed it. It is Request.Write cut down to the
// mesh's requests, and it leaves a failed write's error as the network's
// (Request.Write hides a broken pipe in an error type of its own, which
// made a dead peer look like a failed request body). toPeer reports
// whether the failure, if any, was the connection's, after which the peer
// may have answered; otherwise it was the body's. single adds
// Connection: close. It closes the body.
func (c *directConn) writeRequest(req *http.Request, body io.ReadCloser, n int64, single bool) (toPeer bool, err error) {
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
	w.WriteString(host)
	w.WriteString("\r\n")
	if _, ok := req.Header["User-Agent"]; !ok {
		w.WriteString("User-Agent: stringsvc\r\n")
	}
	if n > 0 || method == http.MethodPost || method == http.MethodPut || method == http.MethodPatch {
		w.WriteString("Content-Length: ")
		w.Write(strconv.AppendInt(c.num[:0], n, 10))
		w.WriteString("\r\n")
	}
	w.WriteString(SeqHeader + ": ")
	w.Write(strconv.AppendUint(c.num[:0], c.seq, 10))
	w.WriteString("\r\n")
	if single {
		w.WriteString("Connection: close\r\n")
	}
	// Host, Content-Length and SeqHeader are the request's own fields,
	// written above.
	if err := req.Header.WriteSubset(w, excludedHeaders); err != nil {
		return true, err
	}
	w.WriteString("\r\n")
	if n > 0 {
		c.bodyErr, c.src = nil, bodySource{c, body}
		written, err := io.CopyN(w, &c.src, n)
		c.src = bodySource{} // keeps no body past its request
		switch {
		case written == n:
		case c.bodyErr == io.EOF:
			return false, errBodyShort
		case c.bodyErr != nil:
			return false, fmt.Errorf("%w failed: %w", errRequestBody, c.bodyErr)
		default:
			return true, err
		}
	}
	return true, w.Flush()
}

// bodySource reads a request body and keeps its failure apart from the
// connection's.
type bodySource struct {
	c *directConn
	r io.Reader
}

func (s *bodySource) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil {
		s.c.bodyErr = err
	}
	return n, err
}

// excludedHeaders are written from the request's fields, not its Header.
var excludedHeaders = map[string]bool{"Host": true, "Content-Length": true, "Transfer-Encoding": true, "Connection": true, SeqHeader: true}
