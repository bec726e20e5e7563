package transport

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/kitmesh/stringsvc/service"
	"github.com/kitmesh/stringsvc/transport/endpoints"
)

func TestClientRoundTrip(t *testing.T) {
	srv := newTestServer(t, service.NewBasicService())
	eps, err := MakeClientEndpoints(strings.TrimPrefix(srv.URL, "http://"))
	client := eps.Service()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if v, err := client.Uppercase(ctx, "hello, world"); v != "HELLO, WORLD" || err != nil {
		t.Errorf("Uppercase: want HELLO, WORLD, <nil>; have %q, %v", v, err)
	}
	if _, err := client.Uppercase(ctx, ""); !errors.Is(err, service.ErrEmpty) {
		t.Errorf("Uppercase(\"\"): want ErrEmpty, have %v", err)
	}
	if n := client.Count(ctx, "hello, world"); n != 12 {
		t.Errorf("Count: want 12, have %d", n)
	}
}

// TestClientUnderstandsStringsvc3 checks the answer shape of Go kit's
// stringsvc tutorial: 200 with "err" set means ErrEmpty.
func TestClientUnderstandsStringsvc3(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"v":"","err":"empty string"}` + "\n"))
	}))
	defer srv.Close()
	eps, _ := MakeClientEndpoints(srv.URL)
	client := eps.Service()
	if _, err := client.Uppercase(context.Background(), ""); !errors.Is(err, service.ErrEmpty) {
		t.Errorf("want ErrEmpty, have %v", err)
	}
}

func TestClientRejectsBadInstance(t *testing.T) {
	for _, in := range []string{"", "http://", "http://%zz", "no-port", ":8080"} {
		if _, err := MakeClientEndpoints(in); err == nil {
			t.Errorf("MakeClientEndpoints(%q): want an error, have none", in)
		}
	}
}

func TestParseInstance(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.1:8080":         "http://10.0.0.1:8080",
		"[::1]:8080":            "http://[::1]:8080",
		"[fe80::1%eth0]:8080":   "http://[fe80::1%25eth0]:8080",
		"localhost:8001":        "http://localhost:8001",
		"https://node.example/": "https://node.example/",
	} {
		u, err := ParseInstance(in)
		if err != nil || u.String() != want {
			t.Errorf("ParseInstance(%q): want %s, have %v (%v)", in, want, u, err)
		}
	}
}

// TestReadAllBoundsTheAnswer checks readAll against io.ReadAll of an
// io.LimitReader, which it replaces.
func TestReadAllBoundsTheAnswer(t *testing.T) {
	long := strings.Repeat("x", 5000)
	for _, limit := range []int{1, 511, 512, 513, 4999, 5000, 6000} {
		want, _ := io.ReadAll(io.LimitReader(strings.NewReader(long), int64(limit)))
		have, err := readAll(iotest.OneByteReader(strings.NewReader(long)), make([]byte, 0, 7), limit)
		if err != nil || string(have) != string(want) {
			t.Errorf("limit %d: want %d bytes, have %d (%v)", limit, len(want), len(have), err)
		}
	}
}

// ErrEmpty is the answer to "" only, which is never forwarded: for any
// other string it cannot be true, and it is the instance's failure.
func TestClientRefusesErrEmptyForANonEmptyString(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"v":"","err":"empty string"}` + "\n"))
	}))
	defer srv.Close()
	eps, _ := MakeClientEndpoints(srv.URL)
	client := eps.Service()
	_, err := client.Uppercase(context.Background(), "abc")
	var ue *UpstreamError
	if !errors.As(err, &ue) || errors.Is(err, service.ErrEmpty) {
		t.Errorf("want an UpstreamError that is not ErrEmpty, have %v", err)
	}
}

// Plain HTTP to a TLS port is the caller's misconfiguration, an instance
// failure that says so: never the request's own 400.
func TestClientToATLSPort(t *testing.T) {
	srv := httptest.NewTLSServer(NewHTTPHandler(endpoints.New(service.NewBasicService()), HandlerOptions{}))
	defer srv.Close()
	eps, err := MakeClientEndpoints(srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	for name, call := range map[string]func() error{
		"uppercase": func() error { _, err := eps.Uppercase(context.Background(), "a"); return err },
		"count":     func() error { _, err := eps.Count(context.Background(), "a"); return err },
	} {
		err := call()
		var ue *UpstreamError
		if !errors.As(err, &ue) || errors.Is(err, service.ErrInvalidRequest) || !strings.Contains(err.Error(), "Connect") {
			t.Errorf("%s: want an UpstreamError that names Connect, have %v", name, err)
		}
	}
}
