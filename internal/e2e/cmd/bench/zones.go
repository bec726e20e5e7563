package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"sync/atomic"
	"time"

	"github.com/kitmesh/stringsvc/internal/load"
	"github.com/kitmesh/stringsvc/internal/probe"
)

// servedUppercase is a member's count of /uppercase requests it served
// itself.
const servedUppercase = `stringsvc_requests_total{error="false",method="uppercase"}`

// zones measures zone-aware balancing: six members of one service, three
// in zone a and three in b, with traffic entering a's first member. It
// reports the share of the work done in zone a while a is healthy, then
// kills -9 two of a's members under the same load and reports the failed
// requests and how soon zone b took work.
func (b *bench) zones(stdout io.Writer, consulAddr string) error {
	const svc = "stringsvc-zoned"
	type member struct {
		zone, addr string
		cmd        *exec.Cmd
	}
	var ms []member
	for i, zone := range []string{"a", "a", "a", "b", "b", "b"} {
		addr, cmd, err := b.member(fmt.Sprintf("zone-%s%d", zone, i), consulAddr, "-service.name", svc, "-service.zone", zone, "-log.requests=false")
		if err != nil {
			return err
		}
		ms = append(ms, member{zone, addr, cmd})
	}
	entry := ms[0].addr
	// An edge in zone a with a minimum above zone a's size always spills
	// over: it calls both zones alike, and has no in-process instance, so
	// the latency ratio it sees is that of two equal zones, the noise a
	// spill ratio must stay clear of.
	edge, _, err := b.member("zone-edge", consulAddr, "-service.name", svc+"-edge", "-proxy.service", svc, "-service.zone", "a", "-proxy.zone-min-healthy", "4", "-log.requests=false")
	if err != nil {
		return err
	}
	for _, addr := range []string{entry, edge} {
		if err := waitUpstreams(addr, 6); err != nil {
			return err
		}
	}
	served := func() (a, bz float64) {
		for _, m := range ms {
			v := metric(m.addr, servedUppercase)
			if v < 0 {
				continue // killed
			}
			if m.zone == "a" {
				a += v
			} else {
				bz += v
			}
		}
		return a, bz
	}
	// The cost ratio the entry sees while healthy, sampled during the
	// load: what a spill ratio must stay clear of.
	var maxRatio atomic.Uint64
	sample := func(ctx context.Context, at string) {
		for ctx.Err() == nil {
			resp, err := probe.Do(http.MethodGet, "http://"+at+"/debug/mesh", "", nil)
			if err == nil {
				var v struct {
					Zones struct {
						LatencyRatio float64 `json:"latency_ratio"`
					} `json:"zones"`
				}
				if json.Unmarshal([]byte(resp.Body), &v) == nil && uint64(v.Zones.LatencyRatio*1000) > maxRatio.Load() {
					maxRatio.Store(uint64(v.Zones.LatencyRatio * 1000))
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	const conc = 16
	optsAt := func(at string, c int, d time.Duration, p *load.Progress) load.Options {
		return load.Options{
			Targets: []string{"http://" + at + "/uppercase"}, Body: []byte(`{"s":"hello, world"}`),
			Concurrency: c, Requests: 1 << 40, Duration: d, Progress: p,
		}
	}
	opts := func(c int, d time.Duration, p *load.Progress) load.Options { return optsAt(entry, c, d, p) }
	var equal []float64 // the edge's largest ratio, per concurrency
	for _, c := range []int{conc, 4 * conc} {
		maxRatio.Store(0)
		ctx, cancel := context.WithCancel(context.Background())
		go sample(ctx, edge)
		load.Run(context.Background(), optsAt(edge, c, 2*b.cfg.duration, nil))
		cancel()
		equal = append(equal, float64(maxRatio.Load())/1000)
	}
	type phase struct {
		conc  int
		res   load.Result
		share float64
		ratio float64
	}
	var healthy []phase
	for _, c := range []int{conc, 4 * conc} {
		maxRatio.Store(0)
		a0, b0 := served()
		ctx, cancel := context.WithCancel(context.Background())
		go sample(ctx, entry)
		res := load.Run(context.Background(), opts(c, 4*b.cfg.duration, nil))
		cancel()
		a1, b1 := served()
		healthy = append(healthy, phase{c, res, (a1 - a0) / (a1 - a0 + b1 - b0), float64(maxRatio.Load()) / 1000})
	}

	// Kill -9 two of zone a's members under load.
	progress := &load.Progress{}
	done := make(chan load.Result, 1)
	go func() { done <- load.Run(context.Background(), opts(conc, 4*b.cfg.duration, progress)) }()
	if err := waitFor(10*time.Second, "load", func() bool { return progress.Succeeded.Load() > 1000 }); err != nil {
		return err
	}
	_, bBefore := served()
	killed := time.Now()
	for _, m := range ms[1:3] {
		m.cmd.Process.Kill()
	}
	var spill time.Duration = -1
	for time.Since(killed) < 3*time.Second {
		if _, bNow := served(); bNow > bBefore {
			spill = time.Since(killed)
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	fault := <-done

	fmt.Fprintf(stdout, "\n## Zones\n\n")
	fmt.Fprintf(stdout, "Six members of %s, three with `-service.zone a` and three with `b`, defaults (`-proxy.zone-min-healthy 2`, `-proxy.zone-spill-ratio 4`); closed-loop clients send /uppercase to a's first member. The latency ratio is zone a's mean latency average over zone b's, as the entry's /debug/mesh showed it every 50 ms.\n\n", svc)
	fmt.Fprintf(stdout, "| phase | clients | sent | succeeded | failed | work done in zone a | largest latency ratio seen | zone b took work after |\n|---|---|---|---|---|---|---|---|\n")
	for _, h := range healthy {
		fmt.Fprintf(stdout, "| all healthy, %v | %d | %d | %d | %d | %.2f%% | %.2f | - |\n", 4*b.cfg.duration, h.conc, h.res.Sent, h.res.Succeeded, h.res.Failed, 100*h.share, h.ratio)
	}
	spillText := "not within 3s"
	if spill >= 0 {
		spillText = spill.Round(time.Millisecond).String()
	}
	fmt.Fprintf(stdout, "| two equal zones, through an edge in zone a that always spills over (`-proxy.zone-min-healthy 4`), %v each | %d, %d | | | | | %.2f, %.2f | |\n", 2*b.cfg.duration, conc, 4*conc, equal[0], equal[1])
	fmt.Fprintf(stdout, "| two of zone a killed -9 under load, %v | %d | %d | %d | %d | - | - | %s |\n", 4*b.cfg.duration, conc, fault.Sent, fault.Succeeded, fault.Failed, spillText)
	return nil
}
