package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/sd"
	"github.com/go-kit/log"
	"github.com/hashicorp/consul/api"
	oklog "github.com/oklog/run"

	"github.com/kitmesh/stringsvc/discovery"
	"github.com/kitmesh/stringsvc/discovery/lb"
	"github.com/kitmesh/stringsvc/service"
	"github.com/kitmesh/stringsvc/transport"
)

// mesh is the optional half of a member: everything that makes it one of
// many rather than a lone server. Data flows through it in one line:
//
//	Instancer (Consul's, or the fixed -proxy list)
//	  -> lb.Pool (Go kit's sd.Endpointer inside; one guarded endpoint per instance)
//	  -> balancer (reads the pool)
//	  -> lb.Retry
//	  -> the Forwarder of the proxying middleware
//
// Beside it, when Consul is used, the registrar keeps this member listed.
type mesh struct {
	logger    log.Logger
	reach     *discovery.Reachability // nil without Consul
	registrar *discovery.Registrar    // nil without Consul
	instancer sd.Instancer
	consul    *discovery.Instancer // the same, when it is Consul's
	pool      *lb.Pool
	forward   endpoint.Endpoint
	stopWarn  func()
}

// newMesh builds the mesh around local, the member's own service. bound is
// the address the member's listener got.
func newMesh(cfg config, local service.StringService, bound net.Addr, m *metricsSet, logger log.Logger) (*mesh, error) {
	newBalancer, err := lb.ParseBalancer(cfg.balancer)
	if err != nil {
		return nil, err
	}
	ms := &mesh{logger: logger}

	// Consul, when there is one: a client, a reachability tracker, and the
	// address this member advertises.
	var (
		client    *api.Client
		authorize discovery.Authorizer
		self      func() string // the advertised address, once settled
	)
	if cfg.registers() {
		token := discovery.NewToken(cfg.consulTokenFile, cfg.consulToken, log.With(logger, "component", "consul"))
		if client, authorize, err = discovery.NewClient(cfg.consulAddr, token); err != nil {
			return nil, err
		}
		logger.Log("component", "consul", "addr", cfg.consulAddr, "token", token.String())
		ms.reach = discovery.NewReachability(log.With(logger, "component", "consul"))
		m.watchConsul(ms.reach)
		advertise, err := discovery.AdvertiseAddr(cfg.advertise, cfg.consulHostPort(), bound)
		if err != nil {
			return nil, err
		}
		ms.registrar, err = discovery.NewRegistrar(client, discovery.Registration{
			Name:            cfg.serviceName,
			Advertise:       advertise,
			AskAgent:        cfg.advertise == "",
			Tags:            cfg.tags(),
			Version:         version,
			CheckInterval:   cfg.checkInterval,
			CheckTimeout:    cfg.checkTimeout,
			DeregisterAfter: cfg.deregisterAfter,
		}, discovery.RegistrarOptions{
			Reach:      ms.reach,
			Registered: m.registered,
			Failures:   m.consulFailures,
			Logger:     log.With(logger, "component", "registrar"),
		})
		if err != nil {
			return nil, err
		}
		self = ms.registrar.Advertise
	}

	// Where the instances come from.
	if cfg.proxy != nil {
		ms.instancer = sd.FixedInstancer(cfg.proxy)
		if client == nil {
			logger.Log("msg", "static upstreams from -proxy; not using Consul", "upstreams", len(cfg.proxy))
		}
	} else {
		ms.consul = discovery.NewInstancer(client, cfg.upstreamService(), splitList(cfg.proxyTags), discovery.InstancerOptions{
			Reach:     ms.reach,
			Failures:  m.consulFailures,
			Logger:    log.With(logger, "component", "instancer"),
			Authorize: authorize,
		})
		ms.instancer = ms.consul
		ms.stopWarn = discovery.WarnLoopback(ms.instancer, self, log.With(logger, "component", "advertise"))
	}

	// One guarded client endpoint per instance; this member's own instance
	// is called in-process.
	upstreams := transport.NewUpstreamFactory(transport.UpstreamOptions{
		Self:            self,
		Local:           transport.MakeUppercaseEndpoint(local),
		Client:          &http.Client{Transport: transport.NewHTTPTransport(cfg.maxConnsPerHost)},
		RateLimit:       cfg.rateLimit,
		RateBurst:       cfg.rateBurst,
		BreakerFailures: uint32(cfg.breakerFailures),
		BreakerTimeout:  cfg.breakerTimeout,
		BreakerChanges:  m.breakerChanges,
		Logger:          log.With(logger, "component", "proxy"),
	})
	ms.pool = lb.NewPool(ms.instancer, func(instance string) (endpoint.Endpoint, lb.Health, error) {
		e, guard, err := upstreams(instance)
		if err != nil {
			return nil, nil, err
		}
		return e, guard, nil
	}, log.With(logger, "component", "pool"))
	m.watchPool(ms.pool)

	ms.forward = lb.Retry(newBalancer(ms.pool), lb.RetryOptions{
		MaxAttempts:    cfg.maxAttempts,
		Timeout:        cfg.proxyTimeout,
		AttemptTimeout: cfg.attemptTimeout,
		Budget:         lb.NewBudget(cfg.retryRatio, cfg.retryMin),
		Attempts:       m.attempts,
	})
	return ms, nil
}

// The Guard of an upstream is what the pool sees as its health.
var _ lb.Health = (*transport.Guard)(nil)

// Forwarder adapts the retrying endpoint to the proxying middleware.
func (ms *mesh) Forwarder() service.Forwarder {
	return func(ctx context.Context, s string) (string, error) {
		response, err := ms.forward(ctx, transport.UppercaseRequest{S: s})
		if errors.Is(err, lb.ErrNoEndpoints) {
			return "", fmt.Errorf("%w: %w", service.ErrNoUpstreams, err)
		}
		if err != nil {
			return "", err
		}
		r := response.(transport.UppercaseResponse)
		return r.V, r.Err
	}
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
	if ms.stopWarn != nil {
		ms.stopWarn()
	}
	ms.pool.Close()
	ms.instancer.Stop()
}

// view is the body of GET /debug/mesh.
func (ms *mesh) view() meshView {
	v := meshView{Upstreams: ms.pool.Snapshot()}
	if ms.registrar != nil {
		v.ID = ms.registrar.ID()
		v.Advertise = ms.registrar.Advertise()
		v.Registered = ms.registrar.Registered()
		v.ConsulError = ms.registrar.LastError()
	}
	if ms.reach != nil {
		v.ConsulReachable = !ms.reach.Down()
	}
	if ms.consul != nil {
		v.DiscoveryError = ms.consul.LastError()
	}
	return v
}
