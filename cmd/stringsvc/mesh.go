package main

import (
	"encoding/json"
	"net/http"

	"github.com/kitmesh/stringsvc/discovery"
)

// meshView is the body of GET /debug/mesh.
type meshView struct {
	ID              string               `json:"id,omitempty"`
	Registered      bool                 `json:"registered"`
	ConsulReachable bool                 `json:"consul_reachable"`
	Upstreams       []discovery.Snapshot `json:"upstreams"`
}

// meshHandler shows the member's registration and its view of the mesh.
// Any argument may be nil in standalone mode.
func meshHandler(reg *discovery.Registrar, reach *discovery.Reachability, pool *discovery.Pool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		v := meshView{Upstreams: []discovery.Snapshot{}}
		if reg != nil {
			v.ID = reg.ID()
			v.Registered = reg.Registered()
		}
		if reach != nil {
			v.ConsulReachable = !reach.Down()
		}
		if pool != nil {
			v.Upstreams = pool.Snapshot()
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(v)
	})
}
