package clustertest

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

// Package is the import path of the member that Binary builds.
const Package = "github.com/kitmesh/stringsvc/cmd/stringsvc"

// ServiceName is the -service.name of the members StartNode starts, so that
// they never mix with a real stringsvc registered in the same Consul.
const ServiceName = "stringsvc-e2e"

var buildOnce struct {
	sync.Once
	path string
	err  error
}

// Binary builds the member (Package) with the race detector once per test
// binary and returns its path. It builds in the root module's directory,
// whichever module the test belongs to, so that the binary under test has
// the service's own dependency versions and go.sum, never those another
// module's requirements would select.
func Binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		root, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/kitmesh/stringsvc").Output()
		if err != nil {
			buildOnce.err = fmt.Errorf("go list -m github.com/kitmesh/stringsvc: %v", err)
			return
		}
		dir, err := os.MkdirTemp("", "stringsvc-bin")
		if err != nil {
			buildOnce.err = err
			return
		}
		buildOnce.path = filepath.Join(dir, "stringsvc")
		build := exec.Command("go", "build", "-race", "-o", buildOnce.path, Package)
		build.Dir = strings.TrimSpace(string(root))
		if out, err := build.CombinedOutput(); err != nil {
			buildOnce.err = fmt.Errorf("go build %s: %v\n%s", Package, err, out)
		}
	})
	if buildOnce.err != nil {
		t.Fatal(buildOnce.err)
	}
	return buildOnce.path
}

// Node is one member: a stringsvc process on loopback that the test
// started (StartNode, StartProcess), or one it only talks to, such as a
// container's published port (At).
type Node struct {
	Name string
	Addr string // host:port of the client listener
	Mesh string // the -mesh.addr of a Connect member
	Ops  string // the -admin.addr, where its operator's pages are, if set

	t    *testing.T
	args []string
	env  []string // added to the test's environment
	cmd  *exec.Cmd
	log  syncbuf.Buffer
	done chan struct{}
	err  error
}

// At is a member the test did not start, reached at addr; only the methods
// that talk to it over HTTP (Metric, Upstreams, OpsAddr, ID) apply.
func At(t *testing.T, name, addr string) *Node {
	return &Node{t: t, Name: name, Addr: addr}
}

// Log returns what the node printed.
func (n *Node) Log() string { return n.log.String() }

// StartNode starts a member registered as ServiceName with the Consul at
// consulAddr, with extra flags after the defaults.
func StartNode(t *testing.T, name, consulAddr string, extra ...string) *Node {
	t.Helper()
	return StartNodeEnv(t, name, consulAddr, nil, extra...)
}

// StartNodeEnv is StartNode with variables added to the environment.
func StartNodeEnv(t *testing.T, name, consulAddr string, env []string, extra ...string) *Node {
	t.Helper()
	addr := "127.0.0.1:" + strconv.Itoa(consultest.FreePort(t))
	return StartProcessEnv(t, name, addr, env, append([]string{
		"-http.addr", addr,
		"-consul.addr", consulAddr,
		"-service.name", ServiceName,
		"-shutdown.drain", "500ms",
		"-log.requests=false",
	}, extra...)...)
}

// StartProcess starts the binary with exactly args, and waits until it
// answers /health at addr. It is killed when the test ends.
func StartProcess(t *testing.T, name, addr string, args ...string) *Node {
	t.Helper()
	return StartProcessEnv(t, name, addr, nil, args...)
}

// StartProcessEnv is StartProcess with variables added to the environment.
func StartProcessEnv(t *testing.T, name, addr string, env []string, args ...string) *Node {
	t.Helper()
	n := &Node{t: t, Name: name, Addr: addr, args: args, env: env}
	n.Start()
	t.Cleanup(func() {
		n.Kill(syscall.SIGKILL)
		if t.Failed() {
			t.Logf("log of %s:\n%s", n.Name, LastLines(n.Log(), 40))
		}
	})
	n.WaitServing()
	return n
}

// Start starts the node's process with its arguments: at first, and again
// after it exited (Kill, Wait).
func (n *Node) Start() {
	n.t.Helper()
	n.cmd = exec.Command(Binary(n.t), n.args...)
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

// WaitServing waits until the node answers /health.
func (n *Node) WaitServing() {
	n.t.Helper()
	consultest.Eventually(n.t, 20*time.Second, func() error {
		_, err := probe.Do(http.MethodGet, "http://"+n.Addr+"/health", "", nil)
		return err
	})
}

// Kill sends sig and, for SIGKILL, waits for the exit.
func (n *Node) Kill(sig syscall.Signal) {
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

// Wait waits for the process to exit and returns its error.
func (n *Node) Wait(timeout time.Duration) error {
	select {
	case <-n.done:
		return n.err
	case <-time.After(timeout):
		return fmt.Errorf("%s still running after %v", n.Name, timeout)
	}
}

// Done is closed when the process of the last Start has exited.
func (n *Node) Done() <-chan struct{} { return n.done }

// Err is how the process exited; it is set once Done is closed.
func (n *Node) Err() error { return n.err }

// OpsAddr is where the node serves /metrics and /debug/mesh.
func (n *Node) OpsAddr() string {
	if n.Ops != "" {
		return n.Ops
	}
	return n.Addr
}

// ID is the stable service ID of a node started by StartNode.
func (n *Node) ID() string { return ServiceName + "@" + n.Addr }

// Metric sums the samples of a metric whose name and labels start with
// prefix (see probe.Metric); it fails the test if there are no metrics.
func (n *Node) Metric(prefix string) float64 {
	n.t.Helper()
	v, err := probe.Metric(n.OpsAddr(), prefix)
	if err != nil {
		n.t.Fatalf("metrics of %s: %v", n.Name, err)
	}
	return v
}

// Upstreams returns how many instances a node currently balances over.
func (n *Node) Upstreams() int {
	return int(n.Metric("stringsvc_upstreams "))
}

// Request sends method with body to path on addr and returns status and
// body; it is the one HTTP helper of these tests.
func Request(t *testing.T, method, addr, path, body string) (int, string) {
	t.Helper()
	resp, err := probe.Do(method, "http://"+addr+path, body, nil)
	if err != nil {
		t.Fatal(err)
	}
	return resp.Status, resp.Body
}

// HealthField returns one field ("ID" or "Address") of every instance of a
// service in Consul's health view: all of them, or only the passing ones;
// sorted.
func HealthField(consulAddr, service, field string, passingOnly bool) ([]string, error) {
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

// Catalog returns the IDs of the instances of ServiceName: all of them, or
// only the passing ones.
func Catalog(t *testing.T, consulAddr string, passingOnly bool) ([]string, error) {
	t.Helper()
	return HealthField(consulAddr, ServiceName, "ID", passingOnly)
}

// WaitPassing waits until the passing instances of ServiceName are exactly
// nodes.
func WaitPassing(t *testing.T, consulAddr string, timeout time.Duration, nodes ...*Node) {
	t.Helper()
	var want []string
	for _, n := range nodes {
		want = append(want, n.ID())
	}
	sort.Strings(want)
	consultest.Eventually(t, timeout, func() error {
		have, err := Catalog(t, consulAddr, true)
		if err != nil {
			return err
		}
		if strings.Join(have, ",") != strings.Join(want, ",") {
			return fmt.Errorf("passing: want %v, have %v", want, have)
		}
		return nil
	})
}

// LastLines returns the last k lines of s, for logs in a failure message.
func LastLines(s string, k int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > k {
		lines = lines[len(lines)-k:]
	}
	return strings.Join(lines, "\n")
}
