package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kitmesh/stringsvc/discovery/consultest"
	"github.com/kitmesh/stringsvc/internal/clustertest"
	"github.com/kitmesh/stringsvc/internal/load"
	"github.com/kitmesh/stringsvc/internal/probe"
)

// The offline images built by deploy/images.sh (make images).
var offlineImages = map[string]string{
	"STRINGSVC_IMAGE":      "kitmesh/stringsvc:local",
	"STRINGSVC_DOCKERFILE": "deploy/Dockerfile.local",
	"CONSUL_IMAGE":         "kitmesh/consul:local",
	"PROMETHEUS_IMAGE":     "kitmesh/prometheus:local",
	"TRACES_IMAGE":         "kitmesh/jaeger:local",
}

// containers is what the compose and swarm tests share: commands run in
// the top directory of the repository, with the offline images and a free
// loopback port for each published port in the environment.
type containers struct {
	t     *testing.T
	dir   string
	env   []string
	ports map[string]int // by variable, e.g. CONSUL_PORT
}

func newContainers(t *testing.T, portVars ...string) containers {
	t.Helper()
	dir, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	c := containers{t: t, dir: dir, env: os.Environ(), ports: map[string]int{}}
	for k, v := range offlineImages {
		c.env = append(c.env, k+"="+v)
	}
	for _, k := range portVars {
		c.ports[k] = consultest.FreePort(t)
		c.env = append(c.env, k+"="+strconv.Itoa(c.ports[k]))
	}
	return c
}

// run runs argv and returns what it printed.
func (c containers) run(argv ...string) (string, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir, cmd.Env = c.dir, c.env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// mustRun runs argv and fails the test if it fails.
func (c containers) mustRun(argv ...string) string {
	c.t.Helper()
	out, err := c.run(argv...)
	if err != nil {
		c.t.Fatalf("%v: %v\n%s", argv, err, out)
	}
	return out
}

// addr is the loopback address of a published port.
func (c containers) addr(portVar string) string {
	return "127.0.0.1:" + strconv.Itoa(c.ports[portVar])
}

// compose drives one docker-compose project of the repository's file.
type compose struct {
	containers
	project  string
	files    []string // -f arguments
	profiles []string
	cli      composeCLI
}

// needDocker skips container tests in -short mode, and otherwise skips
// or, under CI=true, fails when no engine answers or the offline images
// are missing.
func needDocker(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("container test")
	}
	missing := func(msg string) {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s (CI must not skip the compose test)", msg)
		}
		t.Skip(msg)
	}
	if err := exec.Command("docker", "info").Run(); err != nil {
		missing("no Docker engine answers")
	}
	for k, img := range offlineImages {
		if strings.HasSuffix(k, "_IMAGE") {
			if err := exec.Command("docker", "image", "inspect", img).Run(); err != nil {
				missing(fmt.Sprintf("image %s is missing: run `make images`", img))
			}
		}
	}
}

// composeCLI is one compose command line: Compose v2 (`docker compose`)
// or Compose 1.29 (`docker-compose`).
type composeCLI struct {
	name string
	argv []string
}

// composeCLIs returns the compose CLIs to test with: v2, as the README
// writes it, always (CI fails without it: `make test` installs the plugin
// where it is missing), and 1.29 where present.
func composeCLIs(t *testing.T) []composeCLI {
	t.Helper()
	var clis []composeCLI
	if exec.Command("docker", "compose", "version").Run() == nil {
		clis = append(clis, composeCLI{"v2", []string{"docker", "compose"}})
	} else if os.Getenv("CI") == "true" {
		t.Fatal("`docker compose` (v2) is missing: run `make compose-plugin` (CI must not skip it)")
	}
	if _, err := exec.LookPath("docker-compose"); err == nil {
		clis = append(clis, composeCLI{"v1.29", []string{"docker-compose"}})
	}
	if len(clis) == 0 {
		t.Skip("no compose CLI")
	}
	return clis
}

// newCompose drives the repository's docker-compose.yml through cli, with
// overlays (files relative to the top of the repository) on it.
func newCompose(t *testing.T, cli composeCLI, overlays ...string) *compose {
	t.Helper()
	c := &compose{
		containers: newContainers(t, "CONSUL_PORT", "NODE1_PORT", "NODE2_PORT", "NODE3_PORT", "PROMETHEUS_PORT", "EDGE_PORT", "JAEGER_PORT",
			"NODE1_ADMIN_PORT", "NODE2_ADMIN_PORT", "NODE3_ADMIN_PORT", "CANARY1_PORT", "CANARY2_PORT", "CANARY1_ADMIN_PORT", "CANARY2_ADMIN_PORT"),
		cli:      cli,
		profiles: []string{"observability"},
		project:  fmt.Sprintf("stringsvc-e2e-%d-%s-%d", os.Getpid(), strings.ReplaceAll(cli.name, ".", ""), len(overlays)),
	}
	for _, f := range append([]string{"docker-compose.yml"}, overlays...) {
		c.files = append(c.files, "-f", f)
	}
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := c.cmd("logs", "--no-color", "--tail", "30")
			t.Logf("compose logs:\n%s", out)
		}
		if out, err := c.cmd("down", "-v", "--remove-orphans", "-t", "5"); err != nil {
			t.Errorf("compose down: %v\n%s", err, out)
		}
	})
	return c
}

// argv is the compose command line for args.
func (c *compose) argv(args ...string) []string {
	base := []string{"-p", c.project}
	for _, p := range c.profiles {
		base = append(base, "--profile", p)
	}
	base = append(base, c.files...)
	return append(append(append([]string{}, c.cli.argv...), base...), args...)
}

func (c *compose) cmd(args ...string) (string, error) { return c.run(c.argv(args...)...) }

func (c *compose) must(args ...string) string {
	c.t.Helper()
	return c.mustRun(c.argv(args...)...)
}

// container returns the container ID of a service, running or not (a
// one-shot init has exited).
func (c *compose) container(service string) string {
	return strings.TrimSpace(c.must("ps", "-a", "-q", service))
}

func (c *compose) inspect(service, format string) string {
	c.t.Helper()
	out, err := exec.Command("docker", "inspect", "-f", format, c.container(service)).CombinedOutput()
	if err != nil {
		c.t.Fatalf("docker inspect %s: %v\n%s", service, err, out)
	}
	return strings.TrimSpace(string(out))
}

// dnode wraps a published member port for the helpers that take a node.
func (c *compose) dnode(name, portVar string) *clustertest.Node {
	return clustertest.At(c.t, name, c.addr(portVar))
}

// passingAddrs returns the addresses of the passing members.
func passingAddrs(consulAddr string) ([]string, error) {
	return clustertest.HealthField(consulAddr, "stringsvc", "Address", true)
}

func TestCompose(t *testing.T) {
	needDocker(t)
	for _, cli := range composeCLIs(t) {
		t.Run(cli.name, func(t *testing.T) { testCompose(t, cli) })
	}
}

func testCompose(t *testing.T, cli composeCLI) {
	c := newCompose(t, cli)
	c.profiles = append(c.profiles, "edge", "tracing")
	c.env = append(c.env, "OTEL_EXPORTER_OTLP_ENDPOINT=http://jaeger:4318")
	c.must("up", "-d", "--no-build")

	members := []struct{ service, port string }{{"node1", "NODE1_PORT"}, {"node2", "NODE2_PORT"}, {"node3", "NODE3_PORT"}}
	consulAddr := c.addr("CONSUL_PORT")
	consultest.Eventually(t, 90*time.Second, func() error {
		for _, m := range members {
			if s := c.inspect(m.service, "{{.State.Health.Status}}"); s != "healthy" {
				return fmt.Errorf("%s is %s", m.service, s)
			}
		}
		return nil
	})

	ip := func(service string) string {
		return c.inspect(service, "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}")
	}
	var wantAddrs []string
	for _, m := range members {
		wantAddrs = append(wantAddrs, ip(m.service))
	}
	sort.Strings(wantAddrs)
	waitAddrs := func(timeout time.Duration, want []string) time.Duration {
		t.Helper()
		began := time.Now()
		consultest.Eventually(t, timeout, func() error {
			have, err := passingAddrs(consulAddr)
			if err != nil {
				return err
			}
			if strings.Join(have, ",") != strings.Join(want, ",") {
				return fmt.Errorf("passing: want %v, have %v", want, have)
			}
			return nil
		})
		return time.Since(began)
	}

	t.Run("Consul lists the container addresses", func(t *testing.T) {
		waitAddrs(30*time.Second, wantAddrs)
		for _, a := range wantAddrs {
			if strings.HasPrefix(a, "127.") || a == "::1" || a == "" {
				t.Errorf("registered a loopback or empty address %q", a)
			}
		}
		if resp, err := probe.Do(http.MethodGet, "http://"+consulAddr+"/ui/", "", nil); err != nil || resp.Status != 200 {
			t.Errorf("Consul UI: want 200, have %d %v", resp.Status, err)
		}
	})

	if cli.name == "v2" {
		t.Run("the Consul UI in a real browser lists the members passing", func(t *testing.T) {
			var ids []string
			for _, a := range wantAddrs {
				ids = append(ids, "stringsvc@"+a+":8080")
			}
			consulUIShows(t, consulAddr, "consul-ui-compose", ids)
		})
	}

	t.Run("an intention denies the edge, and allowing it again needs no restart", func(t *testing.T) {
		testComposeIntentions(t, c, consulAddr, cli.name == "v2")
	})

	t.Run("every node answers and one node's traffic reaches all", func(t *testing.T) {
		for _, m := range members {
			n := c.dnode(m.service, m.port)
			consultest.Eventually(t, 10*time.Second, func() error {
				if u := n.Upstreams(); u != 3 {
					return fmt.Errorf("%s sees %d upstreams", m.service, u)
				}
				return nil
			})
			if code, body := clustertest.Request(t, "POST", n.Addr, "/uppercase", `{"s":"hello, world"}`); code != 200 || body != `{"v":"HELLO, WORLD"}`+"\n" {
				t.Errorf("%s uppercase: want HELLO, WORLD; have %d %s", m.service, code, body)
			}
			if code, body := clustertest.Request(t, "POST", n.Addr, "/count", `{"s":"hello, world"}`); code != 200 || body != `{"v":12}`+"\n" {
				t.Errorf("%s count: want 12; have %d %s", m.service, code, body)
			}
		}
		n1 := c.dnode("node1", "NODE1_PORT")
		before := map[string]float64{}
		for _, m := range members {
			before[m.service] = c.dnode(m.service, m.port).Metric(clustertest.ServedUppercase)
		}
		if res := load.Run(context.Background(), clustertest.UpperLoad(n1, 600, 0, nil)); res.Failed != 0 || res.Succeeded != 600 {
			t.Fatalf("want 600 succeeded, have %s", res)
		}
		for _, m := range members {
			served := c.dnode(m.service, m.port).Metric(clustertest.ServedUppercase) - before[m.service]
			t.Logf("%s served %v of 600 sent to node1", m.service, served)
			if served == 0 {
				t.Errorf("%s served none", m.service)
			}
		}
	})

	t.Run("a request through node1 served by another member is one trace in the backend", func(t *testing.T) {
		testComposeTrace(t, c)
	})

	t.Run("Prometheus scrapes every member found through Consul", func(t *testing.T) {
		consultest.Eventually(t, 60*time.Second, func() error {
			resp, err := probe.Do(http.MethodGet, "http://"+c.addr("PROMETHEUS_PORT")+"/api/v1/targets?state=active", "", nil)
			if err != nil {
				return err
			}
			var body struct {
				Data struct {
					ActiveTargets []struct {
						ScrapeURL string
						Health    string
					}
				}
			}
			if err := json.Unmarshal([]byte(resp.Body), &body); err != nil {
				return err
			}
			var up []string
			for _, tg := range body.Data.ActiveTargets {
				if tg.Health == "up" {
					up = append(up, tg.ScrapeURL)
				}
			}
			if len(up) != 3 {
				return fmt.Errorf("want 3 targets up, have %d: %+v", len(up), body.Data.ActiveTargets)
			}
			return nil
		})
	})

	// Bounded load on the published ports of the members that stay up.
	underLoad := func(targets []*clustertest.Node, during func()) load.Result {
		t.Helper()
		var progress load.Progress
		opts := clustertest.UpperLoad(targets[0], 3000, 20*time.Millisecond, &progress)
		opts.Targets = nil
		for _, n := range targets {
			opts.Targets = append(opts.Targets, "http://"+n.Addr+"/uppercase")
		}
		done := make(chan load.Result)
		go func() { done <- load.Run(context.Background(), opts) }()
		consultest.Eventually(t, 30*time.Second, func() error {
			if s := progress.Sent.Load(); s < 300 {
				return fmt.Errorf("sent %d", s)
			}
			return nil
		})
		during()
		return <-done
	}

	n1, n3 := c.dnode("node1", "NODE1_PORT"), c.dnode("node3", "NODE3_PORT")
	t.Run("stop node2 under load", func(t *testing.T) {
		node2IP := ip("node2")
		var left time.Duration
		res := underLoad([]*clustertest.Node{n1, n3}, func() {
			// What `compose stop` does (SIGTERM, then SIGKILL after the
			// grace period), without the compose CLI's own start-up time
			// inside the measurement.
			go exec.Command("docker", "stop", "-t", "10", c.container("node2")).Run()
			var rest []string
			for _, a := range wantAddrs {
				if a != node2IP {
					rest = append(rest, a)
				}
			}
			left = waitAddrs(2*time.Second, rest)
		})
		t.Logf("stop node2: %s; left Consul after %v", res, left.Round(time.Millisecond))
		if res.Failed != 0 || res.Succeeded != 3000 {
			t.Errorf("want 3000 succeeded and 0 failed, have %s", res)
		}
	})

	t.Run("kill node3 under load, then start it", func(t *testing.T) {
		var left time.Duration
		res := underLoad([]*clustertest.Node{n1}, func() {
			if out, err := exec.Command("docker", "kill", c.container("node3")).CombinedOutput(); err != nil {
				t.Fatalf("docker kill: %v %s", err, out)
			}
			left = waitAddrs(clustertest.CheckInterval+clustertest.CheckTimeout+2*time.Second, []string{ip("node1")})
		})
		t.Logf("kill node3: %s; left the passing set after %v", res, left.Round(time.Millisecond))
		if res.Failed != 0 || res.Succeeded != 3000 {
			t.Errorf("want 3000 succeeded and 0 failed, have %s", res)
		}

		c.must("start", "node3")
		began := time.Now()
		// With node2 stopped, node1's balancer picks between itself
		// (in-process, a few µs) and node3, which rejoins at the default
		// 1 ms latency. p2c sends it a request once that default, decaying
		// with a 2 s time constant, falls below node1's own cost: about
		// 2 s × ln(1 ms / 8 µs) ≈ 10 s, less when node1 is busy. So the
		// bound is 30 s, not the 10 s that a slower local path used to
		// meet by a small margin.
		consultest.Eventually(t, 30*time.Second, func() error {
			load.Run(context.Background(), clustertest.UpperLoad(n1, 40, 0, nil))
			if served, err := probe.Metric(n3.Addr, clustertest.ServedUppercase); err != nil || served == 0 {
				view, _ := probe.Do(http.MethodGet, "http://"+n1.Addr+"/debug/mesh", "", nil)
				failed, _ := probe.Metric(n1.Addr, `stringsvc_proxy_attempts_total{outcome="failure"}`)
				return fmt.Errorf("node3 has served nothing yet (%v); node1's attempts failed so far: %v; node1's view: %s", err, failed, view.Body)
			}
			return nil
		})
		t.Logf("node3 back and serving traffic from node1 %v after start", time.Since(began).Round(time.Millisecond))
	})

	t.Run("partition of node3", func(t *testing.T) {
		testComposePartition(t, c, consulAddr, n1)
	})
}

// testComposeTrace sends requests with known traceparents to node1 until
// one is served by another member (node2 or node3: the balancer picks),
// and finds that request in the trace backend's
// query API (Jaeger's, or tracesink's offline) as one trace with spans of
// both members.
func testComposeTrace(t *testing.T, c *compose) {
	n1 := c.dnode("node1", "NODE1_PORT")
	others := []*clustertest.Node{c.dnode("node2", "NODE2_PORT"), c.dnode("node3", "NODE3_PORT")}
	servedElsewhere := func() float64 {
		return others[0].Metric(clustertest.ServedUppercase) + others[1].Metric(clustertest.ServedUppercase)
	}
	var traceID string
	for i := 0; i < 200 && traceID == ""; i++ {
		id := fmt.Sprintf("%032x", time.Now().UnixNano()+int64(i))
		before := servedElsewhere()
		resp, err := probe.Do(http.MethodPost, "http://"+n1.Addr+"/uppercase", `{"s":"traced"}`, http.Header{"Traceparent": {"00-" + id + "-00f067aa0ba902b7-01"}})
		if err != nil || resp.Status != 200 {
			t.Fatalf("node1: want 200, have %v %v", resp, err)
		}
		if servedElsewhere() > before {
			traceID = id
		}
	}
	if traceID == "" {
		t.Fatal("node2 and node3 served none of 200 requests sent to node1")
	}
	var tr struct {
		Spans []struct {
			SpanID        string
			OperationName string
			ProcessID     string
			References    []struct{ SpanID string }
		}
		Processes map[string]struct {
			ServiceName string
			Tags        []struct {
				Key   string
				Value interface{}
			}
		}
	}
	url := "http://" + c.addr("JAEGER_PORT") + "/api/traces/" + traceID
	consultest.Eventually(t, 30*time.Second, func() error { // members export in batches
		resp, err := probe.Do(http.MethodGet, url, "", nil)
		if err != nil {
			return err
		}
		var body struct{ Data []json.RawMessage }
		if err := json.Unmarshal([]byte(resp.Body), &body); err != nil || len(body.Data) != 1 {
			return fmt.Errorf("trace %s not there yet: %d %.200s", traceID, resp.Status, resp.Body)
		}
		if err := json.Unmarshal(body.Data[0], &tr); err != nil {
			return err
		}
		// Both members' spans: node1's server, service, forward and
		// attempt, node2's server and service.
		if len(tr.Spans) < 6 {
			return fmt.Errorf("trace %s has %d spans so far, want 6", traceID, len(tr.Spans))
		}
		return nil
	})
	instances := map[string][]string{}
	for _, sp := range tr.Spans {
		p := tr.Processes[sp.ProcessID]
		inst := p.ServiceName
		for _, tag := range p.Tags {
			if tag.Key == "service.instance.id" {
				inst = fmt.Sprint(tag.Value)
			}
		}
		instances[inst] = append(instances[inst], sp.OperationName)
	}
	if len(instances) != 2 {
		t.Errorf("want spans of 2 members in trace %s, have %v", traceID, instances)
	}
	// The tree, as the backend has it, for the log.
	children := map[string][]int{}
	for i, sp := range tr.Spans {
		parent := ""
		if len(sp.References) > 0 {
			parent = sp.References[0].SpanID
		}
		children[parent] = append(children[parent], i)
	}
	known := map[string]bool{}
	for _, sp := range tr.Spans {
		known[sp.SpanID] = true
	}
	var tree strings.Builder
	var walk func(parent string, depth int)
	walk = func(parent string, depth int) {
		for _, i := range children[parent] {
			sp := tr.Spans[i]
			fmt.Fprintf(&tree, "\n%s%s  [%s]", strings.Repeat("  ", depth), sp.OperationName, tr.Processes[sp.ProcessID].ServiceName+" "+sp.ProcessID)
			walk(sp.SpanID, depth+1)
		}
	}
	for parent := range children {
		if !known[parent] {
			walk(parent, 0) // the roots: the caller's span is not in the backend
		}
	}
	t.Logf("trace %s in the backend: %v%s", traceID, instances, tree.String())
}

// testComposeIntentions denies the edge with the consul CLI, as the README
// shows, checks that its requests are refused with 403 and reach no
// member, and allows it again.
func testComposeIntentions(t *testing.T, c *compose, consulAddr string, browser bool) {
	edge := c.dnode("edge", "EDGE_PORT")
	consultest.Eventually(t, 60*time.Second, func() error {
		if s := c.inspect("edge", "{{.State.Health.Status}}"); s != "healthy" {
			return fmt.Errorf("edge is %s", s)
		}
		if u := edge.Upstreams(); u != 3 {
			return fmt.Errorf("edge sees %d upstreams", u)
		}
		return nil
	})
	// Consul's topology has the edge as stringsvc's caller, declared by
	// its registration, and not as its upstream: the edge's init wrote
	// that nobody may call it, which under the dev agent's default allow
	// is what keeps it from being inferred as everyone's upstream.
	consultest.Eventually(t, 30*time.Second, func() error {
		if s := c.inspect("edge-init", "{{.State.Status}} {{.State.ExitCode}}"); s != "exited 0" {
			return fmt.Errorf("edge-init is %s", s)
		}
		resp, err := probe.Do(http.MethodGet, "http://"+consulAddr+"/v1/internal/ui/service-topology/stringsvc?kind=", "", nil)
		if err != nil {
			return err
		}
		var topo struct {
			Upstreams, Downstreams []struct{ Name, Source string }
		}
		if err := json.Unmarshal([]byte(resp.Body), &topo); err != nil {
			return fmt.Errorf("topology: %v: %.200s", err, resp.Body)
		}
		var up, down []string
		for _, u := range topo.Upstreams {
			up = append(up, u.Name+" ("+u.Source+")")
		}
		for _, d := range topo.Downstreams {
			down = append(down, d.Name+" ("+d.Source+")")
		}
		if strings.Join(down, ",") != "stringsvc-edge (proxy-registration)" || len(up) != 0 {
			return fmt.Errorf("stringsvc's topology: want downstream stringsvc-edge (registration) and no upstream, have downstreams %v, upstreams %v", down, up)
		}
		return nil
	})
	members := []*clustertest.Node{c.dnode("node1", "NODE1_PORT"), c.dnode("node2", "NODE2_PORT"), c.dnode("node3", "NODE3_PORT")}
	if codes := clustertest.SendUppercase(t, edge, 20); codes[http.StatusOK] != 20 {
		t.Fatalf("edge, allowed: want 20 answers 200, have %v", codes)
	}
	c.must("exec", "-T", "consul", "consul", "intention", "create", "-deny", "stringsvc-edge", "stringsvc")
	denied := time.Now()
	consultest.Eventually(t, 15*time.Second, func() error {
		if code, body := clustertest.Request(t, http.MethodPost, edge.Addr, "/uppercase", `{"s":"x"}`); code != http.StatusForbidden {
			return fmt.Errorf("edge after the deny: %d %s", code, body)
		}
		return nil
	})
	took := time.Since(denied)
	// Every member has seen the deny within its -mesh.authz-cache (the
	// default, 2s) of the write; the first 403 may come from one of them.
	time.Sleep(time.Until(denied.Add(2*time.Second + clustertest.IntentionSlack)))
	before := clustertest.Served(members...)
	codes := clustertest.SendUppercase(t, edge, 20)
	after := clustertest.Served(members...)
	if codes[http.StatusForbidden] != 20 {
		t.Errorf("edge, denied: want 20 answers 403, have %v", codes)
	}
	for i, n := range members {
		if after[i] != before[i] {
			t.Errorf("%s served %v requests of the denied edge", n.Name, after[i]-before[i])
		}
	}
	t.Logf("deny stringsvc-edge -> stringsvc (consul CLI): edge refused after %v; 20 sent, answers %v, members served 0", took.Round(time.Millisecond), codes)
	if browser {
		t.Run("the Consul UI shows the intention and the members native to the mesh", func(t *testing.T) {
			consulUIPage(t, consulAddr, "/ui/dc1/services/stringsvc/intentions", "consul-ui-intentions", func(text string) error {
				if !strings.Contains(text, "stringsvc-edge") || !strings.Contains(strings.ToLower(text), "deny") {
					return fmt.Errorf("no deny intention of stringsvc-edge shown")
				}
				return nil
			})
			// The UI has a Topology tab only for services in the mesh;
			// for stringsvc it draws the edge, as its caller.
			consulUIPage(t, consulAddr, "/ui/dc1/services/stringsvc/topology", "consul-ui-topology", func(text string) error {
				if !strings.Contains(text, "Topology") || !strings.Contains(text, "stringsvc-edge") {
					return fmt.Errorf("no mesh topology of stringsvc with stringsvc-edge shown")
				}
				if !strings.Contains(text, "Defined in proxy registration") {
					return fmt.Errorf("the edge is not shown as declared by its registration")
				}
				return nil
			})
		})
	}
	c.must("exec", "-T", "consul", "consul", "intention", "delete", "stringsvc-edge", "stringsvc")
	allowed := time.Now()
	consultest.Eventually(t, 15*time.Second, func() error {
		if codes := clustertest.SendUppercase(t, edge, 10); codes[http.StatusOK] != 10 {
			return fmt.Errorf("edge after the allow: %v", codes)
		}
		return nil
	})
	t.Logf("intention deleted: edge served again after %v, no restart", time.Since(allowed).Round(time.Millisecond))
	if restarts := c.inspect("edge", "{{.RestartCount}}"); restarts != "0" {
		t.Errorf("edge restarted %s times", restarts)
	}
}

// testComposePartition cuts node3 off the mesh network (from Consul and its
// peers), checks that the others drop it while it still serves its own
// clients, then heals the cut.
func testComposePartition(t *testing.T, c *compose, consulAddr string, n1 *clustertest.Node) {
	id := c.container("node3")
	netName := c.inspect("node3", "{{range $k, $v := .NetworkSettings.Networks}}{{$k}}{{end}}")
	node3IP := c.inspect("node3", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}")
	hasNode3 := func() (bool, error) {
		addrs, err := passingAddrs(consulAddr)
		if err != nil {
			return false, err
		}
		return strings.Contains(","+strings.Join(addrs, ",")+",", ","+node3IP+","), nil
	}
	consultest.Eventually(t, 15*time.Second, func() error {
		if in, err := hasNode3(); err != nil || !in {
			return fmt.Errorf("node3 (%s) not passing yet (%v)", node3IP, err)
		}
		return nil
	})
	upstreamsBefore := n1.Upstreams()

	var progress load.Progress
	opts := clustertest.UpperLoad(n1, 60000, 10*time.Millisecond, &progress)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan load.Result, 1)
	go func() { done <- load.Run(ctx, opts) }()

	if out, err := exec.Command("docker", "network", "disconnect", netName, id).CombinedOutput(); err != nil {
		t.Fatalf("network disconnect: %v %s", err, out)
	}
	cut := time.Now()
	healed := false
	defer func() {
		if !healed {
			exec.Command("docker", "network", "connect", netName, id).Run()
		}
	}()
	consultest.Eventually(t, clustertest.CheckInterval+clustertest.CheckTimeout+5*time.Second, func() error {
		if in, err := hasNode3(); err != nil || in {
			return fmt.Errorf("node3 still passing (%v)", err)
		}
		if u := n1.Upstreams(); u != upstreamsBefore-1 {
			return fmt.Errorf("node1 sees %d upstreams, want %d", u, upstreamsBefore-1)
		}
		return nil
	})
	t.Logf("partition: node3 dropped by Consul and node1 after %v", time.Since(cut).Round(time.Millisecond))

	// Cut off, node3 still answers a client on its own host.
	out, err := exec.Command("docker", "exec", id, "/stringsvc", "call", "-addr", "127.0.0.1:8080", "uppercase", "still here").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "STILL HERE" {
		t.Errorf("node3 during the partition: want STILL HERE, have %q, %v", out, err)
	}

	if out, err := exec.Command("docker", "network", "connect", netName, id).CombinedOutput(); err != nil {
		t.Fatalf("network connect: %v %s", err, out)
	}
	healed = true
	healedAt := time.Now()
	consultest.Eventually(t, 20*time.Second, func() error {
		if in, err := hasNode3(); err != nil || !in {
			return fmt.Errorf("node3 not passing again (%v)", err)
		}
		if u := n1.Upstreams(); u != upstreamsBefore {
			return fmt.Errorf("node1 sees %d upstreams, want %d", u, upstreamsBefore)
		}
		return nil
	})
	t.Logf("partition healed: node3 passing and back in node1's set after %v, without a restart", time.Since(healedAt).Round(time.Millisecond))
	cancel()
	res := <-done
	t.Logf("load on node1 during the partition: %s", res)
	if res.Failed != 0 {
		t.Errorf("want 0 failed requests on node1, have %s", res)
	}
	if restarts := c.inspect("node3", "{{.RestartCount}}"); restarts != "0" {
		t.Errorf("node3 restarted %s times; want it to rejoin without a restart", restarts)
	}
}
