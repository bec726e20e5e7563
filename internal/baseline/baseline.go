// Package baseline is the plain net/http handler that the benchmarks
// measure the member against: the same JSON decode and encode as /count,
// with no Go kit and no middleware. The bench (internal/e2e/cmd/bench)
// serves it as a process, and the in-process benchmarks call it directly;
// both use this one.
//
// It imports only the standard library.
package baseline

import (
	"encoding/json"
	"net/http"
)

// Handler serves POST /count {"s":"..."} -> {"v":n}.
func Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/count", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			S string `json:"s"`
		}
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&req); err != nil {
			http.Error(w, `{"error":"bad request"}`, http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		json.NewEncoder(w).Encode(struct {
			V int `json:"v"`
		}{len(req.S)})
	})
	return mux
}
