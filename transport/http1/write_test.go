package http1

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
)

// closeCounter is a request body that counts its closes.
type closeCounter struct {
	io.Reader
	closes atomic.Int64
}

func (c *closeCounter) Close() error { c.closes.Add(1); return nil }

// What net/http's client refuses, Transport refuses, before a byte
// is sent: nothing in a request can end a line early or frame a second
// request. The body is closed on every path, as the RoundTripper contract
// says.
func TestDirectTransportRefusesWhatNetHTTPRefuses(t *testing.T) {
	var requests atomic.Int64
	srv := newCounted(t, false, func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		echoUpper(w, r)
	})
	u, _ := url.Parse(srv.URL)
	for _, tc := range []struct {
		name   string
		modify func(*http.Request)
	}{
		{name: "a method that smuggles a request", modify: func(r *http.Request) { r.Method = "GET /x HTTP/1.1\r\nHost: a\r\n\r\nGET" }},
		{name: "a method with a space", modify: func(r *http.Request) { r.Method = "GE T" }},
		{name: "CR LF in a header value", modify: func(r *http.Request) { r.Header.Set("X-A", "1\r\nX-B: 2") }},
		{name: "NUL in a header value", modify: func(r *http.Request) { r.Header.Set("X-A", "1\x002") }},
		{name: "a header name with a space", modify: func(r *http.Request) { r.Header["X A"] = []string{"1"} }},
		{name: "CR LF in the host", modify: func(r *http.Request) { r.Host = "a\r\nX-B: 2" }},
		{name: "a space in the query", modify: func(r *http.Request) {
			r.URL = &url.URL{Scheme: "http", Host: u.Host, Path: "/", RawQuery: "a= HTTP/1.1"}
		}},
		{name: "a negative length", modify: func(r *http.Request) { r.ContentLength = -2 }},
		{name: "a length with no body", modify: func(r *http.Request) { r.Body, r.ContentLength = nil, 5 }},
		{name: "a length with NoBody", modify: func(r *http.Request) { r.Body, r.ContentLength = http.NoBody, 5 }},
		{name: "an unknown length with no body", modify: func(r *http.Request) { r.Body, r.ContentLength = nil, -1 }},
		{name: "a body shorter than its length", modify: func(r *http.Request) { r.ContentLength = 10 }},
		{name: "an unsupported scheme", modify: func(r *http.Request) { r.URL = &url.URL{Scheme: "ftp", Host: u.Host} }},
		{name: "no host", modify: func(r *http.Request) { r.URL = &url.URL{Scheme: "http", Path: "/"} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rt := newDirect()
			defer rt.CloseIdleConnections()
			body := &closeCounter{Reader: strings.NewReader("abc")}
			req, _ := http.NewRequestWithContext(timed(t), http.MethodPost, srv.URL, body)
			tc.modify(req)
			before := requests.Load()
			if resp, err := rt.RoundTrip(req); err == nil {
				resp.Body.Close()
				t.Fatal("want an error, have an answer")
			}
			if n := requests.Load() - before; n != 0 {
				t.Errorf("want no request at the server, have %d", n)
			}
			if req.Body == io.ReadCloser(body) && body.closes.Load() == 0 {
				t.Error("the body was not closed")
			}
		})
	}
}

// The body is closed on the other paths too: a dial that fails, and a
// request that went.
func TestDirectTransportClosesTheBody(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closedPort := ln.Addr().String()
	ln.Close()
	srv := newCounted(t, false, echoUpper)
	for name, target := range map[string]string{"dial error": "http://" + closedPort, "answered": srv.URL} {
		t.Run(name, func(t *testing.T) {
			rt := newDirect()
			defer rt.CloseIdleConnections()
			body := &closeCounter{Reader: strings.NewReader("abc")}
			req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, target, body)
			req.ContentLength = 3
			if resp, err := rt.RoundTrip(req); err == nil {
				resp.Body.Close()
			}
			if body.closes.Load() == 0 {
				t.Error("the body was not closed")
			}
		})
	}
}

func TestIsTokenAndPrintable(t *testing.T) {
	for _, tc := range []struct {
		s             string
		token, header bool
	}{
		{"POST", true, true},
		{"X-Stringsvc-Seq", true, true},
		{"a b", false, true},
		{"a\tb", false, true},
		{"a\r\nb", false, false},
		{"a\x00b", false, false},
		{"a\x7fb", false, false},
		{"", false, true},
	} {
		if have := isToken(tc.s); have != tc.token {
			t.Errorf("isToken(%q): want %v, have %v", tc.s, tc.token, have)
		}
		if have := isPrintable(tc.s, true); have != tc.header {
			t.Errorf("isPrintable(%q, true): want %v, have %v", tc.s, tc.header, have)
		}
	}
	if isPrintable("a b", false) {
		t.Error("a space outside a header value: want refused")
	}
	if !errors.Is(errTooManyHeaderBytes, ErrProtocol) {
		t.Error("a header past the bound is the peer's fault")
	}
}
