package member

import (
	"encoding/json"
	"net/http"

	"github.com/kitmesh/stringsvc/client"
	"github.com/kitmesh/stringsvc/discovery"
	"github.com/kitmesh/stringsvc/discovery/lb"
	"github.com/kitmesh/stringsvc/transport/limit"
)

// View is the body of GET /debug/mesh.
type View struct {
	ID              string `json:"id,omitempty"`
	Advertise       string `json:"advertise,omitempty"`
	Registered      bool   `json:"registered"`
	ConsulReachable bool   `json:"consul_reachable"`
	ConsulError     string `json:"consul_error,omitempty"`    // why the registrar's last call failed
	DiscoveryError  string `json:"discovery_error,omitempty"` // why Consul refuses the discovery query
	// Elsewhere names another node the catalog lists this member's ID on:
	// a stale entry that peers may still call.
	Elsewhere string        `json:"catalog_elsewhere,omitempty"`
	Upstreams []lb.Snapshot `json:"upstreams"`
	// Zones is the default pool's zone decision and split.
	Zones *lb.ZoneSnapshot `json:"zones,omitempty"`
	// Limiter is the concurrency limit of the member's endpoints.
	Limiter *LimiterView `json:"limiter,omitempty"`
	// Traffic is Consul's discovery chain as the member applies it: the
	// routes, the splits, what is not applied, and every target's pool.
	Traffic *client.RouterView `json:"traffic,omitempty"`
	// ChainError says why Consul refuses the discovery chain query.
	ChainError string `json:"chain_error,omitempty"`
	// Connect is the member's Connect identity: IDs and serials, never a
	// certificate body or key. Nil without -mesh.tls connect.
	Connect *discovery.IdentityView `json:"connect,omitempty"`
	// Plain is the client listener: where it listens and who may call it.
	Plain *PlainView `json:"plain_listener,omitempty"`
}

// LimiterView is the concurrency limiter's state.
type LimiterView struct {
	Algorithm string `json:"algorithm"`
	Limit     int    `json:"limit"`
	InFlight  int    `json:"in_flight"`
	Waiting   int    `json:"waiting"`
}

// PlainView is what /debug/mesh says of the client listener.
type PlainView struct {
	Addr string `json:"addr"`
	// Public is false when it listens on loopback only.
	Public  bool   `json:"public"`
	Callers string `json:"callers"`
}

// meshHandler shows the member's registration and its view of the mesh. A
// standalone member (ms nil) has no upstreams.
func meshHandler(ms *mesh, l *limit.Limiter) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		v := View{Upstreams: []lb.Snapshot{}}
		if ms != nil {
			v = ms.view()
		}
		v.Limiter = &LimiterView{Algorithm: l.Name(), Limit: l.Limit(), InFlight: l.InFlight(), Waiting: l.Waiting()}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(v)
	})
}
