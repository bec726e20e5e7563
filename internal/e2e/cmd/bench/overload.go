package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/kitmesh/stringsvc/internal/load"
)

// overloadVariant is one mesh of the overload section: a build and the
// limiter it runs.
type overloadVariant struct {
	name, bin string
	args      []string
}

// overloadPaths are the section's paths, in order.
var overloadPaths = []string{"count", "uppercase", "hop"}

// shedKey is what an overload measurement counts a 503 as.
const shedKey = "shed (503)"

// measureOverload is measure with 503 counted apart, as shed.
func (b *bench) measureOverload(url string, concurrency int, d time.Duration) load.Result {
	want := map[bool]string{true: `{"v":12}` + "\n", false: `{"v":"HELLO, WORLD"}` + "\n"}[strings.HasSuffix(url, "/count")]
	return load.Run(context.Background(), load.Options{
		Targets:     []string{url},
		Body:        []byte(`{"s":"hello, world"}`),
		Concurrency: concurrency,
		Requests:    1 << 40,
		Duration:    d,
		Check: func(code int, got []byte) error {
			switch {
			case code == 503:
				return fmt.Errorf(shedKey)
			case code != 200 || string(got) != want:
				return fmt.Errorf("status %d", code)
			}
			return nil
		},
	})
}

// overload measures goodput, the latency of accepted requests and the
// shed count far beyond capacity: per variant, a mesh of three members
// and an edge with request logs off (the setup), on /count,
// /uppercase and the hop, every cell alternating within each round.
func (b *bench) overload(stdout io.Writer, consulAddr string) error {
	var variants []overloadVariant
	for _, l := range strings.Split(b.cfg.limiters, ",") {
		if l = strings.TrimSpace(l); l != "" {
			variants = append(variants, overloadVariant{l, b.cfg.stringsvc, []string{"-http.limiter", l}})
		}
	}
	if b.cfg.before != "" {
		variants = append(variants, overloadVariant{"before", b.cfg.before, nil})
	}
	urls := map[string]map[string]string{}
	for _, v := range variants {
		args := append([]string{"-log.requests=false"}, v.args...)
		first, edge, err := b.meshOf(v.bin, "-ovl-"+v.name, "ovl-"+v.name, consulAddr, func() ([]string, error) { return args, nil })
		if err != nil {
			return err
		}
		urls[v.name] = map[string]string{"count": "http://" + first + "/count", "uppercase": "http://" + first + "/uppercase", "hop": "http://" + edge + "/uppercase"}
	}
	res := map[string]*load.Result{}
	key := func(v, p string, c int) string { return fmt.Sprintf("%s|%s|%d", v, p, c) }
	for r := 0; r < b.cfg.rounds; r++ {
		for _, c := range b.cfg.overloadConc {
			for _, p := range overloadPaths {
				for _, v := range variants {
					b.measureOverload(urls[v.name][p], c, 200*time.Millisecond) // warm
					k := key(v.name, p, c)
					if res[k] == nil {
						res[k] = &load.Result{}
					}
					res[k].Merge(b.measureOverload(urls[v.name][p], c, b.cfg.duration))
				}
			}
		}
		b.logf("overload round %d of %d done", r+1, b.cfg.rounds)
	}

	capacity := b.cfg.overloadConc[0]
	fmt.Fprintf(stdout, "\n## Overload\n\n")
	fmt.Fprintf(stdout, "Per variant, three members and an edge with `-log.requests=false`; closed-loop clients that resend at once after a 503. %d rounds of %v per cell, alternating. Goodput is answers with the right body per second; %% is of the same variant and path at c=%d. p50 and p99 are of accepted requests, in ms. Little is c ÷ goodput, the wait that queueing alone explains. Shed is 503s per second.\n\n", b.cfg.rounds, b.cfg.duration, capacity)
	fmt.Fprintf(stdout, "| path | variant | c | goodput/s | %% of c=%d | p50 | p99 | Little | p99 ÷ Little | shed/s | other failures |\n|---|---|---|---|---|---|---|---|---|---|---|\n", capacity)
	series := map[string][]float64{}
	var order []string
	for _, p := range overloadPaths {
		for i, v := range variants {
			name := p + " " + v.name
			if i == 0 || v.name == "before" {
				// The chart shows the first variant beside the -before
				// binary; the table has them all.
				order = append(order, name)
			}
			base := res[key(v.name, p, capacity)].Throughput()
			for _, c := range b.cfg.overloadConc {
				r := res[key(v.name, p, c)]
				g := r.Throughput()
				little := time.Duration(float64(c) / g * float64(time.Second))
				shed := r.Errors[shedKey]
				other := r.Failed - shed
				fmt.Fprintf(stdout, "| %s | %s | %d | %.0f | %.0f%% | %s | %s | %s | %.2f | %.0f | %d |\n", p, v.name, c, g, 100*g/base,
					ms(r.Quantile(.5)), ms(r.Quantile(.99)), ms(little), float64(r.Quantile(.99))/float64(little), float64(shed)/r.Elapsed.Seconds(), other)
				series[name] = append(series[name], 100*g/base)
			}
		}
	}
	var x []float64
	for _, c := range b.cfg.overloadConc {
		x = append(x, float64(c))
	}
	return lineChart(b.cfg.charts, "bench-overload.svg", "Goodput under overload", "concurrent clients", "% of goodput at c="+fmt.Sprint(capacity), x, series, order)
}
