package load

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

func TestRunCountsWhatHappened(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1)%4 == 0 {
			w.WriteHeader(500)
		}
	}))
	defer srv.Close()
	res := Run(context.Background(), Options{Targets: []string{srv.URL}, Concurrency: 4, Requests: 200, Duration: time.Minute})
	if res.Sent != 200 || res.Succeeded != 150 || res.Failed != 50 || res.Errors["status 500"] != 50 {
		t.Errorf("want sent=200 succeeded=150 failed=50 (all status 500), have %s", res)
	}
	if res.Quantile(0.5) <= 0 || res.Quantile(0.99) < res.Quantile(0.5) {
		t.Errorf("quantiles out of order: %v %v", res.Quantile(0.5), res.Quantile(0.99))
	}
	var m Result
	m.Merge(res)
	m.Merge(res)
	if m.Sent != 400 || m.Quantile(0.5) != res.Quantile(0.5) {
		t.Errorf("merge: want 400 sent and the same median, have %s", m)
	}
}

func TestRunIsBoundedInTime(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	begin := time.Now()
	res := Run(context.Background(), Options{Targets: []string{srv.URL}, Requests: 1 << 40, Duration: 200 * time.Millisecond, Pace: time.Millisecond})
	if took := time.Since(begin); took > 10*time.Second || res.Failed != 0 || res.Sent == 0 {
		t.Errorf("want a run cut at its time bound with no failures, have %s after %v", res, took)
	}
}
