package consultest

import (
	"bytes"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Agent is a running `consul agent -dev` on loopback ports.
type Agent struct {
	// Addr is the HTTP API address, "127.0.0.1:port".
	Addr string

	t     testing.TB
	bin   string
	ports map[string]int
	mu    sync.Mutex
	cmd   *exec.Cmd
	log   *bytes.Buffer
	done  chan struct{}
}

// Binary returns the path of the Consul binary, or fails or skips t.
func Binary(t testing.TB) string {
	t.Helper()
	if b := os.Getenv("CONSUL_BIN"); b != "" {
		return b
	}
	if dir, err := os.Getwd(); err == nil {
		for ; dir != filepath.Dir(dir); dir = filepath.Dir(dir) {
			if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
				b := filepath.Join(dir, "bin", "consul")
				if _, err := os.Stat(b); err == nil {
					return b
				}
				break
			}
		}
	}
	if b, err := exec.LookPath("consul"); err == nil {
		return b
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("no Consul binary: run `make consul` (CI must not skip this test)")
	}
	t.Skip("no Consul binary: run `make consul` to build bin/consul")
	return ""
}

// Start starts an agent and stops it when the test ends.
func Start(t testing.TB) *Agent {
	t.Helper()
	a := &Agent{t: t, bin: Binary(t), ports: map[string]int{}}
	for _, name := range []string{"http", "serf_lan", "serf_wan", "server"} {
		a.ports[name] = FreePort(t)
	}
	a.Addr = "127.0.0.1:" + strconv.Itoa(a.ports["http"])
	a.start()
	t.Cleanup(func() {
		a.Stop()
		if t.Failed() {
			t.Logf("consul log:\n%s", a.Log())
		}
	})
	return a
}

func (a *Agent) start() {
	a.t.Helper()
	a.mu.Lock()
	a.log = &bytes.Buffer{}
	a.cmd = exec.Command(a.bin, "agent", "-dev",
		"-bind", "127.0.0.1", "-client", "127.0.0.1",
		"-http-port", strconv.Itoa(a.ports["http"]),
		"-serf-lan-port", strconv.Itoa(a.ports["serf_lan"]),
		"-serf-wan-port", strconv.Itoa(a.ports["serf_wan"]),
		"-server-port", strconv.Itoa(a.ports["server"]),
		"-dns-port", "-1", "-grpc-port", "-1", "-grpc-tls-port", "-1",
		"-log-level", "warn",
	)
	a.cmd.Stdout = syncWriter{&a.mu, a.log}
	a.cmd.Stderr = syncWriter{&a.mu, a.log}
	if err := a.cmd.Start(); err != nil {
		a.mu.Unlock()
		a.t.Fatalf("start consul: %v", err)
	}
	a.done = make(chan struct{})
	cmd, done := a.cmd, a.done
	a.mu.Unlock()
	go func() { cmd.Wait(); close(done) }()
	a.WaitLeader(30 * time.Second)
}

// WaitLeader polls until the agent has elected itself leader.
func (a *Agent) WaitLeader(timeout time.Duration) {
	a.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + a.Addr + "/v1/status/leader")
		if err == nil {
			var b bytes.Buffer
			b.ReadFrom(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 && len(bytes.Trim(b.Bytes(), "\" \n")) > 0 {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	a.t.Fatalf("consul at %s has no leader after %v; log:\n%s", a.Addr, timeout, a.Log())
}

// Stop stops the agent (SIGTERM, then SIGKILL). A dev agent loses all its
// state. It is safe to call more than once.
func (a *Agent) Stop() {
	a.mu.Lock()
	cmd, done := a.cmd, a.done
	a.cmd = nil
	a.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-done
	}
}

// Restart stops the agent and starts a fresh one on the same ports.
func (a *Agent) Restart() {
	a.t.Helper()
	a.Stop()
	a.Start()
}

// Start starts a stopped agent again on the same ports.
func (a *Agent) Start() {
	a.t.Helper()
	a.start()
}

// Log returns what the agent printed.
func (a *Agent) Log() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.log == nil {
		return ""
	}
	return a.log.String()
}

type syncWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// Ports handed out by FreePort come from below the kernel's ephemeral range
// (ip_local_port_range, 32768 and up by default). A port from that range
// that is free now can be taken a moment later as the local port of any
// outgoing connection, by this test or another one running in parallel;
// that made a compose test fail with "address already in use".
const (
	portLow  = 20000
	portHigh = 32000
)

var handedOut sync.Map // ports already returned by this process

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago and
// that this process has not handed out before.
func FreePort(t testing.TB) int {
	t.Helper()
	start := rand.IntN(portHigh - portLow)
	for i := 0; i < portHigh-portLow; i++ {
		port := portLow + (start+i)%(portHigh-portLow)
		if _, taken := handedOut.LoadOrStore(port, true); taken {
			continue
		}
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			continue
		}
		l.Close()
		return port
	}
	t.Fatal("no free port below the ephemeral range")
	return 0
}

// Eventually polls cond every 20ms until it returns nil or timeout passes,
// then fails t with cond's last error.
func Eventually(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for {
		if err = cond(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not true after %v: %v", timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
