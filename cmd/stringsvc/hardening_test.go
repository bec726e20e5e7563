package main

import (
	"fmt"
	"io"
	"net"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-kit/log"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kitmesh/stringsvc/discovery/consultest"
	"github.com/kitmesh/stringsvc/internal/clustertest"
	"github.com/kitmesh/stringsvc/internal/member"
	"github.com/kitmesh/stringsvc/internal/probe"
	"github.com/kitmesh/stringsvc/internal/syncbuf"
	"github.com/kitmesh/stringsvc/transport"
)

// Regression tests of the hardening issue that need a whole member.

// testMember builds a member with newMember from flags, as run() does, and
// serves it on an httptest server.
func testMember(t *testing.T, args ...string) (addr string, mb *member.Member) {
	t.Helper()
	cfg, err := parseConfig(args, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	logs := member.Loggers{Ops: log.NewNopLogger(), Requests: log.NewNopLogger()}
	mb, err = member.New(cfg, member.Bound{HTTP: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}}, logs, prometheus.NewRegistry(), transport.Tracing{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(mb.Close)
	srv := httptest.NewServer(mb.Handler)
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://"), mb
}

// The review's scenario: bodies of "<" that pass the entry member's limit
// used to reach the peer HTML-escaped six times larger, get 413, and open
// the peer's breaker after five requests. Now the peer serves every one.
func TestClientInputCannotEjectAPeer(t *testing.T) {
	peer, _ := testMember(t, "-consul.addr", "none")
	entry, mb := testMember(t, "-proxy", peer)
	body := `{"s":"` + strings.Repeat("<", 175<<10) + `"}`
	for i := 0; i < 10; i++ {
		resp, err := probe.Do("POST", "http://"+entry+"/uppercase", body, nil)
		if err != nil || resp.Status != 200 {
			t.Fatalf("request %d: want 200, have %d %v", i, resp.Status, err)
		}
	}
	if served, _ := probe.Metric(peer, clustertest.ServedUppercase); served != 10 {
		t.Errorf("the peer served %v of 10; the rest fell back", served)
	}
	if s := mb.Upstreams()[0].State; s != "closed" {
		t.Errorf("the peer's breaker: want closed, have %s", s)
	}
}

// A body too large for the peer but not for the entry (the peer has a
// smaller limit) gets the peer's own 413, and the peer stays in.
func TestPeer4xxReachesTheClient(t *testing.T) {
	peer, _ := testMember(t, "-consul.addr", "none", "-http.max-body", "64")
	entry, mb := testMember(t, "-proxy", peer)
	for i := 0; i < 10; i++ {
		resp, err := probe.Do("POST", "http://"+entry+"/uppercase", `{"s":"`+strings.Repeat("a", 100)+`"}`, nil)
		if err != nil || resp.Status != 413 || !strings.Contains(resp.Body, "larger than 64 bytes") {
			t.Fatalf("request %d: want the peer's 413, have %d %s %v", i, resp.Status, resp.Body, err)
		}
	}
	if s := mb.Upstreams()[0].State; s != "closed" {
		t.Errorf("the peer's breaker: want closed, have %s", s)
	}
	if f, _ := probe.Metric(entry, "stringsvc_fallbacks_total"); f != 0 {
		t.Errorf("fallbacks: want 0 (a 413 is the answer), have %v", f)
	}
}

// hungAgent accepts connections and never answers, as a wedged Consul
// agent does.
func hungAgent(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}

// A hung Consul agent must not stop a member from serving.
func TestServesWhileConsulHangs(t *testing.T) {
	addr := "127.0.0.1:" + strconv.Itoa(consultest.FreePort(t))
	var out syncbuf.Buffer
	stop := startRun(t, []string{"-http.addr", addr, "-consul.addr", hungAgent(t), "-shutdown.drain", "0s"}, nil, &out)
	consultest.Eventually(t, 10*time.Second, func() error {
		resp, err := probe.Do("POST", "http://"+addr+"/uppercase", `{"s":"still here"}`, nil)
		if err != nil {
			return err
		}
		if resp.Status != 200 || resp.Body != `{"v":"STILL HERE"}`+"\n" {
			return fmt.Errorf("status %d %s", resp.Status, resp.Body)
		}
		return nil
	})
	stop() // and it shuts down while the agent still hangs
}
