// Package kitprom adapts Prometheus vectors to Go kit's metrics
// interfaces, like Go kit's metrics/prometheus but without a map lookup per
// observation, and without registering anything: the caller builds the
// vectors and registers them on its own registry.
//
// It imports only Go kit's metrics interfaces and the Prometheus client.
package kitprom

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/go-kit/kit/metrics"
	"github.com/prometheus/client_golang/prometheus"
)

// Go kit's metrics/prometheus adapters look the child metric up in its vector
// on every Add and Observe, building a label map each time; on the request
// path that showed up in the profile. These adapters resolve the child once,
// as soon as With has been given a value for every label, so that a
// middleware that calls With at construction pays nothing per request.

// series is the part both adapters share: the label values given so far,
// and the child metric once they are complete.
type series[T any] struct {
	with   func(prometheus.Labels) T // the vector's With
	labels []string                  // names
	lvs    []string                  // name, value pairs given so far
	child  T
	ready  bool
}

func newSeries[T any](with func(prometheus.Labels) T, labels []string) series[T] {
	s := series[T]{with: with, labels: labels}
	if len(labels) == 0 {
		s.child, s.ready = with(prometheus.Labels{}), true
	}
	return s
}

func (s series[T]) extend(lvs []string) series[T] {
	n := series[T]{with: s.with, labels: s.labels, lvs: append(append([]string{}, s.lvs...), lvs...)}
	if len(n.lvs) == 2*len(n.labels) {
		n.child, n.ready = n.with(labelMap(n.lvs)), true
	}
	return n
}

// get returns the child, resolving it now if With was not given every
// label (Prometheus then panics, as it would for Go kit's adapter).
func (s series[T]) get() T {
	if s.ready {
		return s.child
	}
	return s.with(labelMap(s.lvs))
}

// Counter is a metrics.Counter over a CounterVec.
type Counter struct{ series[prometheus.Counter] }

// NewCounter wraps vec, whose label names are labels, in order.
func NewCounter(vec *prometheus.CounterVec, labels ...string) Counter {
	return Counter{newSeries(func(l prometheus.Labels) prometheus.Counter { return vec.With(l) }, labels)}
}

// With implements metrics.Counter.
func (c Counter) With(lvs ...string) metrics.Counter { return Counter{c.extend(lvs)} }

// Add implements metrics.Counter.
func (c Counter) Add(delta float64) { c.get().Add(delta) }

// Histogram is a metrics.Histogram over a HistogramVec.
type Histogram struct {
	series[prometheus.Observer]
	exemplar func(context.Context) prometheus.Labels
	last     *atomic.Int64 // when this series last took an exemplar, in ns
}

// exemplarEvery spaces the exemplars of one series: Prometheus keeps only
// the latest per bucket, and making one costs some ten allocations.
const exemplarEvery = 100 * time.Millisecond

// NewHistogram wraps vec, whose label names are labels, in order.
func NewHistogram(vec *prometheus.HistogramVec, labels ...string) Histogram {
	return Histogram{series: newSeries(func(l prometheus.Labels) prometheus.Observer { return vec.With(l) }, labels)}
}

// WithExemplars returns h whose ObserveContext attaches the exemplar that
// exemplar finds in the context (nil for none): typically the trace ID of
// the request, which links a bucket to a trace.
func (h Histogram) WithExemplars(exemplar func(context.Context) prometheus.Labels) Histogram {
	h.exemplar = exemplar
	return h
}

// With implements metrics.Histogram.
func (h Histogram) With(lvs ...string) metrics.Histogram {
	return Histogram{series: h.extend(lvs), exemplar: h.exemplar, last: new(atomic.Int64)}
}

// Observe implements metrics.Histogram.
func (h Histogram) Observe(value float64) { h.get().Observe(value) }

// ObserveContext observes value with the context's exemplar, if any.
func (h Histogram) ObserveContext(ctx context.Context, value float64) {
	o := h.get()
	if h.exemplar != nil && h.takeExemplar() {
		if l := h.exemplar(ctx); l != nil {
			if eo, ok := o.(prometheus.ExemplarObserver); ok {
				eo.ObserveWithExemplar(value, l)
				return
			}
		}
	}
	o.Observe(value)
}

// takeExemplar reports whether this observation may carry an exemplar.
func (h Histogram) takeExemplar() bool {
	if h.last == nil {
		return true
	}
	now := time.Now().UnixNano()
	last := h.last.Load()
	return now-last >= int64(exemplarEvery) && h.last.CompareAndSwap(last, now)
}

func labelMap(lvs []string) prometheus.Labels {
	m := make(prometheus.Labels, len(lvs)/2)
	for i := 0; i+1 < len(lvs); i += 2 {
		m[lvs[i]] = lvs[i+1]
	}
	return m
}
