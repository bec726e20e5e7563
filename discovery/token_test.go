package discovery

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-kit/log"

	"github.com/kitmesh/stringsvc/internal/syncbuf"
)

func TestTokenFromFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "token")
	var lines syncbuf.Buffer
	tok := NewToken(file, "ignored-when-a-file-is-given", log.NewLogfmtLogger(&lines))

	var seen atomic.Value
	denyOld := atomic.Bool{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Store(r.Header.Get("X-Consul-Token"))
		if denyOld.Load() && r.Header.Get("X-Consul-Token") != "second-secret-value" {
			w.WriteHeader(http.StatusForbidden)
		}
	}))
	defer srv.Close()
	client := &http.Client{Transport: tok.RoundTripper(http.DefaultTransport)}
	get := func() string {
		resp, err := client.Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		s, _ := seen.Load().(string)
		return s
	}

	if have := get(); have != "" {
		t.Errorf("no file yet: want no token sent, have %q", have)
	}
	os.WriteFile(file, []byte("first-secret-value\n"), 0o600)
	tok.denied() // as after a 403: read at once
	if have := get(); have != "first-secret-value" {
		t.Errorf("after the file appeared: want the first token, have %q", have)
	}

	// Rewritten: picked up within recheckEvery, or at once after a 403.
	os.WriteFile(file, []byte("second-secret-value"), 0o600)
	os.Chtimes(file, time.Now().Add(time.Minute), time.Now().Add(time.Minute))
	denyOld.Store(true)
	get() // a 403 with the old token makes the next request use the new one
	if have := get(); have != "second-secret-value" {
		t.Errorf("after a rewrite and a 403: want the second token, have %q", have)
	}

	for _, text := range []string{tok.String(), lines.String()} {
		if strings.Contains(text, "secret-value") || strings.Contains(text, "ignored-when") {
			t.Errorf("a token leaked: %q", text)
		}
	}
	if !strings.Contains(tok.String(), "(set)") || strings.Count(lines.String(), "no such file") != 1 {
		t.Errorf("want the state said, never the token: %q\n%s", tok.String(), lines.String())
	}
	if have := tok.redact("error with second-secret-value in it"); strings.Contains(have, "second-secret") {
		t.Errorf("redact: %q", have)
	}
}

// A blocking query made with the old token ends when the token changes, so
// that it is asked again with the new one.
func TestTokenChangeEndsQueriesInFlight(t *testing.T) {
	file := filepath.Join(t.TempDir(), "token")
	os.WriteFile(file, []byte("old-token-value"), 0o600)
	tok := NewToken(file, "", log.NewNopLogger())
	entered := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-r.Context().Done() // a blocking query that would wait minutes
	}))
	defer srv.Close()
	client := &http.Client{Transport: tok.RoundTripper(http.DefaultTransport)}
	errc := make(chan error, 1)
	go func() {
		resp, err := client.Get(srv.URL)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	<-entered
	os.WriteFile(file, []byte("new-token-value"), 0o600)
	os.Chtimes(file, time.Now().Add(time.Minute), time.Now().Add(time.Minute))
	tok.denied() // read the file now rather than within a second
	select {
	case err := <-errc:
		if err == nil {
			t.Error("want the query in flight ended with an error, have a response")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the query made with the old token is still waiting")
	}
}
