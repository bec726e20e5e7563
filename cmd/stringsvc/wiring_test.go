package main

import (
	"bytes"
	"context"
	"io"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kitmesh/stringsvc/discovery/consultest"
	"github.com/kitmesh/stringsvc/internal/clustertest"
	"github.com/kitmesh/stringsvc/internal/member"
	"github.com/kitmesh/stringsvc/internal/probe"
	"github.com/kitmesh/stringsvc/internal/syncbuf"
)

// startRun runs run() in-process with args and env, writing its log to
// out. stop cancels it and fails t unless it returns nil within 30s.
func startRun(t *testing.T, args []string, env map[string]string, out io.Writer) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- run(ctx, args, func(k string) string { return env[k] }, out, out) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-errc:
				if err != nil {
					t.Errorf("run: want nil after cancel, have %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Error("run did not return 30s after cancel")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// TestRunStandalone builds the real stack in-process, configured only
// through the environment, and stops it through its context.
func TestRunStandalone(t *testing.T) {
	addr := "127.0.0.1:" + strconv.Itoa(consultest.FreePort(t))
	env := map[string]string{"STRINGSVC_HTTP_ADDR": addr, "STRINGSVC_CONSUL_ADDR": "none"}
	var stderr syncbuf.Buffer
	stop := startRun(t, nil, env, &stderr)

	consultest.Eventually(t, 10*time.Second, func() error {
		return healthcheck(context.Background(), []string{"-http.addr", addr}, func(string) string { return "" }, &stderr)
	})
	if code, body := clustertest.Request(t, "POST", addr, "/uppercase", `{"s":"hello, world"}`); code != 200 || body != `{"v":"HELLO, WORLD"}`+"\n" {
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
	if code, body := clustertest.Request(t, "GET", addr, "/debug/mesh", ""); code != 200 || !strings.Contains(body, `"upstreams": []`) {
		t.Errorf("debug/mesh standalone: want 200 with no upstreams, have %d %s", code, body)
	}
	stop()
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
		{name: "defaults", check: func(c config) bool {
			return c.HTTPAddr == ":8080" && c.ConsulAddr == "127.0.0.1:8500" && c.MaxAttempts == 3 && c.Balancer == "p2c"
		}},
		{name: "tutorial flags", args: []string{"-listen=:8001", "-proxy=localhost:8002,localhost:8003"}, env: map[string]string{"STRINGSVC_HTTP_ADDR": ":9999"}, check: func(c config) bool {
			return c.HTTPAddr == ":8001" && c.ConsulAddr == member.ConsulNone && len(c.Proxy) == 2 && c.Meshed() && !c.Registers()
		}},
		{name: "-proxy beside an explicit Consul", args: []string{"-proxy=a:1"}, env: map[string]string{"CONSUL_HTTP_ADDR": "consul:8500"}, check: func(c config) bool {
			return c.ConsulAddr == "consul:8500" && c.Registers()
		}},
		{name: "standalone", args: []string{"-consul.addr", "none"}, check: func(c config) bool { return !c.Meshed() }},
		{name: "bad -proxy", args: []string{"-proxy=http://"}, wantErr: "no host"},
		{name: "connect by environment", env: map[string]string{"STRINGSVC_MESH_TLS": "connect"}, check: func(c config) bool { return c.Connect() && c.MeshAddr == ":8443" }},
		// No side door: a Connect member's client listener is loopback
		// unless exposed on purpose; an edge's is public by design.
		{name: "connect member: client listener on loopback, operator's pages on :9100", args: []string{"-mesh.tls", "connect"}, check: func(c config) bool {
			return c.HTTPAddr == "127.0.0.1:8080" && c.AdminAddr == ":9100" && c.PrivateHTTP()
		}},
		{name: "connect member on a public address without -http.public", args: []string{"-mesh.tls", "connect", "-http.addr", ":8080"}, wantErr: "set -http.public to expose it on purpose"},
		{name: "connect member on a public address by environment", env: map[string]string{"STRINGSVC_MESH_TLS": "connect", "STRINGSVC_HTTP_ADDR": "0.0.0.0:8080"}, wantErr: "-http.public"},
		{name: "connect member on localhost", args: []string{"-mesh.tls", "connect", "-http.addr", "localhost:8080"}, check: func(c config) bool { return c.HTTPAddr == "localhost:8080" }},
		{name: "connect member on [::1]", args: []string{"-mesh.tls", "connect", "-http.addr", "[::1]:8080"}, check: func(c config) bool { return c.PrivateHTTP() }},
		{name: "connect member exposed on purpose", env: map[string]string{"STRINGSVC_MESH_TLS": "connect", "STRINGSVC_HTTP_PUBLIC": "true"}, check: func(c config) bool {
			return c.HTTPAddr == ":8080" && c.AdminAddr == "" && !c.PrivateHTTP()
		}},
		{name: "connect edge: the ingress is public", args: []string{"-mesh.tls", "connect", "-proxy.service", "stringsvc", "-service.name", "edge"}, check: func(c config) bool {
			return c.HTTPAddr == ":8080" && c.AdminAddr == "" && !c.PrivateHTTP()
		}},
		{name: "plain mesh: as before", check: func(c config) bool { return c.HTTPAddr == ":8080" && !c.PrivateHTTP() }},
		{name: "connect without Consul", args: []string{"-mesh.tls", "connect", "-consul.addr", "none"}, wantErr: "-mesh.tls connect needs Consul"},
		{name: "connect with a static -proxy", args: []string{"-mesh.tls", "connect", "-proxy", "a:1"}, wantErr: "-mesh.tls connect needs Consul"},
		{name: "unknown -mesh.tls", args: []string{"-mesh.tls", "spiffe"}, wantErr: "-mesh.tls"},
		{name: "empty balancer", args: []string{"-proxy.balancer="}, wantErr: "-proxy.balancer"},
		{name: "no shutdown time", args: []string{"-shutdown.timeout", "0"}, wantErr: "-shutdown.timeout"},
		{name: "negative retry ratio", args: []string{"-proxy.retry-ratio", "-0.5"}, wantErr: "-proxy.retry-ratio"},
		{name: "negative retry floor", args: []string{"-proxy.retry-min", "-1"}, wantErr: "-proxy.retry-min"},
		{name: "breaker failures past 2^32", args: []string{"-proxy.breaker-failures", "4294967296"}, wantErr: "-proxy.breaker-failures"},
		{name: "ambiguous service name", args: []string{"-service.name", "a@b"}, wantErr: "-service.name"},
		{name: "no in-flight room", args: []string{"-http.max-inflight", "0"}, wantErr: "-http.max-inflight"},
		{name: "CONSUL_HTTP_ADDR", env: map[string]string{"CONSUL_HTTP_ADDR": "consul:8500"}, check: func(c config) bool { return c.ConsulAddr == "consul:8500" }},
		{name: "env fallback", env: map[string]string{"STRINGSVC_PROXY_MAX_ATTEMPTS": "5"}, check: func(c config) bool { return c.MaxAttempts == 5 }},
		{name: "flag beats env", args: []string{"-proxy.max-attempts", "2"}, env: map[string]string{"STRINGSVC_PROXY_MAX_ATTEMPTS": "5"}, check: func(c config) bool { return c.MaxAttempts == 2 }},
		{name: "bad env", env: map[string]string{"STRINGSVC_CHECK_INTERVAL": "soon"}, wantErr: "STRINGSVC_CHECK_INTERVAL"},
		{name: "bad value", args: []string{"-proxy.rate", "-1"}, wantErr: "-proxy.rate"},
		{name: "no rate limit", args: []string{"-proxy.rate", "0", "-proxy.burst", "0"}, check: func(c config) bool { return c.RateLimit == 0 }},
		{name: "a check timeout past its interval", args: []string{"-check.interval", "1s", "-check.timeout", "2s"}, wantErr: "longer than -check.interval"},
		{name: "a check timeout equal to its interval", args: []string{"-check.interval", "1s", "-check.timeout", "1s"}, check: func(c config) bool { return c.CheckTimeout == time.Second }},
		{name: "stray argument", args: []string{"extra"}, wantErr: "unexpected arguments"},
		{name: "unknown balancer", args: []string{"-proxy.balancer", "fastest"}, wantErr: "-proxy.balancer"},
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
	for _, f := range []string{"-http.addr", "-listen", "-proxy", "-consul.addr", "-advertise", "-proxy.balancer", "-shutdown.drain", "STRINGSVC_HTTP_ADDR", "healthcheck"} {
		if !strings.Contains(out.String(), f) {
			t.Errorf("-h output lacks %s", f)
		}
	}
}

// With -admin.addr the operator's pages move off the client port.
func TestAdminListener(t *testing.T) {
	addr := "127.0.0.1:" + strconv.Itoa(consultest.FreePort(t))
	admin := "127.0.0.1:" + strconv.Itoa(consultest.FreePort(t))
	var out syncbuf.Buffer
	startRun(t, []string{"-http.addr", addr, "-admin.addr", admin, "-consul.addr", "none"}, nil, &out)
	consultest.Eventually(t, 10*time.Second, func() error {
		_, err := probe.Do("GET", "http://"+admin+"/health", "", nil)
		return err
	})
	for _, tc := range []struct {
		addr, path string
		want       int
	}{
		{addr: admin, path: "/metrics", want: 200},
		{addr: admin, path: "/debug/mesh", want: 200},
		{addr: addr, path: "/metrics", want: 404},
		{addr: addr, path: "/debug/mesh", want: 404},
		{addr: addr, path: "/health", want: 200},
	} {
		if code, body := clustertest.Request(t, "GET", tc.addr, tc.path, ""); code != tc.want {
			t.Errorf("GET %s on %s: want %d, have %d %.80s", tc.path, tc.addr, tc.want, code, body)
		}
	}
	if code, _ := clustertest.Request(t, "POST", addr, "/uppercase", `{"s":"a"}`); code != 200 {
		t.Errorf("uppercase on the client port: want 200, have %d", code)
	}
}

// -h lists every flag once, under its topic.
func TestHelpGroupsFlags(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"-h"}, func(string) string { return "" }, &out, &out); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	last := -1
	for _, g := range flagGroups {
		i := strings.Index(text, "\n"+g.title+":\n")
		if i < 0 || i < last {
			t.Errorf("want the group %q, after the one before it; have:\n%s", g.title, text)
		}
		last = i
	}
	for _, name := range []string{"http.addr", "consul.addr", "proxy", "proxy.rate", "mesh.tls", "shutdown.drain", "debug.delay", "listen", "advertise"} {
		if n := strings.Count(text, "  -"+name+" "); n != 1 {
			t.Errorf("-%s: want listed once, have %d", name, n)
		}
	}
	if strings.Contains(text, "proxy.transport") {
		t.Error("-proxy.transport was removed; -h still lists it")
	}
}
