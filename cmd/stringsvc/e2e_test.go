package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kitmesh/stringsvc/discovery/consultest"
	"github.com/kitmesh/stringsvc/internal/clustertest"
	"github.com/kitmesh/stringsvc/internal/load"
)

// TestCluster runs the mesh as real processes: a dev Consul and members on
// loopback, checked scenario by scenario.
func TestCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	agent := consultest.Start(t)
	a := clustertest.StartNode(t, "A", agent.Addr)
	b := clustertest.StartNode(t, "B", agent.Addr)
	c := clustertest.StartNode(t, "C", agent.Addr)
	clustertest.WaitPassing(t, agent.Addr, 15*time.Second, a, b, c)
	consultest.Eventually(t, 10*time.Second, func() error {
		for _, n := range []*clustertest.Node{a, b, c} {
			if u := n.Upstreams(); u != 3 {
				return fmt.Errorf("%s sees %d upstreams, want 3", n.Name, u)
			}
		}
		return nil
	})

	t.Run("every node answers", func(t *testing.T) {
		for _, n := range []*clustertest.Node{a, b, c} {
			if code, body := clustertest.Request(t, "POST", n.Addr, "/uppercase", `{"s":"hello, world"}`); code != 200 || body != `{"v":"HELLO, WORLD"}`+"\n" {
				t.Errorf("%s uppercase: want 200 HELLO, WORLD; have %d %s", n.Name, code, body)
			}
			if code, body := clustertest.Request(t, "POST", n.Addr, "/count", `{"s":"hello, world"}`); code != 200 || body != `{"v":12}`+"\n" {
				t.Errorf("%s count: want 200 12; have %d %s", n.Name, code, body)
			}
		}
	})

	t.Run("uppercase sent to A is served by all", func(t *testing.T) {
		before := map[string]float64{}
		for _, n := range []*clustertest.Node{a, b, c} {
			before[n.Name] = n.Metric(clustertest.ServedUppercase)
		}
		res := load.Run(context.Background(), clustertest.UpperLoad(a, 600, 0, nil))
		if res.Failed != 0 || res.Succeeded != 600 {
			t.Fatalf("want 600 succeeded, 0 failed; have %s", res)
		}
		var total float64
		for _, n := range []*clustertest.Node{a, b, c} {
			served := n.Metric(clustertest.ServedUppercase) - before[n.Name]
			total += served
			t.Logf("%s served %v of 600", n.Name, served)
			if served == 0 {
				t.Errorf("%s served none of the requests sent to A", n.Name)
			}
		}
		if total != 600 {
			t.Errorf("served in all: want 600, have %v", total)
		}
	})

	t.Run("bad input gets its 4xx and the node keeps serving", func(t *testing.T) {
		for _, tc := range []struct {
			method, path, body string
			want               int
		}{
			{"POST", "/uppercase", `{"s":`, 400},
			{"POST", "/uppercase", `[1]`, 400},
			{"POST", "/count", `{"s":1}`, 400},
			{"POST", "/count", `{"s":"a"}x`, 400},
			{"POST", "/uppercase", `{"s":"` + strings.Repeat("a", 2<<20) + `"}`, 413},
			{"PATCH", "/count", ``, 405},
			{"GET", "/nowhere", ``, 404},
		} {
			code, body := clustertest.Request(t, tc.method, b.Addr, tc.path, tc.body)
			if code != tc.want || !strings.Contains(body, `"error":`) {
				t.Errorf("%s %s %.20q: want %d with a JSON error, have %d %.200s", tc.method, tc.path, tc.body, tc.want, code, body)
			}
		}
		if code, body := clustertest.Request(t, "POST", b.Addr, "/uppercase", `{"s":"hello, world"}`); code != 200 || !strings.Contains(body, "HELLO, WORLD") {
			t.Errorf("after bad input: want 200, have %d %s", code, body)
		}
	})

	t.Run("kill -9 under load loses nothing", func(t *testing.T) {
		var progress load.Progress
		done := make(chan load.Result)
		go func() {
			done <- load.Run(context.Background(), clustertest.UpperLoad(a, 2000, 20*time.Millisecond, &progress))
		}()
		consultest.Eventually(t, 30*time.Second, func() error {
			if s := progress.Sent.Load(); s < 400 {
				return fmt.Errorf("sent %d", s)
			}
			return nil
		})
		c.Kill(syscall.SIGKILL)
		killed := time.Now()
		consultest.Eventually(t, clustertest.CheckInterval+clustertest.CheckTimeout+2*time.Second, func() error {
			ids, err := clustertest.Catalog(t, agent.Addr, true)
			if err != nil {
				return err
			}
			for _, id := range ids {
				if id == c.ID() {
					return fmt.Errorf("%s still passing", c.ID())
				}
			}
			return nil
		})
		left := time.Since(killed)
		res := <-done
		t.Logf("kill -9 of C: %s; left the passing set after %v", res, left.Round(time.Millisecond))
		if res.Failed != 0 || res.Succeeded != 2000 {
			t.Errorf("want 2000 succeeded and 0 failed, have %s", res)
		}
		if f := a.Metric(`stringsvc_fallbacks_total{reason="upstreams_failed"}`); f != 0 {
			t.Errorf("A fell back locally %v times; want every failure retried on a live member", f)
		}
	})

	t.Run("a new node receives traffic", func(t *testing.T) {
		d := clustertest.StartNode(t, "D", agent.Addr)
		started := time.Now()
		consultest.Eventually(t, 5*time.Second, func() error {
			load.Run(context.Background(), clustertest.UpperLoad(a, 40, 0, nil))
			if d.Metric(clustertest.ServedUppercase) == 0 {
				return fmt.Errorf("D has served nothing yet")
			}
			return nil
		})
		t.Logf("D served proxied traffic %v after start", time.Since(started).Round(time.Millisecond))
	})

	t.Run("SIGTERM deregisters at once and finishes in-flight requests", func(t *testing.T) {
		// A request in flight: headers and half the body sent.
		conn, err := net.Dial("tcp", b.Addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		body := `{"s":"in flight"}`
		fmt.Fprintf(conn, "POST /uppercase HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body[:5])
		// No wait for the server to accept it: the drain protocol keeps the
		// listener open for -shutdown.drain after SIGTERM, so the
		// connection is accepted either way.
		b.Kill(syscall.SIGTERM)
		termed := time.Now()
		consultest.Eventually(t, clustertest.CheckInterval/2, func() error {
			ids, err := clustertest.Catalog(t, agent.Addr, false)
			if err != nil {
				return err
			}
			for _, id := range ids {
				if id == b.ID() {
					return fmt.Errorf("%s still in the catalog", id)
				}
			}
			return nil
		})
		t.Logf("B left the catalog %v after SIGTERM", time.Since(termed).Round(time.Millisecond))

		fmt.Fprint(conn, body[5:])
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("in-flight request: want an answer, have %v", err)
		}
		reply, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || string(reply) != `{"v":"IN FLIGHT"}`+"\n" {
			t.Errorf("in-flight request: want 200 IN FLIGHT, have %d %q (%v)", resp.StatusCode, reply, err)
		}
		if err := b.Wait(15 * time.Second); err != nil {
			t.Errorf("exit after SIGTERM: want status 0, have %v", err)
		}
	})
}

// `stringsvc call -consul` calls the members Consul lists, through package
// client: Uppercase and Count answer, and a Count that no member can
// answer is an error and a non-zero exit, not a 0.
func TestCallThroughConsul(t *testing.T) {
	agent, nodes := cluster(t, 2)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"uppercase", "via consul"}, "VIA CONSUL"},
		{[]string{"count", "via consul"}, "10"},
	} {
		args := append([]string{"call", "-consul", agent.Addr, "-service", "stringsvc-e2e"}, tc.args...)
		out, err := exec.Command(clustertest.Binary(t), args...).CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != tc.want {
			t.Errorf("%v: want %q, have %q, %v", tc.args, tc.want, out, err)
		}
	}
	for _, n := range nodes {
		n.Kill(syscall.SIGKILL)
	}
	out, err := exec.Command(clustertest.Binary(t), "call", "-consul", agent.Addr, "-service", "stringsvc-e2e", "-timeout", "2s", "count", "x").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "count:") {
		t.Errorf("with every member dead: want a failed count, have %q, %v", out, err)
	}
}
