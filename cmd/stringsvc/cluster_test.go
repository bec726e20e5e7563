package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kitmesh/stringsvc/discovery/consultest"
	"github.com/kitmesh/stringsvc/internal/probe"
	"github.com/kitmesh/stringsvc/internal/syncbuf"
)

// This file holds the helpers of the process-level tests: a real binary,
// a real Consul, real signals.

var buildOnce struct {
	sync.Once
	path string
	err  error
}

// binary builds cmd/stringsvc once per test run.
func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "stringsvc-bin")
		if err != nil {
			buildOnce.err = err
			return
		}
		buildOnce.path = filepath.Join(dir, "stringsvc")
		out, err := exec.Command("go", "build", "-race", "-o", buildOnce.path, ".").CombinedOutput()
		if err != nil {
			buildOnce.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildOnce.err != nil {
		t.Fatal(buildOnce.err)
	}
	return buildOnce.path
}

// node is one stringsvc process on loopback.
type node struct {
	t    *testing.T
	name string
	addr string // 127.0.0.1:port
	mesh string // the -mesh.addr of a Connect member
	ops  string // the -admin.addr, where its operator's pages are, if set
	args []string
	env  []string // added to the test's environment
	cmd  *exec.Cmd
	log  syncbuf.Buffer
	done chan struct{}
	err  error
}

// Log returns what the node printed.
func (n *node) Log() string { return n.log.String() }

// startNode starts a member registered with the Consul at consulAddr.
func startNode(t *testing.T, name, consulAddr string, extra ...string) *node {
	t.Helper()
	return startNodeEnv(t, name, consulAddr, nil, extra...)
}

// startNodeEnv is startNode with variables added to the environment.
func startNodeEnv(t *testing.T, name, consulAddr string, env []string, extra ...string) *node {
	t.Helper()
	addr := "127.0.0.1:" + strconv.Itoa(consultest.FreePort(t))
	return startProcessEnv(t, name, addr, env, append([]string{
		"-http.addr", addr,
		"-consul.addr", consulAddr,
		"-service.name", "stringsvc-e2e",
		"-shutdown.drain", "500ms",
		"-log.requests=false",
	}, extra...)...)
}

// startProcess starts the binary with exactly args, and waits until it
// answers /health at addr. It is killed when the test ends.
func startProcess(t *testing.T, name, addr string, args ...string) *node {
	t.Helper()
	return startProcessEnv(t, name, addr, nil, args...)
}

// startProcessEnv is startProcess with variables added to the environment.
func startProcessEnv(t *testing.T, name, addr string, env []string, args ...string) *node {
	t.Helper()
	n := &node{t: t, name: name, addr: addr, args: args, env: env}
	n.start()
	t.Cleanup(func() {
		n.kill(syscall.SIGKILL)
		if t.Failed() {
			t.Logf("log of %s:\n%s", n.name, lastLines(n.Log(), 40))
		}
	})
	n.waitServing()
	return n
}

func (n *node) start() {
	n.t.Helper()
	n.cmd = exec.Command(binary(n.t), n.args...)
	if n.env != nil {
		n.cmd.Env = append(os.Environ(), n.env...)
	}
	n.cmd.Stdout, n.cmd.Stderr = &n.log, &n.log
	if err := n.cmd.Start(); err != nil {
		n.t.Fatal(err)
	}
	n.done = make(chan struct{})
	cmd, done := n.cmd, n.done
	go func() { n.err = cmd.Wait(); close(done) }()
}

func (n *node) waitServing() {
	n.t.Helper()
	consultest.Eventually(n.t, 20*time.Second, func() error {
		_, err := probe.Do(http.MethodGet, "http://"+n.addr+"/health", "", nil)
		return err
	})
}

// kill sends sig and, for SIGKILL, waits for the exit.
func (n *node) kill(sig syscall.Signal) {
	select {
	case <-n.done:
		return
	default:
	}
	n.cmd.Process.Signal(sig)
	if sig == syscall.SIGKILL {
		<-n.done
	}
}

// wait waits for the process to exit and returns its error.
func (n *node) wait(timeout time.Duration) error {
	select {
	case <-n.done:
		return n.err
	case <-time.After(timeout):
		return fmt.Errorf("%s still running after %v", n.name, timeout)
	}
}

// opsAddr is where the node serves /metrics and /debug/mesh.
func (n *node) opsAddr() string {
	if n.ops != "" {
		return n.ops
	}
	return n.addr
}

// id is the node's stable service ID.
func (n *node) id() string { return "stringsvc-e2e@" + n.addr }

// metric sums the samples of a metric whose name and labels start with
// prefix (see probe.Metric).
func (n *node) metric(prefix string) float64 {
	n.t.Helper()
	v, err := probe.Metric(n.opsAddr(), prefix)
	if err != nil {
		n.t.Fatalf("metrics of %s: %v", n.name, err)
	}
	return v
}

const servedUppercase = `stringsvc_requests_total{error="false",method="uppercase"}`

// request sends method with body to path on addr and returns status and
// body; it is the one HTTP helper of these tests.
func request(t *testing.T, method, addr, path, body string) (int, string) {
	t.Helper()
	resp, err := probe.Do(method, "http://"+addr+path, body, nil)
	if err != nil {
		t.Fatal(err)
	}
	return resp.Status, resp.Body
}

// healthField returns one field ("ID" or "Address") of every instance of a
// service in Consul's health view: all of them, or only the passing ones;
// sorted.
func healthField(consulAddr, service, field string, passingOnly bool) ([]string, error) {
	url := "http://" + consulAddr + "/v1/health/service/" + service
	if passingOnly {
		url += "?passing=1"
	}
	resp, err := probe.Do(http.MethodGet, url, "", nil)
	if err != nil {
		return nil, err
	}
	if resp.Status != http.StatusOK {
		return nil, fmt.Errorf("%s: status %d", url, resp.Status)
	}
	var entries []struct{ Service map[string]interface{} }
	if err := json.Unmarshal([]byte(resp.Body), &entries); err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		out = append(out, fmt.Sprint(e.Service[field]))
	}
	sort.Strings(out)
	return out, nil
}

// catalog returns the IDs of the test service's instances: all of them, or
// only the passing ones.
func catalog(t *testing.T, consulAddr string, passingOnly bool) ([]string, error) {
	t.Helper()
	return healthField(consulAddr, "stringsvc-e2e", "ID", passingOnly)
}

func waitPassing(t *testing.T, consulAddr string, timeout time.Duration, nodes ...*node) {
	t.Helper()
	var want []string
	for _, n := range nodes {
		want = append(want, n.id())
	}
	sort.Strings(want)
	consultest.Eventually(t, timeout, func() error {
		have, err := catalog(t, consulAddr, true)
		if err != nil {
			return err
		}
		if strings.Join(have, ",") != strings.Join(want, ",") {
			return fmt.Errorf("passing: want %v, have %v", want, have)
		}
		return nil
	})
}

// upstreams returns how many instances a node currently balances over.
func (n *node) upstreams() int {
	return int(n.metric("stringsvc_upstreams "))
}

func lastLines(s string, k int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > k {
		lines = lines[len(lines)-k:]
	}
	return strings.Join(lines, "\n")
}

// containsOnce reports whether sub occurs in s exactly once.
func containsOnce(s, sub string) bool { return strings.Count(s, sub) == 1 }
