package member

import (
	"context"
	"net"
	"net/http"
	"sync"

	"github.com/go-kit/log"
	"github.com/kitmesh/stringsvc/discovery/lb"
	"github.com/kitmesh/stringsvc/internal/telemetry"
	"github.com/kitmesh/stringsvc/service"
	"github.com/kitmesh/stringsvc/transport"
	"github.com/kitmesh/stringsvc/transport/endpoints"
	"github.com/kitmesh/stringsvc/transport/limit"
	oklog "github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Loggers are a member's two log streams: operational lines, written at
// once with their caller, and request lines, buffered.
type Loggers struct {
	Ops, Requests log.Logger
}

// Member is one mesh member before it serves: its handlers and, unless it
// runs standalone, its mesh.
type Member struct {
	// Handler serves the client listener.
	Handler http.Handler
	// Admin serves the admin listener; nil without Config.AdminAddr.
	Admin http.Handler
	mesh  *mesh // nil when standalone
	cfg   Config
	ops   log.Logger
}

// New builds a member in the shape of Go kit's addsvc: the local service,
// then the optional mesh around it, then the HTTP handlers. at is where
// its listeners are bound.
func New(cfg Config, at Bound, logs Loggers, registry *prometheus.Registry, tr transport.Tracing) (*Member, error) {
	m := telemetry.NewMetrics(registry)

	// One concurrency limit for the member, shared by its client and
	// mesh listeners: they share its CPU.
	// ("" is the default, for callers that build a Config by hand.)
	if cfg.Limiter == "" {
		cfg.Limiter = limit.Names()[0]
	}
	newAlgorithm, err := limit.Parse(cfg.Limiter)
	if err != nil {
		return nil, err
	}
	limiter := limit.New(newAlgorithm(limit.Options{Max: cfg.MaxInFlight}), cfg.MaxInFlight, nil)
	limiter.SetQueue(cfg.MaxQueue)
	m.WatchLimiter(limiter.Limit, limiter.InFlight, limiter.Waiting, limiter.Name())

	// The local service: this member doing the work itself. It is what
	// the balancer calls when it picks this member's own instance, and
	// what serves forwarded and fallback requests.
	var local service.StringService
	{
		local = service.NewBasicService()
		local = service.InstrumentingMiddleware(m.Requests, m.Duration, m.CountResult)(local)
		if cfg.DebugDelay > 0 {
			local = service.DelayMiddleware(cfg.DebugDelay)(local) // drills only
		}
	}

	// The optional mesh: forward Uppercase to the instances it finds.
	mb := &Member{cfg: cfg, ops: logs.Ops}
	svc := local
	if cfg.Meshed() {
		ms, err := newMesh(cfg, local, at, m, logs.Ops, tr)
		if err != nil {
			return nil, err
		}
		mb.mesh = ms
		svc = service.ProxyingMiddleware(ms.Forwarder(), service.ProxyOptions{
			Fallbacks:       m.Fallbacks,
			OnDenied:        cfg.OnDenied(),
			OnFallback:      telemetry.FallbackEvent,
			MayServeLocally: ms.mayServeLocally(),
		})(local)
	}

	// One line per request this member answers, wherever the work was
	// done, with the request's trace and span IDs and its mesh target.
	if cfg.LogRequests {
		svc = service.LoggingMiddleware(logs.Requests, telemetry.RequestFields)(svc)
	}

	// The HTTP handlers: the endpoints, and the operator's pages, on the
	// client port or, with -admin.addr, on their own.
	operator := map[string]http.Handler{
		// OpenMetrics when the scraper asks for it: the format that
		// carries the duration histogram's exemplars (trace IDs).
		"/metrics":    promhttp.HandlerFor(registry, promhttp.HandlerOpts{EnableOpenMetrics: true}),
		"/debug/mesh": meshHandler(mb.mesh, limiter),
	}
	opts := transport.HandlerOptions{
		MaxBodyBytes: cfg.MaxBodyBytes,
		MaxInFlight:  cfg.MaxInFlight,
		Limiter:      limiter,
		MaxWait:      cfg.MaxWait,
		Shed:         m.Shed,
		Expired:      m.Expired,
		Responses:    m.Responses,
		Extra:        operator,
		Tracing:      tr,
	}
	if cfg.AdminAddr != "" {
		opts.Extra = nil
		mb.Admin = transport.NewAdminHandler(operator)
	}
	// The service span of every request: Go kit's endpoint, traced.
	eps := endpoints.New(svc)
	eps.UppercaseEndpoint = tr.Span("stringsvc.uppercase")(eps.UppercaseEndpoint)
	eps.CountEndpoint = tr.Span("stringsvc.count")(eps.CountEndpoint)
	mb.Handler = transport.NewHTTPHandler(eps, opts)
	return mb, nil
}

// Close stops the member's watches.
func (mb *Member) Close() {
	if mb.mesh != nil {
		mb.mesh.close()
	}
}

// Upstreams is the member's view of its upstreams; empty when standalone.
func (mb *Member) Upstreams() []lb.Snapshot {
	if mb.mesh == nil {
		return []lb.Snapshot{}
	}
	return mb.mesh.router.DefaultPool().Snapshot()
}

// MeshHandler serves the mesh listener: the client handler, for callers
// that the handshake proved to be Connect services of the trust domain and
// that the intentions allow, checked on every request. Nil without
// Connect.
func (mb *Member) MeshHandler() http.Handler {
	if mb.mesh == nil || mb.mesh.identity == nil {
		return nil
	}
	return transport.RequirePeer(mb.Handler, mb.mesh.peerCheck)
}

// MeshListener wraps ln in the member's mutual TLS.
func (mb *Member) MeshListener(ln net.Listener) net.Listener {
	return mb.mesh.identity.Listener(ln)
}

// AddActors adds the mesh's own lifecycle to g: the registrar.
func (mb *Member) AddActors(g *oklog.Group) {
	if mb.mesh != nil {
		mb.mesh.addActors(g)
	}
}

// Drain is the shutdown protocol: leave Consul first, give peers
// Config.Drain to see it (the listeners stay open meanwhile, so nothing is
// refused), then let in-flight requests finish within
// Config.ShutdownTimeout, on every server at once.
func (mb *Member) Drain(servers ...*http.Server) {
	if mb.mesh != nil {
		mb.mesh.leave(mb.cfg.Drain)
	}
	ctx, cancel := context.WithTimeout(context.Background(), mb.cfg.ShutdownTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, server := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := server.Shutdown(ctx); err != nil {
				mb.ops.Log("during", "shutdown", "err", err)
			}
		}()
	}
	wg.Wait()
}
