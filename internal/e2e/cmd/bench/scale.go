package main

import (
	"context"
	"fmt"
	"io"
	stdlog "log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/kitmesh/stringsvc/internal/load"
	"github.com/kitmesh/stringsvc/internal/probe"
)

// The scale benchmark (bin/bench -scale): for each mesh size N, N members
// on loopback with one dev Consul, and what grows with N: convergence
// after a join and after a kill -9, requests to Consul idle and during
// churn, the agent's CPU, each member's memory, goroutines and open
// sockets, and the throughput of one entry member over all N.

// scaleRow is one N's figures.
type scaleRow struct {
	n                        int
	joinP50, joinMax         time.Duration // from the join's registration in the catalog
	killP50, killMax         time.Duration // from the kill -9
	idlePerMin, churnPerMin  float64       // requests to Consul
	idleAgentCPU, churnAgent float64       // agent CPU, cores
	rssIdle, rssLoad         float64       // MiB per member, mean
	gorIdle, gorLoad         float64       // goroutines per member, mean
	sockIdle, sockLoad       float64       // open sockets per member, mean
	throughput               float64
}

// scaleMember is one member process of the scale run.
type scaleMember struct {
	addr string
	cmd  *exec.Cmd
}

// countingProxy fronts Consul and counts the requests members make (the
// idle-member phase of the main run, and the scale run).
func countingProxy(consulAddr string) (string, *atomic.Int64, func(), error) {
	var count atomic.Int64
	target, _ := url.Parse("http://" + consulAddr)
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.FlushInterval = -1
	proxy.ErrorLog = stdlog.New(io.Discard, "", 0) // members cancel their blocking queries on restart
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, nil, err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		count.Add(1)
		proxy.ServeHTTP(w, r)
	}), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	return ln.Addr().String(), &count, func() { srv.Close() }, nil
}

func (b *bench) scale(stdout io.Writer, sizes []int) error {
	consulAddr, err := b.consul()
	if err != nil {
		return err
	}
	proxyAddr, count, stop, err := countingProxy(consulAddr)
	if err != nil {
		return err
	}
	defer stop()
	var rows []scaleRow
	for _, n := range sizes {
		b.logf("scale: N=%d", n)
		row, err := b.scaleOne(n, proxyAddr, count)
		if err != nil {
			return fmt.Errorf("N=%d: %w", n, err)
		}
		rows = append(rows, row)
	}
	fmt.Fprintf(stdout, "## Scale: N members on loopback, one dev Consul\n\n")
	fmt.Fprintf(stdout, "Convergence is from the event (the join's registration in the catalog; the kill -9) until every other member's pool has it, or has dropped it: p50 and max over members. A join includes Consul's first check of the new member (2s interval). Consul load is counted by a proxy in front of the agent; churn restarts one member every 2s.\n\n")
	fmt.Fprintf(stdout, "| N | join p50 / max (s) | kill -9 p50 / max (s) | Consul req/min idle | churn | agent CPU idle / churn (cores) | RSS MiB idle / load | goroutines idle / load | sockets idle / load | entry req/s (c=32) |\n|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		fmt.Fprintf(stdout, "| %d | %.2f / %.2f | %.2f / %.2f | %.0f | %.0f | %.3f / %.3f | %.1f / %.1f | %.0f / %.0f | %.0f / %.0f | %.0f |\n",
			r.n, r.joinP50.Seconds(), r.joinMax.Seconds(), r.killP50.Seconds(), r.killMax.Seconds(),
			r.idlePerMin, r.churnPerMin, r.idleAgentCPU, r.churnAgent, r.rssIdle, r.rssLoad, r.gorIdle, r.gorLoad, r.sockIdle, r.sockLoad, r.throughput)
	}
	return b.chartScale(rows)
}

func (b *bench) scaleMemberStart(name, consul, service, addr string) (*scaleMember, error) {
	if addr == "" {
		var err error
		if addr, err = freeAddr(); err != nil {
			return nil, err
		}
	}
	cmd, err := b.start(name, b.cfg.stringsvc, "-http.addr", addr, "-consul.addr", consul, "-service.name", service, "-shutdown.drain", "200ms")
	if err != nil {
		return nil, err
	}
	return &scaleMember{addr: addr, cmd: cmd}, nil
}

func (b *bench) scaleOne(n int, consul string, count *atomic.Int64) (scaleRow, error) {
	row := scaleRow{n: n}
	service := fmt.Sprintf("stringsvc-scale%d", n)
	var members []*scaleMember
	defer func() {
		for _, m := range members {
			m.cmd.Process.Kill()
		}
	}()
	for i := 0; i < n; i++ {
		m, err := b.scaleMemberStart(fmt.Sprintf("scale%d-%d", n, i), consul, service, "")
		if err != nil {
			return row, err
		}
		members = append(members, m)
	}
	if err := convergeAll(members, n, 3*time.Minute); err != nil {
		return row, err
	}

	// Idle: requests to Consul and the agent's CPU, then each member.
	window := 20 * time.Second
	row.idlePerMin, row.idleAgentCPU = b.consulLoad(count, window, nil)
	row.rssIdle, row.gorIdle, row.sockIdle = memberStats(members)

	// A join, then a kill -9 of the same member.
	joiner, err := b.scaleMemberStart(fmt.Sprintf("scale%d-join", n), consul, service, "")
	if err != nil {
		return row, err
	}
	registered := waitCatalog(consul, service, joiner.addr, 30*time.Second)
	seen := firstSeen(members, n+1, 60*time.Second)
	row.joinP50, row.joinMax = spread(seen, registered)
	killed := time.Now()
	joiner.cmd.Process.Signal(syscall.SIGKILL)
	joiner.cmd.Wait()
	gone := firstSeen(members, n, 60*time.Second)
	row.killP50, row.killMax = spread(gone, killed)

	// Churn: one member restarted every 2s.
	row.churnPerMin, row.churnAgent = b.consulLoad(count, window, func(ctx context.Context) {
		for i := 1; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-time.After(2 * time.Second):
			}
			m := members[i%len(members)]
			m.cmd.Process.Signal(syscall.SIGTERM)
			m.cmd.Wait()
			if r, err := b.scaleMemberStart(fmt.Sprintf("scale%d-%d-r%d", n, i%len(members), i), consul, service, m.addr); err == nil {
				*m = *r
			}
		}
	})
	if err := convergeAll(members, n, time.Minute); err != nil {
		return row, err
	}

	// Throughput through one entry member over all N, and the members
	// under that load.
	var res load.Result
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		res = load.Run(context.Background(), load.Options{
			Targets: []string{"http://" + members[0].addr + "/uppercase"}, Body: []byte(`{"s":"hello, world"}`),
			Concurrency: 32, Requests: 1 << 40, Duration: 4 * time.Second,
		})
	}()
	time.Sleep(2 * time.Second) // sample mid-load
	row.rssLoad, row.gorLoad, row.sockLoad = memberStats(members)
	wg.Wait()
	row.throughput = res.Throughput()
	return row, nil
}

// convergeAll waits until every member balances over want instances.
func convergeAll(members []*scaleMember, want int, timeout time.Duration) error {
	return waitFor(timeout, fmt.Sprintf("%d members to see %d upstreams", len(members), want), func() bool {
		for _, m := range members {
			if metric(m.addr, "stringsvc_upstreams") != float64(want) {
				return false
			}
		}
		return true
	})
}

// firstSeen polls the members until each balances over want instances,
// and returns when each first did (zero for one that never did).
func firstSeen(members []*scaleMember, want int, timeout time.Duration) []time.Time {
	seen := make([]time.Time, len(members))
	deadline := time.Now().Add(timeout)
	for left := len(members); left > 0 && time.Now().Before(deadline); {
		for i, m := range members {
			if seen[i].IsZero() && metric(m.addr, "stringsvc_upstreams") == float64(want) {
				seen[i] = time.Now()
				left--
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	return seen
}

// spread returns the p50 and max of the times since from; a member that
// never converged counts as the whole timeout.
func spread(seen []time.Time, from time.Time) (p50, max time.Duration) {
	var d []time.Duration
	for _, s := range seen {
		if s.IsZero() {
			d = append(d, time.Hour)
			continue
		}
		d = append(d, s.Sub(from))
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return d[len(d)/2], d[len(d)-1]
}

// waitCatalog returns when the instance at addr appears in the catalog.
func waitCatalog(consul, service, addr string, timeout time.Duration) time.Time {
	id := service + "@" + addr
	waitFor(timeout, "registration of "+id, func() bool {
		resp, err := probe.Do(http.MethodGet, "http://"+consul+"/v1/catalog/service/"+service, "", nil)
		return err == nil && strings.Contains(resp.Body, `"ServiceID":"`+id+`"`)
	})
	return time.Now()
}

// consulLoad counts the requests to Consul during window, with during
// running meanwhile (nil: idle), and the agent's CPU over it.
func (b *bench) consulLoad(count *atomic.Int64, window time.Duration, during func(context.Context)) (perMin, cores float64) {
	ctx, cancel := context.WithTimeout(context.Background(), window)
	defer cancel()
	c0, t0, n0 := cpuTime(b.agent.Pid()), time.Now(), count.Load()
	if during != nil {
		during(ctx)
	}
	<-ctx.Done()
	elapsed := time.Since(t0)
	return float64(count.Load()-n0) / elapsed.Minutes(), (cpuTime(b.agent.Pid()) - c0).Seconds() / elapsed.Seconds()
}

// cpuTime is a process's user and system time.
func cpuTime(pid int) time.Duration {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(stat)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}

// memberStats returns the mean resident MiB, goroutines and open sockets
// of the members.
func memberStats(members []*scaleMember) (rss, goroutines, sockets float64) {
	for _, m := range members {
		pid := m.cmd.Process.Pid
		if status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
			for _, line := range strings.Split(string(status), "\n") {
				if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
					kb, _ := strconv.ParseFloat(f[1], 64)
					rss += kb / 1024
				}
			}
		}
		goroutines += metric(m.addr, "go_goroutines")
		fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		for _, fd := range fds {
			if link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())); err == nil && strings.HasPrefix(link, "socket:") {
				sockets++
			}
		}
	}
	k := float64(len(members))
	return rss / k, goroutines / k, sockets / k
}
