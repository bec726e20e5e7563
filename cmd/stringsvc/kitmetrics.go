package main

import (
	"github.com/go-kit/kit/metrics"
	"github.com/prometheus/client_golang/prometheus"
)

// Go kit's metrics/prometheus adapters look the child metric up in its vector
// on every Add and Observe, building a label map each time; on the request
// path that showed up in the profile. These adapters resolve the child once,
// as soon as With has been given a value for every label, so that a
// middleware that calls With at construction pays nothing per request.

type counter struct {
	vec    *prometheus.CounterVec
	labels []string // names
	lvs    []string // name, value pairs given so far
	child  prometheus.Counter
}

func newCounter(vec *prometheus.CounterVec, labels ...string) *counter {
	c := &counter{vec: vec, labels: labels}
	if len(labels) == 0 {
		c.child = vec.WithLabelValues()
	}
	return c
}

func (c *counter) With(lvs ...string) metrics.Counter {
	n := &counter{vec: c.vec, labels: c.labels, lvs: append(append([]string{}, c.lvs...), lvs...)}
	if len(n.lvs) == 2*len(n.labels) {
		n.child = c.vec.With(labelMap(n.lvs))
	}
	return n
}

func (c *counter) Add(delta float64) {
	if c.child != nil {
		c.child.Add(delta)
		return
	}
	c.vec.With(labelMap(c.lvs)).Add(delta)
}

type histogram struct {
	vec    *prometheus.HistogramVec
	labels []string
	lvs    []string
	child  prometheus.Observer
}

func newHistogram(vec *prometheus.HistogramVec, labels ...string) *histogram {
	h := &histogram{vec: vec, labels: labels}
	if len(labels) == 0 {
		h.child = vec.WithLabelValues()
	}
	return h
}

func (h *histogram) With(lvs ...string) metrics.Histogram {
	n := &histogram{vec: h.vec, labels: h.labels, lvs: append(append([]string{}, h.lvs...), lvs...)}
	if len(n.lvs) == 2*len(n.labels) {
		n.child = h.vec.With(labelMap(n.lvs))
	}
	return n
}

func (h *histogram) Observe(value float64) {
	if h.child != nil {
		h.child.Observe(value)
		return
	}
	h.vec.With(labelMap(h.lvs)).Observe(value)
}

func labelMap(lvs []string) prometheus.Labels {
	m := make(prometheus.Labels, len(lvs)/2)
	for i := 0; i+1 < len(lvs); i += 2 {
		m[lvs[i]] = lvs[i+1]
	}
	return m
}
