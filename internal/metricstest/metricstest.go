// Package metricstest records what code under test writes to Go kit
// metrics, by label values, so that tests can read it back. It is the one
// fake counter, histogram and gauge of the repository's tests.
//
// It imports only Go kit's metrics interfaces.
package metricstest

import (
	"strings"
	"sync"

	"github.com/go-kit/kit/metrics"
)

// Recorder is a metrics.Counter that remembers every value under the label
// values it was given. Histogram and Gauge return views of the same record.
type Recorder struct {
	mu   *sync.Mutex
	vals map[string][]float64
	lvs  []string
}

// NewRecorder returns an empty recorder.
func NewRecorder() *Recorder {
	return &Recorder{mu: &sync.Mutex{}, vals: map[string][]float64{}}
}

var (
	_ metrics.Counter   = (*Recorder)(nil)
	_ metrics.Histogram = Histogram{}
	_ metrics.Gauge     = Gauge{}
)

// With implements metrics.Counter.
func (r *Recorder) With(lvs ...string) metrics.Counter { return r.with(lvs) }

func (r *Recorder) with(lvs []string) *Recorder {
	return &Recorder{mu: r.mu, vals: r.vals, lvs: append(append([]string{}, r.lvs...), lvs...)}
}

// Add implements metrics.Counter.
func (r *Recorder) Add(delta float64) { r.record(delta) }

func (r *Recorder) record(v float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := strings.Join(r.lvs, ",")
	r.vals[k] = append(r.vals[k], v)
}

// Sum returns the total recorded under exactly these label values.
func (r *Recorder) Sum(lvs ...string) float64 {
	var s float64
	for _, v := range r.Values(lvs...) {
		s += v
	}
	return s
}

// Values returns every value recorded under exactly these label values.
func (r *Recorder) Values(lvs ...string) []float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]float64(nil), r.vals[strings.Join(lvs, ",")]...)
}

// Histogram returns r as a metrics.Histogram.
func (r *Recorder) Histogram() Histogram { return Histogram{r} }

// Gauge returns r as a metrics.Gauge; Set and Add are both recorded.
func (r *Recorder) Gauge() Gauge { return Gauge{r} }

// Histogram is a Recorder seen as a metrics.Histogram.
type Histogram struct{ r *Recorder }

// With implements metrics.Histogram.
func (h Histogram) With(lvs ...string) metrics.Histogram { return Histogram{h.r.with(lvs)} }

// Observe implements metrics.Histogram.
func (h Histogram) Observe(v float64) { h.r.record(v) }

// Gauge is a Recorder seen as a metrics.Gauge.
type Gauge struct{ r *Recorder }

// With implements metrics.Gauge.
func (g Gauge) With(lvs ...string) metrics.Gauge { return Gauge{g.r.with(lvs)} }

// Set implements metrics.Gauge.
func (g Gauge) Set(v float64) { g.r.record(v) }

// Add implements metrics.Gauge.
func (g Gauge) Add(delta float64) { g.r.record(delta) }
