package kitprom

import (
	"context"
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

type traceKey struct{}

func TestHistogramExemplars(t *testing.T) {
	hv := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "h", Buckets: []float64{1, 10}}, []string{"method"})
	h := NewHistogram(hv, "method").WithExemplars(func(ctx context.Context) prometheus.Labels {
		if id, ok := ctx.Value(traceKey{}).(string); ok {
			return prometheus.Labels{"trace_id": id}
		}
		return nil
	}).With("method", "uppercase").(Histogram)
	h.ObserveContext(context.WithValue(context.Background(), traceKey{}, "abc"), 0.5)
	h.ObserveContext(context.Background(), 5) // no exemplar
	reg := prometheus.NewRegistry()
	reg.MustRegister(hv)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	buckets := mfs[0].GetMetric()[0].GetHistogram().GetBucket()
	if ex := buckets[0].GetExemplar(); ex == nil || ex.GetLabel()[0].GetValue() != "abc" || ex.GetValue() != 0.5 {
		t.Errorf("bucket le=1: want the exemplar trace_id=abc at 0.5, have %v", ex)
	}
	if ex := buckets[1].GetExemplar(); ex != nil {
		t.Errorf("bucket le=10: want no exemplar, have %v", ex)
	}
}
