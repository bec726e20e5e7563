package main

import (
	"bytes"
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kitmesh/stringsvc/discovery/consultest"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestRunStandalone builds the real stack in-process, configured only
// through the environment, and stops it through its context.
func TestRunStandalone(t *testing.T) {
	addr := "127.0.0.1:" + strconv.Itoa(consultest.FreePort(t))
	env := map[string]string{"STRINGSVC_HTTP_ADDR": addr, "STRINGSVC_CONSUL_ADDR": "none"}
	ctx, cancel := context.WithCancel(context.Background())
	var stderr syncBuffer
	errc := make(chan error, 1)
	go func() { errc <- run(ctx, nil, func(k string) string { return env[k] }, &stderr, &stderr) }()

	consultest.Eventually(t, 10*time.Second, func() error {
		return healthcheck(context.Background(), []string{"-http.addr", addr}, func(string) string { return "" }, &stderr)
	})
	if code, body := post(t, addr, "/uppercase", `{"s":"hello, world"}`); code != 200 || body != `{"v":"HELLO, WORLD"}`+"\n" {
		t.Errorf("uppercase: want 200 HELLO, WORLD; have %d %s", code, body)
	}
	var out bytes.Buffer
	if err := run(context.Background(), []string{"call", "-addr", addr, "uppercase", "via the client"}, nil, &out, &out); err != nil || out.String() != "VIA THE CLIENT\n" {
		t.Errorf("call uppercase: want VIA THE CLIENT, have %q, %v", out.String(), err)
	}
	out.Reset()
	if err := run(context.Background(), []string{"call", "-addr", addr, "count", "four"}, nil, &out, &out); err != nil || out.String() != "4\n" {
		t.Errorf("call count: want 4, have %q, %v", out.String(), err)
	}
	if err := run(context.Background(), []string{"call", "-addr", addr, "uppercase", ""}, nil, &out, &out); err == nil || !strings.Contains(err.Error(), "empty string") {
		t.Errorf("call uppercase \"\": want the empty string error, have %v", err)
	}
	if code, body := request(t, "GET", addr, "/debug/mesh", ""); code != 200 || !strings.Contains(body, `"upstreams": []`) {
		t.Errorf("debug/mesh standalone: want 200 with no upstreams, have %d %s", code, body)
	}
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("run: want nil after cancel, have %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("run did not return after cancel")
	}
	for _, want := range []string{"msg=HTTP", "addr=" + addr, "method=uppercase", "caller="} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("log: want %q in it, have:\n%s", want, stderr.String())
		}
	}
	if err := healthcheck(context.Background(), []string{"-http.addr", addr, "-timeout", "500ms"}, func(string) string { return "" }, &stderr); err == nil {
		t.Error("healthcheck of a stopped member: want an error, have none")
	}
}

func TestConfig(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		env     map[string]string
		check   func(config) bool
		wantErr string
	}{
		{"defaults", nil, nil, func(c config) bool {
			return c.httpAddr == ":8080" && c.consulAddr == "127.0.0.1:8500" && c.maxAttempts == 3
		}, ""},
		{"CONSUL_HTTP_ADDR", nil, map[string]string{"CONSUL_HTTP_ADDR": "consul:8500"}, func(c config) bool { return c.consulAddr == "consul:8500" }, ""},
		{"env fallback", nil, map[string]string{"STRINGSVC_PROXY_MAX_ATTEMPTS": "5"}, func(c config) bool { return c.maxAttempts == 5 }, ""},
		{"flag beats env", []string{"-proxy.max-attempts", "2"}, map[string]string{"STRINGSVC_PROXY_MAX_ATTEMPTS": "5"}, func(c config) bool { return c.maxAttempts == 2 }, ""},
		{"bad env", nil, map[string]string{"STRINGSVC_CHECK_INTERVAL": "soon"}, nil, "STRINGSVC_CHECK_INTERVAL"},
		{"bad value", []string{"-proxy.rate", "0"}, nil, nil, "-proxy.rate"},
		{"stray argument", []string{"extra"}, nil, nil, "unexpected arguments"},
		{"unknown balancer", []string{"-proxy.balancer", "fastest"}, nil, nil, "-proxy.balancer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			c, err := parseConfig(tc.args, func(k string) string { return tc.env[k] }, &out)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("want an error about %q, have %v", tc.wantErr, err)
				}
				return
			}
			if err != nil || !tc.check(c) {
				t.Errorf("want a valid config, have %+v, %v", c, err)
			}
		})
	}
}

func TestHelpDocumentsEveryFlag(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"-h"}, func(string) string { return "" }, &out, &out); err != nil {
		t.Fatalf("-h: want nil, have %v", err)
	}
	for _, f := range []string{"-http.addr", "-consul.addr", "-advertise", "-proxy.balancer", "-shutdown.drain", "STRINGSVC_HTTP_ADDR", "healthcheck"} {
		if !strings.Contains(out.String(), f) {
			t.Errorf("-h output lacks %s", f)
		}
	}
}
