package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/kitmesh/stringsvc/internal/baseline"
	"github.com/kitmesh/stringsvc/internal/devconsul"
	"github.com/kitmesh/stringsvc/internal/load"
	"github.com/kitmesh/stringsvc/internal/poll"
	"github.com/kitmesh/stringsvc/internal/probe"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(1)
	}
}

type config struct {
	consul, stringsvc string
	tracesink         string
	duration          time.Duration
	rounds            int
	concurrency       []int
	idle              time.Duration
	slowDelay         time.Duration
	baselineAddr      string
	stringsvc3Addr    string
	upstreams         string
	goBench           bool
	quick             bool
	memoryOnly        bool
	tracingOnly       bool
	scaleSizes        string
	charts            string
	before            string
	chain             bool
	limiters          string
	overloadConc      []int
	overloadOnly      bool
	zonesOnly         bool
}

func run(args []string, stdout, stderr io.Writer) error {
	var c config
	var conc string
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.consul, "consul", "bin/consul", "Consul binary")
	fs.StringVar(&c.stringsvc, "stringsvc", "bin/stringsvc", "stringsvc binary")
	fs.StringVar(&c.tracesink, "tracesink", "bin/tracesink", "OTLP receiver for the tracing columns (cmd/tracesink)")
	fs.DurationVar(&c.duration, "duration", 2*time.Second, "length of one measurement")
	fs.IntVar(&c.rounds, "rounds", 3, "rounds; each round measures every path once")
	fs.StringVar(&conc, "concurrency", "1,8,32,64", "concurrency levels")
	fs.DurationVar(&c.idle, "idle", time.Minute, "how long to watch an idle member's requests to Consul")
	fs.DurationVar(&c.slowDelay, "slow", 20*time.Millisecond, "delay of the slow upstream in the balancer comparison")
	fs.StringVar(&c.baselineAddr, "serve-baseline", "", "internal: serve the baseline on this address")
	fs.StringVar(&c.stringsvc3Addr, "serve-stringsvc3", "", "internal: serve Go kit's stringsvc3 proxy chain (the reference path) on this address")
	fs.StringVar(&c.upstreams, "upstreams", "", "internal: the instances of -serve-stringsvc3, comma-separated")
	fs.StringVar(&c.charts, "charts", "", "directory to write the SVG charts to (none when empty)")
	fs.StringVar(&c.before, "before", "", "an earlier stringsvc binary: its local, proxied and hop paths are measured beside this one's, alternating, in the same run")
	fs.BoolVar(&c.chain, "chain", true, "also a mesh whose service has config entries (resolver subset, splitter, a router whose route matches nothing measured): what applying Consul's discovery chain costs")
	fs.StringVar(&c.limiters, "limiters", "gradient", "the overload section's variants of this binary, by -http.limiter (e.g. gradient,vegas,aimd,fixed); with -before that binary too")
	var overloadConc string
	fs.StringVar(&overloadConc, "overload-concurrency", "32,256,1024", "the overload section's concurrency levels, capacity first")
	fs.BoolVar(&c.overloadOnly, "overload", false, "only the overload section")
	fs.BoolVar(&c.zonesOnly, "zones", false, "only the zone section")
	fs.StringVar(&c.scaleSizes, "scale", "", "only the scale benchmark, at these mesh sizes (e.g. 3,10,30,60)")
	fs.BoolVar(&c.tracingOnly, "tracing", false, "only the cost of tracing on the local path (no Consul)")
	fs.BoolVar(&c.memoryOnly, "memory", false, "only the memory of members under concurrent 1 MiB bodies (no Consul)")
	fs.BoolVar(&c.quick, "quick", false, "only the baseline, local and proxied paths, and with -before or -chain the hop too (no slow upstream, idle or in-process parts); works with older binaries")
	fs.BoolVar(&c.goBench, "gobench", true, "also run the in-process benchmarks (go test -bench) for allocations per request")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if c.baselineAddr != "" {
		return serveBaseline(c.baselineAddr)
	}
	if c.stringsvc3Addr != "" {
		return serveStringsvc3(c.stringsvc3Addr, strings.Split(c.upstreams, ","))
	}
	for _, s := range strings.Split(conc, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return fmt.Errorf("bad -concurrency %q", conc)
		}
		c.concurrency = append(c.concurrency, n)
	}
	for _, s := range strings.Split(overloadConc, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return fmt.Errorf("bad -overload-concurrency %q", overloadConc)
		}
		c.overloadConc = append(c.overloadConc, n)
	}
	dir, err := os.MkdirTemp("", "stringsvc-bench")
	if err != nil {
		return err
	}
	if os.Getenv("BENCH_KEEP") == "" {
		defer os.RemoveAll(dir)
	} else {
		fmt.Fprintf(stderr, "bench: logs in %s\n", dir)
	}
	env := &bench{cfg: c, dir: dir, stderr: stderr}
	defer env.stopAll()
	return env.run(stdout)
}

// serveBaseline serves the plain net/http baseline (internal/baseline).
func serveBaseline(addr string) error {
	return (&http.Server{Addr: addr, Handler: baseline.Handler(), ReadHeaderTimeout: 5 * time.Second}).ListenAndServe()
}

type bench struct {
	cfg    config
	dir    string
	stderr io.Writer
	procs  []*exec.Cmd
	agent  *devconsul.Agent
}

func (b *bench) logf(format string, args ...interface{}) {
	fmt.Fprintf(b.stderr, "bench: "+format+"\n", args...)
}

// freeAddr returns a free loopback address below the ephemeral range.
func freeAddr() (string, error) {
	p, err := devconsul.FreePort()
	if err != nil {
		return "", err
	}
	return "127.0.0.1:" + strconv.Itoa(p), nil
}

func (b *bench) start(name, bin string, args ...string) (*exec.Cmd, error) {
	return b.startEnv(name, bin, nil, args...)
}

// startEnv is start with variables added to the environment.
func (b *bench) startEnv(name, bin string, env []string, args ...string) (*exec.Cmd, error) {
	f, err := os.Create(filepath.Join(b.dir, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	b.procs = append(b.procs, cmd)
	return cmd, nil
}

func (b *bench) stopAll() {
	if b.agent != nil {
		b.agent.Stop()
	}
	for _, p := range b.procs {
		p.Process.Kill()
		p.Wait()
	}
}

func waitFor(timeout time.Duration, what string, cond func() bool) error {
	return poll.Until(timeout, 50*time.Millisecond, func() error {
		if !cond() {
			return fmt.Errorf("waiting for %s", what)
		}
		return nil
	})
}

// metric reads one metric from a member's /metrics; -1 if it cannot.
func metric(addr, name string) float64 {
	v, err := probe.Metric(addr, name+" ")
	if err != nil {
		return -1
	}
	return v
}

// consul starts the dev Consul, with its log in the bench directory.
func (b *bench) consul() (string, error) {
	f, err := os.Create(filepath.Join(b.dir, "consul.log"))
	if err != nil {
		return "", err
	}
	// Every member reaches the agent from 127.0.0.1, where on real hosts
	// each has its own address and agent: lift the agent's limit of 200
	// connections per client address, or a large mesh meets 429s.
	agent, err := devconsul.StartWith(b.cfg.consul, f, devconsul.Options{HCL: "limits { http_max_conns_per_client = 4096 }"})
	if err != nil {
		return "", err
	}
	b.agent = agent
	return agent.Addr, nil
}

// member starts one stringsvc with its request log on (the default) and
// returns its address.
func (b *bench) member(name, consulAddr string, args ...string) (string, *exec.Cmd, error) {
	return b.memberOf(b.cfg.stringsvc, name, consulAddr, args...)
}

// memberOf is member with another binary.
func (b *bench) memberOf(bin, name, consulAddr string, args ...string) (string, *exec.Cmd, error) {
	addr, err := freeAddr()
	if err != nil {
		return "", nil, err
	}
	cmd, err := b.start(name, bin, append([]string{"-http.addr", addr, "-consul.addr", consulAddr}, args...)...)
	if err != nil {
		return "", nil, err
	}
	return addr, cmd, nil
}

func waitUpstreams(addr string, n int) error {
	return waitFor(30*time.Second, fmt.Sprintf("%d upstreams at %s", n, addr), func() bool {
		return metric(addr, "stringsvc_upstreams") == float64(n)
	})
}

type path struct {
	name, url string
}

func (b *bench) measure(p path, concurrency int) load.Result {
	body := []byte(`{"s":"hello, world"}`)
	want := map[bool]string{true: `{"v":12}` + "\n", false: `{"v":"HELLO, WORLD"}` + "\n"}[strings.HasSuffix(p.url, "/count")]
	return load.Run(context.Background(), load.Options{
		Targets:     []string{p.url},
		Body:        body,
		Concurrency: concurrency,
		Requests:    1 << 40,
		Duration:    b.cfg.duration,
		Check: func(code int, got []byte) error {
			if code != 200 || string(got) != want {
				return fmt.Errorf("status %d", code)
			}
			return nil
		},
	})
}

// alternate measures every path at every concurrency, round after round.
func (b *bench) alternate(paths []path) map[string]map[int]*load.Result {
	res := map[string]map[int]*load.Result{}
	for _, p := range paths {
		res[p.name] = map[int]*load.Result{}
		for _, c := range b.cfg.concurrency {
			res[p.name][c] = &load.Result{}
		}
	}
	for r := 0; r < b.cfg.rounds; r++ {
		for _, c := range b.cfg.concurrency {
			for _, p := range paths {
				// Warm connections first, outside the measurement.
				b.measureShort(p, c)
				res[p.name][c].Merge(b.measure(p, c))
			}
		}
		b.logf("round %d of %d done", r+1, b.cfg.rounds)
	}
	return res
}

func (b *bench) measureShort(p path, c int) {
	saved := b.cfg.duration
	b.cfg.duration = 200 * time.Millisecond
	b.measure(p, c)
	b.cfg.duration = saved
}

func ms(d time.Duration) string { return fmt.Sprintf("%.3f", float64(d)/1e6) }

func (b *bench) run(stdout io.Writer) error {
	if b.cfg.memoryOnly {
		return b.memory(stdout)
	}
	if b.cfg.tracingOnly {
		return b.tracingCost(stdout)
	}
	if b.cfg.scaleSizes != "" {
		var sizes []int
		for _, f := range strings.Split(b.cfg.scaleSizes, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 2 {
				return fmt.Errorf("bad -scale %q: want sizes of at least 2", b.cfg.scaleSizes)
			}
			sizes = append(sizes, n)
		}
		return b.scale(stdout, sizes)
	}
	consulAddr, err := b.consul()
	if err != nil {
		return err
	}
	if b.cfg.overloadOnly {
		return b.overload(stdout, consulAddr)
	}
	if b.cfg.zonesOnly {
		return b.zones(stdout, consulAddr)
	}
	baseline, err := freeAddr()
	if err != nil {
		return err
	}
	self, _ := os.Executable()
	if _, err := b.start("baseline", self, "-serve-baseline", baseline); err != nil {
		return err
	}
	a, aCmd, err := b.member("A", consulAddr)
	if err != nil {
		return err
	}
	members := []string{a}
	for _, n := range []string{"B", "C"} {
		addr, _, err := b.member(n, consulAddr)
		if err != nil {
			return err
		}
		members = append(members, addr)
	}
	if err := waitUpstreams(a, 3); err != nil {
		return err
	}
	paths := []path{
		{"baseline", "http://" + baseline + "/count"},
		{"local", "http://" + a + "/count"},
		{"proxied", "http://" + a + "/uppercase"},
	}
	if !b.cfg.quick || b.cfg.before != "" || b.cfg.chain {
		// The edge registers under another name and forwards to
		// stringsvc: every request it gets takes exactly one hop.
		edge, _, err := b.member("edge", consulAddr, "-service.name", "stringsvc-edge", "-proxy.service", "stringsvc")
		if err != nil {
			return err
		}
		if err := waitUpstreams(edge, 3); err != nil {
			return err
		}
		paths = append(paths, path{"hop", "http://" + edge + "/uppercase"})
	}
	if !b.cfg.quick {

		// The reference: Go kit's stringsvc3 proxy chain in front of the
		// same three members, in its own process like the edge.
		s3, err := freeAddr()
		if err != nil {
			return err
		}
		if _, err := b.start("stringsvc3", self, "-serve-stringsvc3", s3, "-upstreams", strings.Join(members, ",")); err != nil {
			return err
		}
		if err := waitFor(10*time.Second, "stringsvc3 reference", func() bool { _, err := probe.Do(http.MethodGet, "http://"+s3+"/", "", nil); return err == nil }); err != nil {
			return err
		}
		paths = append(paths, path{"hop-stringsvc3", "http://" + s3 + "/uppercase"})

		// The same two paths with -mesh.tls connect: a second service of
		// three members and an edge that call each other over mutual TLS.
		tlsPaths, err := b.connectMesh(consulAddr)
		if err != nil {
			return err
		}
		paths = append(paths, tlsPaths...)
	}
	if b.cfg.chain {
		chainPaths, err := b.chainMesh(consulAddr)
		if err != nil {
			return err
		}
		paths = append(paths, chainPaths...)
	}
	if b.cfg.before != "" {
		beforePaths, err := b.beforeMesh(consulAddr)
		if err != nil {
			return err
		}
		paths = append(paths, beforePaths...)
	}
	if err := waitFor(10*time.Second, "baseline", func() bool { _, err := probe.Do(http.MethodGet, "http://"+baseline+"/", "", nil); return err == nil }); err != nil {
		return err
	}

	b.logf("measuring %d paths x %v x %d rounds of %v", len(paths), b.cfg.concurrency, b.cfg.rounds, b.cfg.duration)
	res := b.alternate(paths)

	fmt.Fprintf(stdout, "## Throughput and latency\n\n")
	fmt.Fprintf(stdout, "%d rounds of %v per cell, paths alternating within each round; latencies in ms.\n\n", b.cfg.rounds, b.cfg.duration)
	fmt.Fprintf(stdout, "| path | conc | req/s | p50 | p90 | p99 | errors |\n|---|---|---|---|---|---|---|\n")
	for _, c := range b.cfg.concurrency {
		for _, p := range paths {
			r := res[p.name][c]
			fmt.Fprintf(stdout, "| %s | %d | %.0f | %s | %s | %s | %d |\n", p.name, c, r.Throughput(), ms(r.Quantile(.5)), ms(r.Quantile(.9)), ms(r.Quantile(.99)), r.Failed)
		}
	}
	if err := b.chartPaths(res, paths); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\n## Ratios\n\n| conc | local/baseline | proxied/local | hop p50 − local p50 (ms) | ÷ baseline p50 |\n|---|---|---|---|---|\n")
	for _, c := range b.cfg.concurrency {
		l, bl, pr := res["local"][c], res["baseline"][c], res["proxied"][c]
		hop, hopRatio := "-", "-"
		if h, ok := res["hop"]; ok {
			hop = ms(h[c].Quantile(.5) - l.Quantile(.5))
			hopRatio = fmt.Sprintf("%.2f", float64(h[c].Quantile(.5)-l.Quantile(.5))/float64(bl.Quantile(.5)))
		}
		fmt.Fprintf(stdout, "| %d | %.2f | %.2f | %s | %s |\n", c, l.Throughput()/bl.Throughput(), pr.Throughput()/l.Throughput(), hop, hopRatio)
	}
	if _, ok := res["local-before"]; ok {
		b.printBefore(stdout, res)
	}
	if _, ok := res["proxied-chain"]; ok {
		b.printChain(stdout, res)
	}

	if _, ok := res["hop-stringsvc3"]; ok {
		fmt.Fprintf(stdout, "\n## Beside Go kit's stringsvc3 proxy (reference path)\n\n")
		fmt.Fprintf(stdout, "The same three members behind our edge (hop) and behind stringsvc3's chain (FixedEndpointer, Gobreaker, an erroring limiter that does not throttle, RoundRobin, Retry(3, 250ms)), each in its own process.\n\n")
		fmt.Fprintf(stdout, "| conc | hop req/s | stringsvc3 req/s | hop / stringsvc3 | hop p50 | stringsvc3 p50 |\n|---|---|---|---|---|---|\n")
		for _, c := range b.cfg.concurrency {
			h, r := res["hop"][c], res["hop-stringsvc3"][c]
			fmt.Fprintf(stdout, "| %d | %.0f | %.0f | %.2f | %s | %s |\n", c, h.Throughput(), r.Throughput(), h.Throughput()/r.Throughput(), ms(h.Quantile(.5)), ms(r.Quantile(.5)))
		}
		for _, c := range b.cfg.concurrency {
			if e := res["hop-stringsvc3"][c].Errors; len(e) > 0 {
				fmt.Fprintf(stdout, "\nstringsvc3 errors at concurrency %d: %v\n", c, e)
			}
		}
	}

	if _, ok := res["proxied-mtls"]; ok {
		fmt.Fprintf(stdout, "\n## What mutual TLS costs (-mesh.tls connect beside off)\n\n")
		fmt.Fprintf(stdout, "Kept-alive connections: the handshake is paid once per connection; what remains per request is the encryption and the cached intention check.\n\n")
		fmt.Fprintf(stdout, "| conc | proxied req/s mtls/off | hop req/s mtls/off | hop p50 mtls − off (ms) | hop p99 mtls − off (ms) |\n|---|---|---|---|---|\n")
		for _, c := range b.cfg.concurrency {
			po, pt, ho, ht := res["proxied"][c], res["proxied-mtls"][c], res["hop"][c], res["hop-mtls"][c]
			fmt.Fprintf(stdout, "| %d | %.2f | %.2f | %s | %s |\n", c, pt.Throughput()/po.Throughput(), ht.Throughput()/ho.Throughput(),
				ms(ht.Quantile(.5)-ho.Quantile(.5)), ms(ht.Quantile(.99)-ho.Quantile(.99)))
		}
	}

	rss, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", aCmd.Process.Pid))
	for _, line := range strings.Split(string(rss), "\n") {
		if strings.HasPrefix(line, "VmRSS:") || strings.HasPrefix(line, "VmHWM:") {
			fmt.Fprintf(stdout, "\nMember A after the run: %s\n", strings.Join(strings.Fields(line), " "))
		}
	}

	if b.cfg.quick {
		return nil
	}
	if err := b.overload(stdout, consulAddr); err != nil {
		return err
	}
	if err := b.zones(stdout, consulAddr); err != nil {
		return err
	}
	if err := b.slowUpstream(stdout, consulAddr); err != nil {
		return err
	}
	if err := b.tracingCost(stdout); err != nil {
		return err
	}
	if err := b.idleRequests(stdout, consulAddr); err != nil {
		return err
	}
	if err := b.memory(stdout); err != nil {
		return err
	}
	if b.cfg.goBench {
		return b.inProcess(stdout)
	}
	return nil
}

// beforeMesh starts three members and an edge of the -before binary, as
// the main set is started, under service names of their own, and returns
// their local, proxied and hop paths.
func (b *bench) beforeMesh(consulAddr string) ([]path, error) {
	first, edge, err := b.meshOf(b.cfg.before, "-before", "stringsvc-before", consulAddr, nil)
	if err != nil {
		return nil, err
	}
	return []path{
		{"local-before", "http://" + first + "/count"},
		{"proxied-before", "http://" + first + "/uppercase"},
		{"hop-before", "http://" + edge + "/uppercase"},
	}, nil
}

// meshOf starts three members of service from bin (named A, B and C with
// suffix), each with the arguments perMember gives (it may be nil), and
// an edge that forwards to them, and returns the first member's and the
// edge's addresses once both balance over the three.
func (b *bench) meshOf(bin, suffix, service, consulAddr string, perMember func() ([]string, error)) (first, edge string, err error) {
	start := func(name string, args ...string) (string, error) {
		if perMember != nil {
			extra, err := perMember()
			if err != nil {
				return "", err
			}
			args = append(extra, args...)
		}
		addr, _, err := b.memberOf(bin, name+suffix, consulAddr, args...)
		return addr, err
	}
	for _, n := range []string{"A", "B", "C"} {
		addr, err := start(n, "-service.name", service)
		if err != nil {
			return "", "", err
		}
		if first == "" {
			first = addr
		}
	}
	if edge, err = start("edge", "-service.name", service+"-edge", "-proxy.service", service); err != nil {
		return "", "", err
	}
	for _, addr := range []string{first, edge} {
		if err := waitUpstreams(addr, 3); err != nil {
			return "", "", err
		}
	}
	return first, edge, nil
}

// chainMesh starts three members and an edge of service stringsvc-chain,
// whose config entries make every forward go through a router (one
// header route that the bench's requests do not match), a splitter and a
// resolver subset holding all three, and returns its proxied and hop
// paths.
func (b *bench) chainMesh(consulAddr string) ([]path, error) {
	const svc = "stringsvc-chain"
	entries := []string{
		`{"Kind":"service-defaults","Name":"` + svc + `","Protocol":"http"}`,
		`{"Kind":"service-resolver","Name":"` + svc + `","DefaultSubset":"all","Subsets":{"all":{"Filter":"Service.Service == \"` + svc + `\""},"none":{"Filter":"\"none\" in Service.Tags"}}}`,
		`{"Kind":"service-splitter","Name":"` + svc + `","Splits":[{"Weight":100,"ServiceSubset":"all"}]}`,
		`{"Kind":"service-router","Name":"` + svc + `","Routes":[{"Match":{"HTTP":{"Header":[{"Name":"x-bench-never","Exact":"1"}]}},"Destination":{"ServiceSubset":"none"}}]}`,
	}
	for _, e := range entries {
		resp, err := probe.Do(http.MethodPut, "http://"+consulAddr+"/v1/config", e, nil)
		if err != nil || resp.Status != 200 {
			return nil, fmt.Errorf("config write %.60s: %v %+v", e, err, resp)
		}
	}
	first, edge, err := b.meshOf(b.cfg.stringsvc, "-chain", svc, consulAddr, nil)
	if err != nil {
		return nil, err
	}
	// The plan is applied once the router's route is in /debug/mesh.
	for _, addr := range []string{first, edge} {
		if err := waitFor(10*time.Second, "the chain applied at "+addr, func() bool {
			resp, err := probe.Do(http.MethodGet, "http://"+addr+"/debug/mesh", "", nil)
			return err == nil && strings.Contains(resp.Body, "x-bench-never")
		}); err != nil {
			return nil, err
		}
	}
	return []path{{"proxied-chain", "http://" + first + "/uppercase"}, {"hop-chain", "http://" + edge + "/uppercase"}}, nil
}

// printChain compares the forward with a discovery chain to the forward
// without one, measured alternating in the same rounds.
func (b *bench) printChain(stdout io.Writer, res map[string]map[int]*load.Result) {
	fmt.Fprintf(stdout, "\n## What the discovery chain costs (config entries beside none)\n\n")
	fmt.Fprintf(stdout, "Same binary; stringsvc-chain's forwards match a router (one header route, not taken), a splitter and a resolver subset of all three members. With -before, the last columns are the forward without config entries beside the build before the chain existed.\n\n")
	fmt.Fprintf(stdout, "| conc | proxied req/s chain/none | hop req/s chain/none | hop p50 chain − none (ms) | proxied none now/before | hop none now/before |\n|---|---|---|---|---|---|\n")
	for _, c := range b.cfg.concurrency {
		p, h, pc, hc := res["proxied"][c], res["hop"][c], res["proxied-chain"][c], res["hop-chain"][c]
		pb, hb := "-", "-"
		if before, ok := res["proxied-before"]; ok {
			pb = fmt.Sprintf("%.3f", p.Throughput()/before[c].Throughput())
			hb = fmt.Sprintf("%.3f", h.Throughput()/res["hop-before"][c].Throughput())
		}
		fmt.Fprintf(stdout, "| %d | %.3f | %.3f | %s | %s | %s |\n", c, pc.Throughput()/p.Throughput(), hc.Throughput()/h.Throughput(), ms(hc.Quantile(.5)-h.Quantile(.5)), pb, hb)
	}
}

// printBefore compares this binary with the -before one, measured
// alternating in the same rounds.
func (b *bench) printBefore(stdout io.Writer, res map[string]map[int]*load.Result) {
	fmt.Fprintf(stdout, "\n## This binary beside the -before one\n\n")
	fmt.Fprintf(stdout, "Two meshes of three members and an edge, one per binary, on the same Consul; every path of both measured in the same rounds. Hop added p50 is hop p50 − local p50, as a multiple of the baseline's p50.\n\n")
	fmt.Fprintf(stdout, "| conc | local now/before | proxied now/before | hop now/before | proxied/local now | before | hop added p50 ÷ baseline p50 now | before |\n|---|---|---|---|---|---|---|---|\n")
	for _, c := range b.cfg.concurrency {
		bl := res["baseline"][c]
		l, p, h := res["local"][c], res["proxied"][c], res["hop"][c]
		lb, pb, hb := res["local-before"][c], res["proxied-before"][c], res["hop-before"][c]
		added := func(h, l *load.Result) float64 {
			return float64(h.Quantile(.5)-l.Quantile(.5)) / float64(bl.Quantile(.5))
		}
		fmt.Fprintf(stdout, "| %d | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f |\n", c,
			l.Throughput()/lb.Throughput(), p.Throughput()/pb.Throughput(), h.Throughput()/hb.Throughput(),
			p.Throughput()/l.Throughput(), pb.Throughput()/lb.Throughput(), added(h, l), added(hb, lb))
	}
}

// connectMesh starts three members of stringsvc-tls and an edge to them,
// all with -mesh.tls connect, and returns the proxied and hop paths.
func (b *bench) connectMesh(consulAddr string) ([]path, error) {
	meshAddr := func() ([]string, error) {
		mesh, err := freeAddr()
		// -http.public keeps /metrics on the client port, where the bench
		// reads it, instead of a default admin port (:9100) that the
		// three members would share.
		return []string{"-mesh.tls", "connect", "-mesh.addr", mesh, "-http.public"}, err
	}
	first, edge, err := b.meshOf(b.cfg.stringsvc, "-tls", "stringsvc-tls", consulAddr, meshAddr)
	if err != nil {
		return nil, err
	}
	return []path{{"proxied-mtls", "http://" + first + "/uppercase"}, {"hop-mtls", "http://" + edge + "/uppercase"}}, nil
}

// inProcess runs the handler benchmarks of cmd/stringsvc, and client's
// of what the discovery chain's router adds to a forward, for allocations
// and bytes per request.
func (b *bench) inProcess(stdout io.Writer) error {
	b.logf("running the in-process benchmarks")
	out, err := exec.Command("go", "test", "-run", "^$", "-bench", ".", "-benchmem", "-benchtime", "2s", "./cmd/stringsvc/", "./client/").CombinedOutput()
	if err != nil {
		return fmt.Errorf("go test -bench: %v\n%s", err, out)
	}
	fmt.Fprintf(stdout, "\n## In-process handlers (go test -bench -benchmem)\n\n| benchmark | ns/op | B/op | allocs/op |\n|---|---|---|---|\n")
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) >= 8 && strings.HasPrefix(f[0], "Benchmark") {
			fmt.Fprintf(stdout, "| %s | %s | %s | %s |\n", f[0], f[2], f[4], f[6])
		}
	}
	return nil
}

// slowUpstream adds a member that answers slowly and compares, through two
// edges, the p99 of the balancers.
func (b *bench) slowUpstream(stdout io.Writer, consulAddr string) error {
	slow, _, err := b.member("slow", consulAddr, "-debug.delay", b.cfg.slowDelay.String())
	if err != nil {
		return err
	}
	edges := map[string]string{}
	for _, bal := range []string{"p2c", "roundrobin"} {
		addr, _, err := b.member("edge-"+bal, consulAddr, "-service.name", "stringsvc-edge", "-proxy.service", "stringsvc", "-proxy.balancer", bal)
		if err != nil {
			return err
		}
		if err := waitUpstreams(addr, 4); err != nil {
			return err
		}
		edges[bal] = addr
	}
	slowServed := func() float64 { return metric(slow, `stringsvc_requests_total{error="false",method="uppercase"}`) }
	before := slowServed()
	saved := b.cfg.concurrency
	b.cfg.concurrency = []int{8}
	res := b.alternate([]path{
		{"p2c", "http://" + edges["p2c"] + "/uppercase"},
		{"roundrobin", "http://" + edges["roundrobin"] + "/uppercase"},
	})
	b.cfg.concurrency = saved
	fmt.Fprintf(stdout, "\n## One slow upstream (+%v) of four, concurrency 8\n\n| balancer | req/s | p50 | p99 | errors |\n|---|---|---|---|---|\n", b.cfg.slowDelay)
	for _, bal := range []string{"p2c", "roundrobin"} {
		r := res[bal][8]
		fmt.Fprintf(stdout, "| %s | %.0f | %s | %s | %d |\n", bal, r.Throughput(), ms(r.Quantile(.5)), ms(r.Quantile(.99)), r.Failed)
	}
	if err := b.chartSlow(res, []string{"p2c", "roundrobin"}, 8); err != nil {
		return err
	}
	p2c, rr := res["p2c"][8].Quantile(.99), res["roundrobin"][8].Quantile(.99)
	fmt.Fprintf(stdout, "\np99 round robin / p99 p2c = %.1f; the slow member served %.0f requests in all.\n", float64(rr)/float64(p2c), slowServed()-before)
	return nil
}

// tracingCost measures the local path of four standalone members side by
// side: tracing disabled (OTEL_SDK_DISABLED, the reference), export off
// (IDs only, the default), and 10% and 100% sampling exported to a local
// OTLP receiver.
func (b *bench) tracingCost(stdout io.Writer) error {
	sink, err := freeAddr()
	if err != nil {
		return err
	}
	query, err := freeAddr()
	if err != nil {
		return err
	}
	if _, err := b.start("tracesink", b.cfg.tracesink, "-otlp.addr", sink, "-query.addr", query); err != nil {
		return err
	}
	export := "OTEL_EXPORTER_OTLP_ENDPOINT=http://" + sink
	variants := []struct {
		name string
		env  []string
	}{
		{"tracing disabled", []string{"OTEL_SDK_DISABLED=true"}},
		{"export off", []string{}},
		{"10% exported", []string{export, "OTEL_TRACES_SAMPLER=traceidratio", "OTEL_TRACES_SAMPLER_ARG=0.1"}},
		{"100% exported", []string{export, "OTEL_TRACES_SAMPLER=always_on"}},
	}
	var paths []path
	for i, v := range variants {
		addr, err := freeAddr()
		if err != nil {
			return err
		}
		if _, err := b.startEnv(fmt.Sprintf("traced-%d", i), b.cfg.stringsvc, v.env, "-http.addr", addr, "-consul.addr", "none"); err != nil {
			return err
		}
		if err := waitFor(10*time.Second, v.name+" member", func() bool { _, err := probe.Do(http.MethodGet, "http://"+addr+"/health", "", nil); return err == nil }); err != nil {
			return err
		}
		paths = append(paths, path{v.name, "http://" + addr + "/count"})
	}
	saved := b.cfg.concurrency
	b.cfg.concurrency = []int{1, 32}
	res := b.alternate(paths)
	b.cfg.concurrency = saved
	fmt.Fprintf(stdout, "\n## What tracing costs (local path, /count)\n\nFour standalone members, measured side by side; the ratio is to the member with tracing disabled.\n\n")
	fmt.Fprintf(stdout, "| conc | tracing | req/s | ratio | p50 | p99 |\n|---|---|---|---|---|---|\n")
	for _, c := range []int{1, 32} {
		ref := res[variants[0].name][c].Throughput()
		for _, v := range variants {
			r := res[v.name][c]
			fmt.Fprintf(stdout, "| %d | %s | %.0f | %.3f | %s | %s |\n", c, v.name, r.Throughput(), r.Throughput()/ref, ms(r.Quantile(.5)), ms(r.Quantile(.99)))
		}
	}
	if resp, err := probe.Do(http.MethodGet, "http://"+query+"/api/services", "", nil); err == nil {
		fmt.Fprintf(stdout, "\nThe receiver got spans from: %s\n", strings.TrimSpace(resp.Body))
	}
	return nil
}

// idleRequests counts, through a counting proxy in front of Consul, the
// requests one idle member makes.
func (b *bench) idleRequests(stdout io.Writer, consulAddr string) error {
	proxyAddr, count, stop, err := countingProxy(consulAddr)
	if err != nil {
		return err
	}
	defer stop()
	addr, _, err := b.member("idle", proxyAddr, "-service.name", "stringsvc-idle")
	if err != nil {
		return err
	}
	if err := waitFor(30*time.Second, "idle member registered", func() bool { return metric(addr, "stringsvc_registered") == 1 }); err != nil {
		return err
	}
	time.Sleep(2 * time.Second) // let start-up queries settle
	before := count.Load()
	b.logf("watching an idle member for %v", b.cfg.idle)
	time.Sleep(b.cfg.idle)
	n := count.Load() - before
	fmt.Fprintf(stdout, "\n## Idle member\n\nRequests to Consul from one idle member: %d in %v (%.1f per minute).\n", n, b.cfg.idle, float64(n)/b.cfg.idle.Minutes())
	if n < 0 {
		return errors.New("counter went backwards")
	}
	return nil
}
