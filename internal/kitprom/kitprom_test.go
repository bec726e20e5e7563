package kitprom

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestMetricAdapters(t *testing.T) {
	cv := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "c"}, []string{"method", "error"})
	c := NewCounter(cv, "method", "error")
	c.With("method", "count", "error", "false").Add(2)
	c.With("method", "count").With("error", "false").Add(1) // resolved in two steps
	c.With("method", "uppercase", "error", "true").Add(1)
	if have := testutil.ToFloat64(cv.WithLabelValues("count", "false")); have != 3 {
		t.Errorf("count/false: want 3, have %v", have)
	}
	if have := testutil.ToFloat64(cv.WithLabelValues("uppercase", "true")); have != 1 {
		t.Errorf("uppercase/true: want 1, have %v", have)
	}

	hv := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "h"}, nil)
	NewHistogram(hv).Observe(4)
	if have := testutil.CollectAndCount(hv); have != 1 {
		t.Errorf("histogram series: want 1, have %d", have)
	}
}
