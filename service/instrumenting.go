package service

import (
	"context"
	"strconv"
	"time"

	"github.com/go-kit/kit/metrics"
)

// InstrumentingMiddleware records, per method and error, how many requests
// this instance served and how long they took, and the distribution of
// Count's results.
func InstrumentingMiddleware(requestCount metrics.Counter, requestLatency metrics.Histogram, countResult metrics.Histogram) Middleware {
	// The label combinations are few and known, so they are resolved once
	// here rather than on every request.
	series := func(method string, failed bool) instrumentedSeries {
		lvs := []string{"method", method, "error", strconv.FormatBool(failed)}
		latency := requestLatency.With(lvs...)
		observe := func(_ context.Context, v float64) { latency.Observe(v) }
		if co, ok := latency.(ContextObserver); ok {
			observe = co.ObserveContext
		}
		return instrumentedSeries{requestCount.With(lvs...), observe}
	}
	return func(next StringService) StringService {
		return instrumentingMiddleware{
			uppercaseOK:  series("uppercase", false),
			uppercaseErr: series("uppercase", true),
			count:        series("count", false),
			countResult:  countResult,
			next:         next,
		}
	}
}

// ContextObserver is a histogram that also takes the request's context
// with an observation, so that it can attach an exemplar: the trace of
// the request. The latency histogram is used through it when it is one.
type ContextObserver interface {
	ObserveContext(ctx context.Context, value float64)
}

type instrumentedSeries struct {
	count   metrics.Counter
	latency func(ctx context.Context, v float64)
}

func (s instrumentedSeries) observe(ctx context.Context, begin time.Time) {
	s.count.Add(1)
	s.latency(ctx, time.Since(begin).Seconds())
}

type instrumentingMiddleware struct {
	uppercaseOK, uppercaseErr, count instrumentedSeries
	countResult                      metrics.Histogram
	next                             StringService
}

func (mw instrumentingMiddleware) Uppercase(ctx context.Context, s string) (string, error) {
	begin := time.Now()
	output, err := mw.next.Uppercase(ctx, s)
	if err != nil {
		mw.uppercaseErr.observe(ctx, begin)
	} else {
		mw.uppercaseOK.observe(ctx, begin)
	}
	return output, err
}

func (mw instrumentingMiddleware) Count(ctx context.Context, s string) int {
	begin := time.Now()
	n := mw.next.Count(ctx, s)
	mw.count.observe(ctx, begin)
	mw.countResult.Observe(float64(n))
	return n
}
