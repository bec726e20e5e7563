package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	stdlog "log"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	"github.com/go-kit/log"
	oklog "github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/kitmesh/stringsvc/internal/logsink"
	"github.com/kitmesh/stringsvc/internal/telemetry"
	"github.com/kitmesh/stringsvc/service"
	"github.com/kitmesh/stringsvc/transport"
	"github.com/kitmesh/stringsvc/transport/endpoints"
)

// requestLogger is the logger of request lines, written to w. Request
// lines carry no caller: it would always be the logging middleware, and
// runtime.Caller costs per request. Sanitize comes before the timestamp
// is added, which needs no sanitizing: after, it formatted the time twice
// per line.
func requestLogger(w io.Writer) log.Logger {
	return logsink.Sanitize(log.With(log.NewLogfmtLogger(w), "ts", log.DefaultTimestampUTC))
}

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

	var logs loggers
	{
		sink := logsink.New(stderr)
		stop := make(chan struct{})
		flushed := make(chan struct{})
		go func() { sink.FlushPeriodically(logsink.FlushEvery, stop); close(flushed) }()
		defer func() { close(stop); <-flushed }()
		logs.ops = log.With(logsink.Sanitize(log.NewLogfmtLogger(sink)), "ts", log.DefaultTimestampUTC, "caller", log.DefaultCaller)
		logs.requests = requestLogger(sink.Buffered())
		// What packages print with the standard library's logger goes
		// into the same stream, bounded, instead of raw to stderr.
		out, flags := stdlog.Writer(), stdlog.Flags()
		stdlog.SetFlags(0)
		stdlog.SetOutput(logsink.NewErrorLog(log.With(logs.ops, "component", "stdlog"), 10).Writer())
		defer func() { stdlog.SetOutput(out); stdlog.SetFlags(flags) }()
	}

	registry := prometheus.NewRegistry()
	registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)

	// Bind first: the advertised port is the one we actually got, and
	// Consul's check must never see a registered but unbound member.
	ln, err := net.Listen("tcp", cfg.httpAddr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.httpAddr, err)
	}
	defer ln.Close()
	if cfg.privateHTTP() && !ln.Addr().(*net.TCPAddr).IP.IsLoopback() {
		// "localhost" is a name: whatever it resolved to, the address
		// bound is what counts.
		return fmt.Errorf("-http.addr %s bound %s, which is not loopback; set -http.public to expose it on purpose", cfg.httpAddr, ln.Addr())
	}
	logs.ops.Log("transport", "HTTP", "addr", ln.Addr().String(), "msg", "HTTP", "callers", cfg.plainNote())
	at := bound{http: ln.Addr()}
	var adminLn net.Listener
	if cfg.adminAddr != "" {
		if adminLn, err = net.Listen("tcp", cfg.adminAddr); err != nil {
			return fmt.Errorf("listen on %s: %w", cfg.adminAddr, err)
		}
		defer adminLn.Close()
		at.admin = adminLn.Addr()
		logs.ops.Log("transport", "HTTP", "addr", adminLn.Addr().String(), "msg", "admin: /health, /metrics and /debug/*")
	}
	var meshLn net.Listener
	if cfg.connect() {
		if meshLn, err = net.Listen("tcp", cfg.meshAddr); err != nil {
			return fmt.Errorf("listen on %s: %w", cfg.meshAddr, err)
		}
		defer meshLn.Close()
		at.mesh = meshLn.Addr()
		logs.ops.Log("transport", "HTTPS", "addr", meshLn.Addr().String(), "msg", "mesh, mutual TLS with Consul Connect identities")
	}

	tr, err := telemetry.NewTracing(ctx, getenv, cfg.serviceName, telemetry.Hostname()+"/"+ln.Addr().String(), version)
	if err != nil {
		return err
	}
	defer func() {
		// Flush the spans still buffered, within the shutdown timeout.
		ctx, cancel := context.WithTimeout(context.Background(), cfg.shutdownTimeout)
		defer cancel()
		if err := tr.Shutdown(ctx); err != nil {
			logs.ops.Log("during", "shutdown", "err", err)
		}
	}()
	if tr.Exports != "" {
		logs.ops.Log("component", "tracing", "export", "otlp/http", "endpoint", telemetry.RedactURL(tr.Exports))
	}

	mb, err := newMember(cfg, at, logs, registry, tr.Tracing)
	if err != nil {
		return err
	}
	defer mb.close()

	server := newServer(mb.handler, logs.ops)
	servers := []*http.Server{server}
	var g oklog.Group
	if meshLn != nil {
		// The mesh listener: the same endpoints, for callers that the
		// handshake proved to be Connect services of our trust domain
		// and that the intentions allow, checked on every request.
		meshServer := newServer(transport.RequirePeer(mb.handler, mb.mesh.peerCheck), logs.ops)
		servers = append(servers, meshServer)
		tlsLn := mb.mesh.identity.Listener(meshLn)
		g.Add(func() error {
			return serve(meshServer, tlsLn)
		}, func(error) {
			// drain, below, shuts it down with the client listener.
		})
	}
	{
		g.Add(func() error {
			return serve(server, ln)
		}, func(error) {
			drain(servers, mb.mesh, cfg.drain, cfg.shutdownTimeout, logs.ops)
		})
	}
	if adminLn != nil {
		admin := newServer(mb.admin, logs.ops)
		g.Add(func() error {
			return serve(admin, adminLn)
		}, func(error) {
			admin.Close()
		})
	}
	if mb.mesh != nil {
		mb.mesh.addActors(&g)
	}
	{
		g.Add(oklog.SignalHandler(ctx, syscall.SIGINT, syscall.SIGTERM))
	}
	err = g.Run()
	var sig oklog.SignalError
	if errors.As(err, &sig) || errors.Is(err, context.Canceled) {
		logs.ops.Log("exit", fmt.Sprint(err))
		return nil
	}
	return err
}

// newServer returns the http.Server of handler, with every timeout set and
// net/http's own complaints routed into the structured log, rate-limited.
func newServer(handler http.Handler, logger log.Logger) *http.Server {
	return &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          logsink.NewErrorLog(log.With(logger, "component", "http"), 10),
	}
}

// serve serves ln until the server is shut down.
func serve(server *http.Server, ln net.Listener) error {
	if err := server.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// loggers are a member's two log streams: operational lines, written at
// once with their caller, and request lines, buffered.
type loggers struct {
	ops, requests log.Logger
}

// member is one mesh member before it serves: its handler and, unless it
// runs standalone, its mesh.
type member struct {
	handler http.Handler
	admin   http.Handler // nil without -admin.addr
	mesh    *mesh        // nil when standalone
}

// newMember builds a member in the shape of Go kit's addsvc: the local
// service, then the optional mesh around it, then the HTTP handler. run()
// and the in-process benchmarks both build members with it. bound is the
// address the member's listener got.
func newMember(cfg config, at bound, logs loggers, registry *prometheus.Registry, tr transport.Tracing) (*member, error) {
	m := telemetry.NewMetrics(registry)

	// The local service: this member doing the work itself. It is what
	// the balancer calls when it picks this member's own instance, and
	// what serves forwarded and fallback requests.
	var local service.StringService
	{
		local = service.NewBasicService()
		local = service.InstrumentingMiddleware(m.Requests, m.Duration, m.CountResult)(local)
		if cfg.debugDelay > 0 {
			local = service.DelayMiddleware(cfg.debugDelay)(local) // drills only
		}
	}

	// The optional mesh: forward Uppercase to the instances it finds.
	mb := &member{}
	svc := local
	if cfg.meshed() {
		ms, err := newMesh(cfg, local, at, m, logs.ops, tr)
		if err != nil {
			return nil, err
		}
		mb.mesh = ms
		svc = service.ProxyingMiddleware(ms.Forwarder(), service.ProxyOptions{
			Fallbacks:       m.Fallbacks,
			OnDenied:        cfg.onDenied(),
			OnFallback:      telemetry.FallbackEvent,
			MayServeLocally: ms.mayServeLocally(),
		})(local)
	}

	// One line per request this member answers, wherever the work was
	// done, with the request's trace and span IDs.
	if cfg.logRequests {
		svc = service.LoggingMiddleware(logs.requests, telemetry.TraceFields)(svc)
	}

	// The HTTP handlers: the endpoints, and the operator's pages, on the
	// client port or, with -admin.addr, on their own.
	operator := map[string]http.Handler{
		// OpenMetrics when the scraper asks for it: the format that
		// carries the duration histogram's exemplars (trace IDs).
		"/metrics":    promhttp.HandlerFor(registry, promhttp.HandlerOpts{EnableOpenMetrics: true}),
		"/debug/mesh": meshHandler(mb.mesh),
	}
	opts := transport.HandlerOptions{
		MaxBodyBytes: cfg.maxBodyBytes,
		MaxInFlight:  cfg.maxInFlight,
		Responses:    m.Responses,
		Extra:        operator,
		Tracing:      tr,
	}
	if cfg.adminAddr != "" {
		opts.Extra = nil
		mb.admin = transport.NewAdminHandler(operator)
	}
	// The service span of every request: Go kit's endpoint, traced.
	eps := endpoints.New(svc)
	eps.UppercaseEndpoint = tr.Span("stringsvc.uppercase")(eps.UppercaseEndpoint)
	eps.CountEndpoint = tr.Span("stringsvc.count")(eps.CountEndpoint)
	mb.handler = transport.NewHTTPHandler(eps, opts)
	return mb, nil
}

// close stops the member's watches.
func (mb *member) close() {
	if mb.mesh != nil {
		mb.mesh.close()
	}
}

// drain is the shutdown protocol: leave Consul first, give peers drainWait
// to see it (the listeners stay open meanwhile, so nothing is refused),
// then let in-flight requests finish within timeout, on every listener at
// once.
func drain(servers []*http.Server, ms *mesh, drainWait, timeout time.Duration, logger log.Logger) {
	if ms != nil {
		ms.leave(drainWait)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, server := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := server.Shutdown(ctx); err != nil {
				logger.Log("during", "shutdown", "err", err)
			}
		}()
	}
	wg.Wait()
}
