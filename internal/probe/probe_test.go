package probe

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestDoAndMetric(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/metrics" {
			w.Write([]byte("# HELP x\nx_total{a=\"1\"} 2\nx_total{a=\"2\"} 3.5\nx_other 7\n"))
			return
		}
		w.Header().Set("X-Seen", r.Header.Get("Content-Type"))
		w.WriteHeader(http.StatusTeapot)
		w.Write([]byte(r.Method))
	}))
	defer srv.Close()
	resp, err := Do("PATCH", srv.URL+"/x", `{}`, nil)
	if err != nil || resp.Status != http.StatusTeapot || resp.Body != "PATCH" || resp.Header.Get("X-Seen") != "application/json" {
		t.Errorf("Do: want 418 PATCH with a JSON content type, have %+v, %v", resp, err)
	}
	addr := strings.TrimPrefix(srv.URL, "http://")
	for prefix, want := range map[string]float64{"x_total": 5.5, `x_total{a="2"}`: 3.5, "x_other ": 7, "absent": 0} {
		if have, err := Metric(addr, prefix); err != nil || have != want {
			t.Errorf("Metric(%q): want %v, have %v, %v", prefix, want, have, err)
		}
	}
}
