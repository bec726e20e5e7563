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
	"syscall"
	"time"

	"github.com/go-kit/log"
	oklog "github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/kitmesh/stringsvc/internal/logsink"
	"github.com/kitmesh/stringsvc/internal/member"
	"github.com/kitmesh/stringsvc/internal/telemetry"
	"github.com/kitmesh/stringsvc/transport"
)

// newLoggers returns a member's log streams on w, and what flushes and
// restores them. What packages print with the standard library's logger
// goes into the same stream, bounded, instead of raw to stderr.
func newLoggers(w io.Writer) (member.Loggers, func()) {
	sink := logsink.New(w)
	stop := make(chan struct{})
	flushed := make(chan struct{})
	go func() { sink.FlushPeriodically(logsink.FlushEvery, stop); close(flushed) }()
	var logs member.Loggers
	logs.Ops = log.With(logsink.Sanitize(log.NewLogfmtLogger(sink)), "ts", log.DefaultTimestampUTC, "caller", log.DefaultCaller)
	logs.Requests = requestLogger(sink.Buffered())
	out, flags := stdlog.Writer(), stdlog.Flags()
	stdlog.SetFlags(0)
	stdlog.SetOutput(logsink.NewErrorLog(log.With(logs.Ops, "component", "stdlog"), 10).Writer())
	return logs, func() {
		stdlog.SetOutput(out)
		stdlog.SetFlags(flags)
		close(stop)
		<-flushed
	}
}

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

	logs, closeLogs := newLoggers(stderr)
	defer closeLogs()

	registry := prometheus.NewRegistry()
	registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)

	// Bind first: the advertised port is the one we actually got, and
	// Consul's check must never see a registered but unbound member.
	ln, err := listen(cfg.HTTPAddr, logs.Ops, "transport", "HTTP", "msg", "HTTP", "callers", cfg.PlainNote())
	if err != nil {
		return err
	}
	defer ln.Close()
	if cfg.PrivateHTTP() && !ln.Addr().(*net.TCPAddr).IP.IsLoopback() {
		// "localhost" is a name: the address bound is what counts.
		return fmt.Errorf("-http.addr %s bound %s, which is not loopback; set -http.public to expose it on purpose", cfg.HTTPAddr, ln.Addr())
	}
	at := member.Bound{HTTP: ln.Addr()}
	var adminLn, meshLn net.Listener
	if cfg.AdminAddr != "" {
		if adminLn, err = listen(cfg.AdminAddr, logs.Ops, "transport", "HTTP", "msg", "admin: /health, /metrics and /debug/*"); err != nil {
			return err
		}
		defer adminLn.Close()
		at.Admin = adminLn.Addr()
	}
	if cfg.Connect() {
		if meshLn, err = listen(cfg.MeshAddr, logs.Ops, "transport", "HTTPS", "msg", "mesh, mutual TLS with Consul Connect identities"); err != nil {
			return err
		}
		defer meshLn.Close()
		at.Mesh = meshLn.Addr()
	}

	tr, err := telemetry.NewTracing(ctx, getenv, cfg.ServiceName, telemetry.Hostname()+"/"+ln.Addr().String(), version)
	if err != nil {
		return err
	}
	defer func() {
		// Flush the spans still buffered, within the shutdown timeout.
		ctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
		defer cancel()
		if err := tr.Shutdown(ctx); err != nil {
			logs.Ops.Log("during", "shutdown", "err", err)
		}
	}()
	if tr.Exports != "" {
		logs.Ops.Log("component", "tracing", "export", "otlp/http", "endpoint", telemetry.RedactURL(tr.Exports))
	}

	mb, err := member.New(cfg, at, logs, registry, tr.Tracing)
	if err != nil {
		return err
	}
	defer mb.Close()

	// Shutdown is one actor, added first: its interrupt drains the
	// client and mesh servers gracefully before the other actors' run,
	// which close what is left.
	var g oklog.Group
	var servers []*http.Server
	{
		stop := make(chan struct{})
		g.Add(func() error { <-stop; return nil }, func(error) { mb.Drain(servers...); close(stop) })
	}
	servers = append(servers, addServer(&g, mb.Handler, ln, logs.Ops))
	if meshLn != nil {
		servers = append(servers, addServer(&g, mb.MeshHandler(), mb.MeshListener(meshLn), logs.Ops))
	}
	if adminLn != nil {
		addServer(&g, mb.Admin, adminLn, logs.Ops)
	}
	mb.AddActors(&g)
	g.Add(oklog.SignalHandler(ctx, syscall.SIGINT, syscall.SIGTERM))
	err = g.Run()
	var sig oklog.SignalError
	if errors.As(err, &sig) || errors.Is(err, context.Canceled) {
		logs.Ops.Log("exit", fmt.Sprint(err))
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
		ReadTimeout:       transport.DefaultMaxTimeout,
		WriteTimeout:      transport.DefaultMaxTimeout, // no deadline a request carries is longer
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          logsink.NewErrorLog(log.With(logger, "component", "http"), 10),
	}
}

// listen binds addr and logs where, with keyvals.
func listen(addr string, logger log.Logger, keyvals ...interface{}) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	logger.Log(append(keyvals, "addr", ln.Addr().String())...)
	return ln, nil
}

// addServer adds an actor to g that serves handler on ln until the
// server is shut down, and returns the server.
func addServer(g *oklog.Group, handler http.Handler, ln net.Listener, logger log.Logger) *http.Server {
	server := newServer(handler, logger)
	g.Add(func() error {
		if err := server.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}, func(error) { server.Close() })
	return server
}
