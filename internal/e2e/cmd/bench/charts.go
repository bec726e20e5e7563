package main

import (
	"fmt"
	"path/filepath"
	"sort"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"

	"github.com/kitmesh/stringsvc/internal/load"
)

// The charts of `make bench`: SVG files in -charts (next to BENCHMARKS.md,
// which embeds them), drawn with gonum/plot. The tables stay in the report.

// lineChart draws one line per series over x, and saves it as file.
func lineChart(dir, file, title, xLabel, yLabel string, x []float64, series map[string][]float64, order []string) error {
	if dir == "" {
		return nil
	}
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = xLabel
	p.Y.Label.Text = yLabel
	p.Legend.Top = true
	var args []interface{}
	for _, name := range order {
		ys, ok := series[name]
		if !ok {
			continue
		}
		pts := make(plotter.XYs, len(x))
		for i := range x {
			pts[i].X, pts[i].Y = x[i], ys[i]
		}
		args = append(args, name, pts)
	}
	if err := plotutil.AddLinePoints(p, args...); err != nil {
		return err
	}
	return p.Save(16*vg.Centimeter, 10*vg.Centimeter, filepath.Join(dir, file))
}

// barChart draws one bar per name, and saves it as file.
func barChart(dir, file, title, yLabel string, names []string, values []float64) error {
	if dir == "" {
		return nil
	}
	p := plot.New()
	p.Title.Text = title
	p.Y.Label.Text = yLabel
	bars, err := plotter.NewBarChart(plotter.Values(values), vg.Points(40))
	if err != nil {
		return err
	}
	bars.Color = plotutil.Color(0)
	p.Add(bars)
	p.NominalX(names...)
	return p.Save(12*vg.Centimeter, 9*vg.Centimeter, filepath.Join(dir, file))
}

// chartPaths draws throughput and p99 against concurrency, one line per
// path, from the main measurement.
func (b *bench) chartPaths(res map[string]map[int]*load.Result, paths []path) error {
	var x []float64
	conc := append([]int(nil), b.cfg.concurrency...)
	sort.Ints(conc)
	for _, c := range conc {
		x = append(x, float64(c))
	}
	tput, p99 := map[string][]float64{}, map[string][]float64{}
	var order []string
	for _, p := range paths {
		order = append(order, p.name)
		for _, c := range conc {
			r := res[p.name][c]
			tput[p.name] = append(tput[p.name], r.Throughput())
			p99[p.name] = append(p99[p.name], float64(r.Quantile(.99))/1e6)
		}
	}
	if err := lineChart(b.cfg.charts, "bench-throughput.svg", "Throughput by path", "concurrency", "requests/s", x, tput, order); err != nil {
		return err
	}
	return lineChart(b.cfg.charts, "bench-p99.svg", "p99 latency by path", "concurrency", "p99 (ms)", x, p99, order)
}

// chartScale draws convergence and memory against the mesh size.
func (b *bench) chartScale(rows []scaleRow) error {
	var x []float64
	conv := map[string][]float64{}
	mem := map[string][]float64{}
	for _, r := range rows {
		x = append(x, float64(r.n))
		conv["join, max"] = append(conv["join, max"], r.joinMax.Seconds())
		conv["join, p50"] = append(conv["join, p50"], r.joinP50.Seconds())
		conv["kill -9, max"] = append(conv["kill -9, max"], r.killMax.Seconds())
		conv["kill -9, p50"] = append(conv["kill -9, p50"], r.killP50.Seconds())
		mem["idle"] = append(mem["idle"], r.rssIdle)
		mem["under load"] = append(mem["under load"], r.rssLoad)
	}
	if err := lineChart(b.cfg.charts, "bench-scale-convergence.svg", "Convergence against mesh size", "members (N)", "seconds",
		x, conv, []string{"join, p50", "join, max", "kill -9, p50", "kill -9, max"}); err != nil {
		return err
	}
	return lineChart(b.cfg.charts, "bench-scale-memory.svg", "Resident memory per member", "members (N)", "MiB", x, mem, []string{"idle", "under load"})
}

// chartSlow draws the p99 of each balancer with one slow upstream.
func (b *bench) chartSlow(res map[string]map[int]*load.Result, balancers []string, conc int) error {
	var values []float64
	for _, bal := range balancers {
		values = append(values, float64(res[bal][conc].Quantile(.99))/1e6)
	}
	return barChart(b.cfg.charts, "bench-slow-upstream.svg", fmt.Sprintf("p99 with one slow upstream of four (c=%d)", conc), "p99 (ms)", balancers, values)
}
