package service_test

import (
	"strings"
	"sync"

	"github.com/go-kit/kit/metrics"
)

// recorder is a metrics.Counter and metrics.Histogram that remembers every
// observation under its label values, so tests can read them back.
type recorder struct {
	mu   *sync.Mutex
	vals map[string][]float64
	lvs  []string
}

func newRecorder() *recorder {
	return &recorder{mu: &sync.Mutex{}, vals: map[string][]float64{}}
}

func (r *recorder) With(lvs ...string) metrics.Counter { return r.with(lvs) }

func (r *recorder) with(lvs []string) *recorder {
	return &recorder{mu: r.mu, vals: r.vals, lvs: append(append([]string{}, r.lvs...), lvs...)}
}

func (r *recorder) Add(d float64) { r.Observe(d) }

func (r *recorder) Observe(v float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := strings.Join(r.lvs, ",")
	r.vals[k] = append(r.vals[k], v)
}

// sum returns the total under exactly these label values.
func (r *recorder) sum(lvs ...string) float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var s float64
	for _, v := range r.vals[strings.Join(lvs, ",")] {
		s += v
	}
	return s
}

// histogram adapts a recorder to metrics.Histogram.
type histogram struct{ *recorder }

func (h histogram) With(lvs ...string) metrics.Histogram { return histogram{h.with(lvs)} }
