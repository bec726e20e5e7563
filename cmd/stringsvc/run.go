package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/sd"
	"github.com/go-kit/kit/sd/lb"
	"github.com/go-kit/log"
	"github.com/hashicorp/consul/api"
	oklog "github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/kitmesh/stringsvc/discovery"
	"github.com/kitmesh/stringsvc/service"
	"github.com/kitmesh/stringsvc/transport"
)

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "healthcheck":
			return healthcheck(ctx, args[1:], getenv, stderr)
		case "call":
			return call(ctx, args[1:], getenv, stdout, stderr)
		}
	}
	cfg, err := parseConfig(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}

	var logger, requestLogger log.Logger
	{
		sink := newLogSink(stderr)
		stop := make(chan struct{})
		flushed := make(chan struct{})
		go func() { sink.FlushEvery(flushEvery, stop); close(flushed) }()
		defer func() { close(stop); <-flushed }()
		logger = log.NewLogfmtLogger(sink)
		logger = log.With(logger, "ts", log.DefaultTimestampUTC, "caller", log.DefaultCaller)
		// Request lines are buffered and carry no caller: it would always
		// be the logging middleware, and runtime.Caller costs per request.
		requestLogger = log.With(log.NewLogfmtLogger(sink.Buffered()), "ts", log.DefaultTimestampUTC)
	}

	registry := prometheus.NewRegistry()
	registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	m := newMetrics(registry)

	// Bind first: the advertised port is the one we actually got, and
	// Consul's check must never see a registered but unbound member.
	ln, err := net.Listen("tcp", cfg.httpAddr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.httpAddr, err)
	}
	defer ln.Close()
	logger.Log("transport", "HTTP", "addr", ln.Addr().String(), "msg", "HTTP")

	// local is this member doing the work itself; it is what the proxy
	// calls when it picks its own instance, and what serves forwarded and
	// fallback requests.
	var local service.StringService
	{
		local = service.NewBasicService()
		if cfg.logRequests {
			local = service.LoggingMiddleware(requestLogger)(local)
		}
		local = service.InstrumentingMiddleware(m.requests, m.duration, m.countResult)(local)
		if cfg.debugDelay > 0 {
			local = delayMiddleware(cfg.debugDelay)(local)
		}
	}

	var consulClient *api.Client
	var reach *discovery.Reachability
	if cfg.consulAddr != consulNone {
		conf := api.DefaultConfig() // honours CONSUL_HTTP_TOKEN and the TLS variables
		conf.Address = cfg.consulAddr
		if consulClient, err = api.NewClient(conf); err != nil {
			return fmt.Errorf("consul client: %w", err)
		}
		reach = discovery.NewReachability(log.With(logger, "component", "consul"))
		m.watchConsul(registry, reach)
	}

	var advertise string
	if consulClient != nil {
		if advertise, err = discovery.AdvertiseAddr(cfg.advertise, cfg.consulHostPort(), ln.Addr()); err != nil {
			return err
		}
	}

	var (
		pool *discovery.Pool
		svc  = local
	)
	if consulClient != nil {
		pool = discovery.NewPool(log.With(logger, "component", "pool"))
		m.watchPool(registry, pool)
		httpClient := &http.Client{Transport: transport.NewHTTPTransport(cfg.maxConnsPerHost)}
		factory := transport.NewUpstreamFactory(transport.UpstreamOptions{
			Self:            advertise,
			Local:           transport.MakeUppercaseEndpoint(local),
			Client:          httpClient,
			RateLimit:       cfg.rateLimit,
			RateBurst:       cfg.rateBurst,
			BreakerFailures: uint32(cfg.breakerFailures),
			BreakerTimeout:  cfg.breakerTimeout,
			BreakerChanges:  m.breakerChanges,
			Logger:          log.With(logger, "component", "proxy"),
		})
		instancer := discovery.NewInstancer(consulClient, reach, log.With(logger, "component", "instancer"), cfg.upstreamService(), splitList(cfg.proxyTags))
		defer instancer.Stop()
		// No InvalidateOnError: while Consul is away the last known set is
		// the best one we have.
		endpointer := sd.NewEndpointer(instancer, pool.Factory(factory), log.With(logger, "component", "endpointer"))
		defer endpointer.Close()
		balancer, err := discovery.NewBalancer(cfg.balancer, pool)
		if err != nil {
			return err
		}
		forward := discovery.Retry(balancer, discovery.RetryOptions{
			MaxAttempts:    cfg.maxAttempts,
			Timeout:        cfg.proxyTimeout,
			AttemptTimeout: cfg.attemptTimeout,
			Budget:         discovery.NewBudget(cfg.retryRatio, cfg.retryMin),
			Attempts:       m.attempts,
		})
		svc = service.ProxyingMiddleware(makeForwarder(forward), m.fallbacks)(local)
	}

	var registrar *discovery.Registrar
	if consulClient != nil {
		registrar, err = discovery.NewRegistrar(consulClient, discovery.Registration{
			Name:            cfg.serviceName,
			Advertise:       advertise,
			Tags:            cfg.tags(),
			Version:         version,
			CheckInterval:   cfg.checkInterval,
			CheckTimeout:    cfg.checkTimeout,
			DeregisterAfter: cfg.deregisterAfter,
		}, reach, m.registered, log.With(logger, "component", "registrar"))
		if err != nil {
			return err
		}
	}

	var server *http.Server
	{
		handler := transport.NewHTTPHandler(transport.MakeServerEndpoints(svc), transport.HandlerOptions{
			MaxBodyBytes: cfg.maxBodyBytes,
			Responses:    m.responses,
			Extra: map[string]http.Handler{
				"/metrics":    promhttp.HandlerFor(registry, promhttp.HandlerOpts{}),
				"/debug/mesh": meshHandler(registrar, reach, pool),
			},
		})
		server = &http.Server{
			Handler:           handler,
			ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout:       30 * time.Second,
			WriteTimeout:      30 * time.Second,
			IdleTimeout:       120 * time.Second,
			MaxHeaderBytes:    64 << 10,
			ErrorLog:          nil,
		}
	}

	var g oklog.Group
	{
		g.Add(func() error {
			if err := server.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		}, func(error) {
			// The drain protocol: leave Consul first, give peers time to
			// see it, then let in-flight requests finish.
			if registrar != nil {
				registrar.Stop()
				dctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				err := registrar.Deregister(dctx)
				cancel()
				if err != nil {
					logger.Log("during", "shutdown", "err", err)
				}
				time.Sleep(cfg.drain)
			}
			sctx, cancel := context.WithTimeout(context.Background(), cfg.shutdownTimeout)
			defer cancel()
			if err := server.Shutdown(sctx); err != nil {
				logger.Log("during", "shutdown", "err", err)
			}
		})
	}
	if registrar != nil {
		g.Add(func() error {
			return registrar.Run()
		}, func(error) {
			registrar.Stop()
		})
	}
	{
		g.Add(oklog.SignalHandler(ctx, syscall.SIGINT, syscall.SIGTERM))
	}
	err = g.Run()
	var sig oklog.SignalError
	if errors.As(err, &sig) || errors.Is(err, context.Canceled) {
		logger.Log("exit", fmt.Sprint(err))
		return nil
	}
	return err
}

// makeForwarder adapts the retrying endpoint to the service's Forwarder.
func makeForwarder(e endpoint.Endpoint) service.Forwarder {
	return func(ctx context.Context, s string) (string, error) {
		response, err := e(ctx, transport.UppercaseRequest{S: s})
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

// healthcheck asks a member on this host for /health. It exists for
// container health checks in images that have no curl.
func healthcheck(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	fs := flag.NewFlagSet("healthcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addrDefault := getenv(envName("http.addr"))
	if addrDefault == "" {
		addrDefault = ":8080"
	}
	addr := fs.String("http.addr", addrDefault, "address of the member to check")
	timeout := fs.Duration("timeout", 2*time.Second, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	host, port, err := net.SplitHostPort(*addr)
	if err != nil {
		return fmt.Errorf("-http.addr %q: %w", *addr, err)
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+net.JoinHostPort(host, port)+"/health", nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Transport: &http.Transport{Proxy: nil}}).Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: %s answered %s", strings.TrimPrefix(req.URL.String(), "http://"), resp.Status)
	}
	return nil
}
