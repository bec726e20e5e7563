package discovery

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/go-kit/log"
)

// Token is the ACL token a member sends to Consul. It comes from a file
// (-consul.token-file or CONSUL_HTTP_TOKEN_FILE), read again when the file
// changes, as a Vault agent or consul-template rewrites it, and again at
// once after Consul answers 403; or from CONSUL_HTTP_TOKEN, fixed.
//
// The token itself never leaves this type except in the X-Consul-Token
// header: String, the log lines and every error say only where it comes
// from and whether it is set.
type Token struct {
	file   string
	logger log.Logger

	mu       sync.Mutex
	secret   string
	stamp    fileStamp
	checked  time.Time
	why      *lastReason                // why the file cannot be read
	inFlight map[int]context.CancelFunc // requests made with the current secret
	next     int
}

// fileStamp is what tells a rewritten token file from the one read last.
type fileStamp struct {
	size    int64
	modTime time.Time
}

// recheckEvery is how often the token file is looked at (a stat, not a
// read, unless it changed).
const recheckEvery = time.Second

// NewToken returns the token read from file, or the fixed secret when file
// is empty. A missing or unreadable file is not an error here: the member
// starts, Consul answers 403, and the file is read again until it is there
// (the init container of a secure deployment may still be writing it).
func NewToken(file, secret string, logger log.Logger) *Token {
	t := &Token{file: file, secret: secret, logger: logger, why: &lastReason{logger: logger}}
	if file != "" {
		t.secret = ""
		t.reload(true)
	}
	return t
}

// String says where the token comes from, never what it is.
func (t *Token) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	set := "unset"
	if t.secret != "" {
		set = "set"
	}
	if t.file != "" {
		return fmt.Sprintf("token from file %s (%s)", t.file, set)
	}
	return fmt.Sprintf("token from CONSUL_HTTP_TOKEN (%s)", set)
}

// get returns the current secret, looking at the file at most once per
// recheckEvery.
func (t *Token) get() string {
	if t.file != "" {
		t.mu.Lock()
		due := time.Since(t.checked) >= recheckEvery
		t.mu.Unlock()
		if due {
			t.reload(false)
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.secret
}

// denied is called after a 403: the file is read again at once, since the
// token in it may have been replaced just now.
func (t *Token) denied() {
	if t.file != "" {
		t.reload(true)
	}
}

// reload reads the file if it changed, or if force is set.
func (t *Token) reload(force bool) {
	info, err := os.Stat(t.file)
	t.mu.Lock()
	defer t.mu.Unlock()
	t.checked = time.Now()
	if err != nil {
		t.fail(err)
		return
	}
	stamp := fileStamp{info.Size(), info.ModTime()}
	if !force && stamp == t.stamp {
		return
	}
	data, err := os.ReadFile(t.file)
	if err != nil {
		t.fail(err)
		return
	}
	secret := string(bytes.TrimSpace(data))
	t.stamp = stamp
	t.why.clear()
	if secret != t.secret {
		t.secret = secret
		t.logger.Log("token_file", t.file, "msg", "read a new token", "set", secret != "")
		// A blocking query made with the old token would go on seeing
		// what that token may see for up to its whole wait: end them, so
		// that they are asked again with the new one.
		for id, cancel := range t.inFlight {
			cancel()
			delete(t.inFlight, id)
		}
	}
}

// fail logs, once per reason, why the file cannot be read.
func (t *Token) fail(err error) {
	why := err.Error()
	if errors.Is(err, fs.ErrNotExist) {
		why = "no such file"
	}
	t.why.set(why, true, "token_file", t.file)
}

// RoundTripper returns next with the token set on every request, and the
// file read again after a 403.
func (t *Token) RoundTripper(next http.RoundTripper) http.RoundTripper {
	return tokenTransport{t, next}
}

type tokenTransport struct {
	token *Token
	next  http.RoundTripper
}

func (tt tokenTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	secret := tt.token.get()
	ctx, cancel := context.WithCancel(r.Context())
	r = r.Clone(ctx)
	if secret != "" {
		r.Header.Set("X-Consul-Token", secret)
	}
	done := tt.token.track(cancel)
	resp, err := tt.next.RoundTrip(r)
	if err != nil {
		done()
		return nil, err
	}
	if resp.StatusCode == http.StatusForbidden {
		tt.token.denied()
	}
	resp.Body = &closeHook{ReadCloser: resp.Body, hook: done}
	return resp, nil
}

// track registers the cancel func of a request until the returned func is
// called (when the response body is closed).
func (t *Token) track(cancel context.CancelFunc) (done func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.inFlight == nil {
		t.inFlight = map[int]context.CancelFunc{}
	}
	id := t.next
	t.next++
	t.inFlight[id] = cancel
	var once sync.Once
	return func() {
		once.Do(func() {
			t.mu.Lock()
			delete(t.inFlight, id)
			t.mu.Unlock()
			cancel()
		})
	}
}

// closeHook calls hook once when the body is closed.
type closeHook struct {
	io.ReadCloser
	hook func()
}

func (c *closeHook) Close() error {
	err := c.ReadCloser.Close()
	c.hook()
	return err
}

// redact removes the secret from s, in case an error ever quotes it.
func (t *Token) redact(s string) string {
	t.mu.Lock()
	secret := t.secret
	t.mu.Unlock()
	if len(secret) < 8 {
		return s
	}
	return strings.ReplaceAll(s, secret, "[token]")
}
