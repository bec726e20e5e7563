package member

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/metrics"
	"github.com/go-kit/kit/sd"
	"github.com/go-kit/log"
	"github.com/hashicorp/consul/api"
	oklog "github.com/oklog/run"

	"github.com/kitmesh/stringsvc/client"
	"github.com/kitmesh/stringsvc/discovery"
	"github.com/kitmesh/stringsvc/discovery/lb"
	"github.com/kitmesh/stringsvc/internal/telemetry"
	"github.com/kitmesh/stringsvc/service"
	"github.com/kitmesh/stringsvc/transport"
	"github.com/kitmesh/stringsvc/transport/endpoints"
	"github.com/kitmesh/stringsvc/transport/http1"
)

// mesh is the optional half of a member, what makes it one of many: the
// client chain it forwards through (instances from Consul or the -proxy
// list), and, with Consul, the registrar that keeps it listed and, with
// Connect, its identity and intentions.
type mesh struct {
	logger     log.Logger
	reach      *discovery.Reachability // nil without Consul
	registrar  *discovery.Registrar    // nil without Consul
	instancer  sd.Instancer
	consul     *discovery.Instancer // the same, when it is Consul's
	router     *client.Router
	chainWatch *discovery.ChainWatcher // nil without Consul
	forward    endpoint.Endpoint
	stopWarn   func()
	zone       *discovery.LocalZone

	// With -mesh.tls connect: the member's Connect identity, and the
	// intentions its mesh listener enforces. Nil otherwise.
	identity   *discovery.Identity
	intentions *discovery.Intentions
	egress     *discovery.Intentions // an edge's own calls to its upstream; nil otherwise
	denied     metrics.Counter       // denials of our calls, by our peers

	plain PlainView // who may call the client listener
}

// Bound is where a member's listeners are bound: the ports it got, which
// are the ones it advertises.
type Bound struct {
	HTTP  net.Addr
	Mesh  net.Addr // nil without Connect
	Admin net.Addr // nil without an admin listener
}

// advertise returns the address a member registers: -advertise, else the
// route to Consul with the client port. A member whose client listener is
// on loopback takes the host from its mesh listener, which peers reach;
// the client port stays in the address, which names the member (its ID).
func (at Bound) advertise(cfg Config) (string, error) {
	if !cfg.PrivateHTTP() || cfg.Advertise != "" {
		return discovery.AdvertiseAddr(cfg.Advertise, cfg.ConsulHostPort(), at.HTTP)
	}
	a, err := discovery.AdvertiseAddr("", cfg.ConsulHostPort(), at.Mesh)
	if err != nil {
		return "", err
	}
	host, _, _ := net.SplitHostPort(a)
	return net.JoinHostPort(host, strconv.Itoa(at.HTTP.(*net.TCPAddr).Port)), nil
}

// newMesh builds the mesh around local, the member's own service.
func newMesh(cfg Config, local service.StringService, at Bound, m *telemetry.Metrics, logger log.Logger, tr transport.Tracing) (*mesh, error) {
	ms := &mesh{logger: logger, plain: PlainView{Addr: at.HTTP.String(), Public: !cfg.PrivateHTTP(), Callers: cfg.PlainNote()}}

	// Consul, when there is one: a client, a reachability tracker, and the
	// address this member advertises.
	var (
		err       error
		consul    *discovery.Client
		apiClient *api.Client
		authorize discovery.Authorizer
		self      func() string // the advertised address, once settled
		meshPort  int
	)
	if cfg.Registers() {
		token := discovery.NewToken(cfg.ConsulTokenFile, cfg.ConsulToken, log.With(logger, "component", "consul"))
		if consul, err = discovery.NewClient(cfg.ConsulAddr, token); err != nil {
			return nil, err
		}
		apiClient, authorize = consul.Client, consul.CanRead
		logger.Log("component", "consul", "addr", cfg.ConsulAddr, "token", token.String())
		ms.reach = discovery.NewReachability(log.With(logger, "component", "consul"))
		m.WatchConsul(ms.reach.Down)
		advertise, err := at.advertise(cfg)
		if err != nil {
			return nil, err
		}
		if cfg.Connect() {
			meshPort = at.Mesh.(*net.TCPAddr).Port
		}
		checkPort := 0
		if cfg.PrivateHTTP() {
			// Consul's agent cannot reach a loopback listener: it checks
			// the admin listener's /health, as it checks a sidecar's
			// exposed paths.
			checkPort = at.Admin.(*net.TCPAddr).Port
		}
		ms.registrar, err = discovery.NewRegistrar(apiClient, discovery.Registration{
			Name:            cfg.ServiceName,
			Advertise:       advertise,
			AskAgent:        cfg.Advertise == "",
			Tags:            cfg.Tags(),
			Version:         cfg.Version,
			Zone:            cfg.Zone,
			CheckInterval:   cfg.CheckInterval,
			CheckTimeout:    cfg.CheckTimeout,
			DeregisterAfter: cfg.DeregisterAfter,
			MeshPort:        meshPort,
			Upstream:        cfg.UpstreamService(),
			CheckPort:       checkPort,
			PrivateHTTP:     cfg.PrivateHTTP(),
		}, discovery.RegistrarOptions{
			Reach:      ms.reach,
			Registered: m.Registered,
			Failures:   m.ConsulFailures,
			Logger:     log.With(logger, "component", "registrar"),
		})
		if err != nil {
			return nil, err
		}
		self = ms.registrar.Advertise
	}

	// With Connect: the member's certificates, the intentions its mesh
	// listener enforces, and a client that presents the one and checks
	// that every upstream is an instance of the upstream service.
	var clientTLS *tls.Config
	if cfg.Connect() {
		ms.identity = discovery.NewIdentity(apiClient, cfg.ServiceName, discovery.IdentityOptions{
			Reach:     ms.reach,
			Failures:  m.ConsulFailures,
			Refused:   m.TLSRefused,
			Rotations: m.CertChanges,
			Logger:    log.With(logger, "component", "connect"),
		})
		ms.intentions = discovery.NewIntentions(consul, cfg.ServiceName, cfg.AuthzTTL, discovery.IntentionsOptions{
			Denied: m.Denied.With("side", "server"),
			Asked:  m.Authorize,
			Logger: log.With(logger, "component", "intentions"),
		})
		ms.denied = m.Denied.With("side", "client", "source", cfg.ServiceName)
		clientTLS = ms.identity.ClientTLS(cfg.UpstreamService())
		if cfg.Edge() {
			// The edge's own calls: asked before it serves a request
			// itself, so that a deny holds with no member reachable.
			ms.egress = discovery.NewEgressIntentions(consul, cfg.ServiceName, cfg.UpstreamService(), cfg.AuthzTTL, discovery.IntentionsOptions{
				Asked:  m.Authorize,
				Logger: log.With(logger, "component", "intentions"),
			})
		}
	}

	// The member's zone: -service.zone, or its agent's node meta.
	ms.zone = discovery.NewLocalZone(apiClient, cfg.Zone, log.With(logger, "component", "zone"))

	// Where the instances come from.
	if cfg.Proxy != nil {
		ms.instancer = sd.FixedInstancer(cfg.Proxy)
		if consul == nil {
			logger.Log("msg", "static upstreams from -proxy; not using Consul", "upstreams", len(cfg.Proxy))
		}
	} else {
		ms.consul = discovery.NewInstancer(apiClient, cfg.UpstreamService(), SplitList(cfg.ProxyTags), discovery.InstancerOptions{
			Reach:     ms.reach,
			Failures:  m.ConsulFailures,
			Logger:    log.With(logger, "component", "instancer"),
			Authorize: authorize,
			Connect:   cfg.Connect(),
		})
		ms.instancer = ms.consul
		ms.stopWarn = discovery.WarnLoopback(ms.instancer, self, log.With(logger, "component", "advertise"))
	}

	rt := http1.NewTransport(cfg.MaxConnsPerHost)
	rt.TLS = clientTLS
	if ms.identity != nil {
		rt.Track = ms.identity.TrackClient(cfg.UpstreamService())
	}
	chainOptions := client.ChainOptions{
		Upstream: client.UpstreamOptions{
			Self:            self,
			Local:           endpoints.New(local).Endpoint(),
			Transport:       tr.Client(rt),
			TLS:             cfg.Connect(),
			Forwarded:       true,
			Tracing:         tr,
			RateLimit:       cfg.RateLimit,
			RateBurst:       cfg.RateBurst,
			BreakerFailures: uint32(cfg.BreakerFailures),
			BreakerTimeout:  cfg.BreakerTimeout,
			BreakerChanges:  m.BreakerChanges,
		},
		Balancer: cfg.Balancer,
		Zones: &lb.Zones{
			Local:      ms.zone.Get,
			MinHealthy: cfg.ZoneMinHealthy,
			SpillRatio: cfg.ZoneSpillRatio,
			Hold:       cfg.ZoneHold,
			Changed: func(spilling bool, reason string) {
				logger.Log("zone", ms.zone.Get(), "spilling", spilling, "reason", reason)
			},
		},
		Retry: lb.RetryOptions{
			MaxAttempts:    cfg.MaxAttempts,
			Timeout:        cfg.ProxyTimeout,
			AttemptTimeout: cfg.AttemptTimeout,
			Budget:         lb.NewBudget(cfg.RetryRatio, cfg.RetryMin),
			Attempts:       m.Attempts,
		},
		Logger: logger,
	}
	// Consul's discovery chain of the upstream service decides, per
	// request, which target's chain a forward takes; without config
	// entries there is one, over the instances found above.
	if ms.consul != nil {
		ms.chainWatch = discovery.NewChainWatcher(apiClient, cfg.UpstreamService(), discovery.ChainWatcherOptions{
			Reach: ms.reach, Failures: m.ConsulFailures, Logger: log.With(logger, "component", "chain"),
		})
	}
	ms.router, err = client.NewRouter(client.RouterOptions{
		Service: cfg.UpstreamService(),
		Watcher: ms.chainWatch,
		Instancer: func(t discovery.Target) sd.Instancer {
			if t.Filter == "" && t.Local && t.Service == cfg.UpstreamService() {
				return keep{ms.instancer} // the member's own watch, stopped by close
			}
			return discovery.NewInstancer(apiClient, t.Service, SplitList(cfg.ProxyTags), discovery.InstancerOptions{
				Reach: ms.reach, Failures: m.ConsulFailures, Logger: log.With(logger, "component", "instancer", "target", t.ID),
				Authorize: authorize, Connect: cfg.Connect(), Filter: t.Filter, Datacenter: t.Datacenter,
			})
		},
		Chain:    chainOptions,
		Requests: m.TargetRequests,
		Logger:   log.With(logger, "component", "router"),
	})
	if err != nil {
		ms.stopWatches()
		return nil, err
	}
	m.WatchPool(func() int { return len(ms.router.DefaultPool().Upstreams()) })
	m.WatchZones(func() (telemetry.ZoneSplit, bool) {
		z, ok := ms.router.DefaultPool().Zones()
		return telemetry.ZoneSplit{Local: z.Local, Spilling: z.Spilling, Requests: z.Requests}, ok
	})
	// The balancer's span holds one client span per attempt.
	ms.forward = tr.Span("proxy.forward")(ms.router.Endpoint())
	return ms, nil
}

// errNoCertificate is why a Connect member serves locally until the agent
// has given it a certificate.
var errNoCertificate = fmt.Errorf("%w: no Connect certificate yet", service.ErrNoUpstreams)

// Forwarder adapts the retrying endpoint to the proxying middleware.
func (ms *mesh) Forwarder() service.Forwarder {
	return func(ctx context.Context, s string) (string, error) {
		if ms.identity != nil && !ms.identity.IsReady() {
			return "", errNoCertificate
		}
		response, err := ms.forward(ctx, endpoints.UppercaseRequest{S: s})
		if errors.Is(err, lb.ErrNoEndpoints) {
			return "", fmt.Errorf("%w: %w", service.ErrNoUpstreams, err)
		}
		if err != nil {
			return "", err
		}
		r := response.(endpoints.UppercaseResponse)
		if ms.denied != nil && errors.Is(r.Err, service.ErrDenied) {
			ms.denied.Add(1)
		}
		return r.V, r.Err
	}
}

// mayServeLocally is asked before a fallback. An edge with Connect serves
// locally only when an intention lets it call its upstream service: a
// denied edge answers 403 whether or not a member is reachable, and one
// that cannot tell answers 503. Nil for everyone else.
func (ms *mesh) mayServeLocally() func(context.Context) error {
	if ms.egress == nil {
		return nil
	}
	return func(ctx context.Context) error {
		err := edgeVerdict(ctx, ms.egress.AllowSelf(ctx, ms.identity))
		if errors.Is(err, service.ErrDenied) {
			ms.denied.Add(1)
		}
		return err
	}
}

// edgeVerdict is what an edge answers when it asked whether it may serve
// a request itself and the check returned err: nothing (allowed), a
// denial (403), the caller's own timeout when its context ended the check
// (504, or 499 if it hung up), or else the edge's unavailability (503, a
// load signal that sends callers elsewhere).
func edgeVerdict(ctx context.Context, err error) error {
	var denied *discovery.DeniedError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &denied):
		return fmt.Errorf("%w: %w", service.ErrDenied, err)
	case ctx.Err() != nil && errors.Is(err, ctx.Err()):
		return err
	case ctx.Err() != nil:
		return fmt.Errorf("%w: %w", ctx.Err(), err)
	default:
		return fmt.Errorf("%w: no upstream answered, and the edge may serve only what the intentions allow: %w", service.ErrUnavailable, err)
	}
}

// OnDenied is what the proxying middleware does when the mesh denies a
// call: a member of the upstream service does the work itself, an edge
// refuses.
func (cfg Config) OnDenied() service.OnDenied {
	if cfg.Edge() {
		return service.Refuse
	}
	return service.ServeLocally
}

// peerCheck is the intentions check of every request on the mesh
// listener.
func (ms *mesh) peerCheck(r *http.Request) error {
	err := ms.intentions.Allow(r.Context(), r.TLS)
	var denied *discovery.DeniedError
	if errors.As(err, &denied) {
		return fmt.Errorf("%w: %w", service.ErrDenied, err)
	}
	return err
}

// addActors adds the mesh's own lifecycle to g: the registrar.
func (ms *mesh) addActors(g *oklog.Group) {
	if ms.registrar == nil {
		return
	}
	g.Add(ms.registrar.Run, func(error) { ms.registrar.Stop() })
}

// leave takes the member out of Consul, so that peers stop sending to it,
// and waits wait for their watches to notice.
func (ms *mesh) leave(wait time.Duration) {
	if ms.registrar == nil {
		return
	}
	ms.registrar.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := ms.registrar.Deregister(ctx); err != nil {
		ms.logger.Log("during", "shutdown", "err", err)
	}
	time.Sleep(wait)
}

// close stops watching for instances.
func (ms *mesh) close() {
	ms.router.Close()
	ms.stopWatches()
}

// stopWatches stops what newMesh started before the router.
func (ms *mesh) stopWatches() {
	if ms.stopWarn != nil {
		ms.stopWarn()
	}
	if ms.chainWatch != nil {
		ms.chainWatch.Stop()
	}
	ms.zone.Stop()
	ms.instancer.Stop()
	if ms.identity != nil {
		ms.identity.Close()
	}
}

// view is the body of GET /debug/mesh.
func (ms *mesh) view() View {
	traffic := ms.router.View()
	v := View{Upstreams: ms.router.DefaultPool().Snapshot(), Plain: &ms.plain, Traffic: &traffic}
	if z, ok := ms.router.DefaultPool().Zones(); ok {
		v.Zones = &z
	}
	if ms.chainWatch != nil {
		v.ChainError = ms.chainWatch.LastError()
	}
	if ms.registrar != nil {
		v.ID = ms.registrar.ID()
		v.Advertise = ms.registrar.Advertise()
		v.Registered = ms.registrar.Registered()
		v.ConsulError = ms.registrar.LastError()
		v.Elsewhere = ms.registrar.Elsewhere()
	}
	if ms.reach != nil {
		v.ConsulReachable = !ms.reach.Down()
	}
	if ms.consul != nil {
		v.DiscoveryError = ms.consul.LastError()
	}
	if ms.identity != nil {
		iv := ms.identity.View()
		v.Connect = &iv
	}
	return v
}

// keep is an instancer whose Stop is its owner's, not the router's.
type keep struct{ sd.Instancer }

// ZoneOf passes the zones of the instancer on.
func (k keep) ZoneOf(instance string) string {
	if z, ok := k.Instancer.(interface{ ZoneOf(string) string }); ok {
		return z.ZoneOf(instance)
	}
	return ""
}

// Stop implements sd.Instancer; the mesh stops the instancer itself.
func (keep) Stop() {}
