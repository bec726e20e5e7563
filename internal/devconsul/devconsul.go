// Package devconsul starts a real `consul agent -dev` on free loopback
// ports. It is the one Consul starter of the repository: the tests use it
// through discovery/consultest, and the bench (internal/e2e/cmd/bench)
// uses it directly, which is why it must not import package testing.
//
// It imports only the standard library, internal/poll and internal/syncbuf.
package devconsul

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/kitmesh/stringsvc/internal/poll"
	"github.com/kitmesh/stringsvc/internal/syncbuf"
)

// ErrNoBinary says that no Consul binary was found.
var ErrNoBinary = errors.New("no Consul binary: run `make consul` to build bin/consul, or set CONSUL_BIN")

// Binary returns the path of the Consul binary: $CONSUL_BIN, then bin/consul
// at the top of the repository (built by `make consul`), then $PATH.
func Binary() (string, error) {
	if b := os.Getenv("CONSUL_BIN"); b != "" {
		return b, nil
	}
	if dir, err := os.Getwd(); err == nil {
		for ; dir != filepath.Dir(dir); dir = filepath.Dir(dir) {
			if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
				b := filepath.Join(dir, "bin", "consul")
				if _, err := os.Stat(b); err == nil {
					return b, nil
				}
				break
			}
		}
	}
	if b, err := exec.LookPath("consul"); err == nil {
		return b, nil
	}
	return "", ErrNoBinary
}

// Options changes how the dev agent runs. The zero value is a plain dev
// agent on HTTP.
type Options struct {
	// HCL is extra agent configuration, e.g. an acl block.
	HCL string
	// TLS, when set, makes the API HTTPS-only; the agent's own TLS files
	// go in HCL (tls.defaults), and TLS is what the starter uses to ask it
	// for its leader.
	TLS *tls.Config
}

// Agent is a running dev agent on loopback ports.
type Agent struct {
	// Addr is the API address, "127.0.0.1:port" (HTTPS with Options.TLS).
	Addr string

	bin   string
	opts  Options
	ports map[string]int
	out   io.Writer // a copy of the agent's output, may be nil
	mu    sync.Mutex
	cmd   *exec.Cmd
	log   *syncbuf.Buffer
	done  chan struct{}
}

// Start starts a dev agent from bin on free ports and waits for it to elect
// itself leader. A copy of its output goes to out, if not nil.
func Start(bin string, out io.Writer) (*Agent, error) {
	return StartWith(bin, out, Options{})
}

// StartWith is Start with options.
func StartWith(bin string, out io.Writer, o Options) (*Agent, error) {
	a := &Agent{bin: bin, opts: o, ports: map[string]int{}, out: out}
	for _, name := range []string{"http", "serf_lan", "serf_wan", "server"} {
		p, err := FreePort()
		if err != nil {
			return nil, err
		}
		a.ports[name] = p
	}
	a.Addr = "127.0.0.1:" + strconv.Itoa(a.ports["http"])
	return a, a.Start()
}

// Start starts a stopped agent again on the same ports, with none of its
// former state (a dev agent keeps nothing).
func (a *Agent) Start() error {
	a.mu.Lock()
	a.log = &syncbuf.Buffer{}
	// The API port is HTTP, or with TLS HTTPS only.
	api := []string{"-http-port", strconv.Itoa(a.ports["http"])}
	if a.opts.TLS != nil {
		api = []string{"-https-port", strconv.Itoa(a.ports["http"]), "-http-port", "-1"}
	}
	args := append([]string{"agent", "-dev",
		"-bind", "127.0.0.1", "-client", "127.0.0.1"}, api...)
	args = append(args,
		"-serf-lan-port", strconv.Itoa(a.ports["serf_lan"]),
		"-serf-wan-port", strconv.Itoa(a.ports["serf_wan"]),
		"-server-port", strconv.Itoa(a.ports["server"]),
		"-dns-port", "-1", "-grpc-port", "-1", "-grpc-tls-port", "-1",
		"-log-level", "warn",
	)
	if a.opts.HCL != "" {
		args = append(args, "-hcl", a.opts.HCL)
	}
	a.cmd = exec.Command(a.bin, args...)
	var w io.Writer = a.log
	if a.out != nil {
		w = io.MultiWriter(w, a.out)
	}
	a.cmd.Stdout, a.cmd.Stderr = w, w
	if err := a.cmd.Start(); err != nil {
		a.mu.Unlock()
		return fmt.Errorf("start consul: %w", err)
	}
	a.done = make(chan struct{})
	cmd, done := a.cmd, a.done
	a.mu.Unlock()
	go func() { cmd.Wait(); close(done) }()
	return a.WaitLeader(30 * time.Second)
}

// WANAddr is the agent's serf WAN address, which a server of another
// datacenter joins (`consul join -wan`).
func (a *Agent) WANAddr() string { return "127.0.0.1:" + strconv.Itoa(a.ports["serf_wan"]) }

// WaitLeader polls until the agent has elected itself leader.
func (a *Agent) WaitLeader(timeout time.Duration) error {
	client := &http.Client{Timeout: 2 * time.Second}
	scheme := "http"
	if a.opts.TLS != nil {
		client.Transport = &http.Transport{TLSClientConfig: a.opts.TLS}
		scheme = "https"
	}
	err := poll.Until(timeout, 50*time.Millisecond, func() error {
		resp, err := client.Get(scheme + "://" + a.Addr + "/v1/status/leader")
		if err != nil {
			return err
		}
		var b bytes.Buffer
		b.ReadFrom(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || len(bytes.Trim(b.Bytes(), "\" \n")) == 0 {
			return fmt.Errorf("no leader yet (%s)", resp.Status)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("consul at %s: %w; log:\n%s", a.Addr, err, a.Log())
	}
	return nil
}

// Stop stops the agent (SIGTERM, then SIGKILL after 10s). It is safe to
// call more than once.
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
func (a *Agent) Restart() error {
	a.Stop()
	return a.Start()
}

// Pid returns the agent's process ID, or 0 when it is stopped.
func (a *Agent) Pid() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cmd == nil {
		return 0
	}
	return a.cmd.Process.Pid
}

// Log returns what the agent printed since it last started.
func (a *Agent) Log() string {
	a.mu.Lock()
	log := a.log
	a.mu.Unlock()
	if log == nil {
		return ""
	}
	return log.String()
}

// Ports handed out by FreePort come from below the kernel's ephemeral range
// (ip_local_port_range, 32768 and up by default). A port from that range
// that is free now can be taken a moment later as the local port of any
// outgoing connection, by this process or another one running in parallel;
// that made a compose test fail with "address already in use".
const (
	portLow  = 20000
	portHigh = 32000
)

// handedOut remembers the ports this process has returned, so that two
// callers never get the same one. It is the package's only state, and it
// exists because the kernel cannot reserve a port for us.
var handedOut sync.Map

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago and
// that this process has not handed out before.
func FreePort() (int, error) {
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
		return port, nil
	}
	return 0, errors.New("no free port below the ephemeral range")
}
