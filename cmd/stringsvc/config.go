package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/kitmesh/stringsvc/discovery"
	"github.com/kitmesh/stringsvc/discovery/lb"
	"github.com/kitmesh/stringsvc/transport"
)

// version is set at link time with -ldflags "-X main.version=...".
var version = "dev"

// envPrefix prefixes the environment variable of every flag: -http.addr
// falls back to STRINGSVC_HTTP_ADDR.
const envPrefix = "STRINGSVC_"

// consulNone as -consul.addr runs the member without Consul: standalone,
// or forwarding to the static -proxy list.
const consulNone = "none"

// consulDefault is Consul's own default agent address.
const consulDefault = "127.0.0.1:8500"

// The default listen addresses. A Connect member's client listener is on
// loopback, as an application behind a sidecar is: the mesh port is its
// only door to the network, and its operator's pages move to the admin
// listener, which serves no request of the service.
const (
	defaultHTTPAddr  = ":8080"
	privateHTTPAddr  = "127.0.0.1:8080"
	defaultAdminAddr = ":9100"
)

// aliasOf returns the flag that a flag kept for Go kit's stringsvc
// tutorial stands for. An alias has no environment variable of its own.
func aliasOf(name string) (target string, ok bool) {
	switch name {
	case "listen":
		return "http.addr", true
	}
	return "", false
}

type config struct {
	httpAddr     string
	httpPublic   bool
	adminAddr    string
	maxInFlight  int
	advertise    string
	maxBodyBytes int64
	logRequests  bool

	consulAddr      string
	consulTokenFile string
	consulToken     string // from CONSUL_HTTP_TOKEN; never printed
	serviceName     string
	serviceTags     string
	checkInterval   time.Duration
	checkTimeout    time.Duration
	deregisterAfter time.Duration

	proxy           []string // static upstreams; nil means discover them
	proxyService    string
	proxyTags       string
	debugDelay      time.Duration
	balancer        string
	maxAttempts     int
	proxyTimeout    time.Duration
	attemptTimeout  time.Duration
	retryRatio      float64
	retryMin        float64
	rateLimit       float64
	rateBurst       int
	breakerFailures uint
	breakerTimeout  time.Duration
	proxyTransport  string // deprecated, "direct" only
	maxConnsPerHost int

	meshAddr string
	meshTLS  string // meshTLSOff or meshTLSConnect
	authzTTL time.Duration

	drain           time.Duration
	shutdownTimeout time.Duration
}

// The values of -mesh.tls.
const (
	meshTLSOff     = "off"
	meshTLSConnect = "connect"
)

func envName(flagName string) string {
	r := strings.NewReplacer(".", "_", "-", "_")
	return envPrefix + strings.ToUpper(r.Replace(flagName))
}

// parseConfig reads flags, then fills every flag not given on the command
// line from its environment variable.
func parseConfig(args []string, getenv func(string) string, output io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("stringsvc", flag.ContinueOnError)
	fs.SetOutput(output)

	fs.StringVar(&c.httpAddr, "http.addr", "", "HTTP listen address for clients (default "+defaultHTTPAddr+"; "+privateHTTPAddr+" for a member with -mesh.tls connect, see -http.public)")
	fs.StringVar(&c.httpAddr, "listen", "", "alias of -http.addr, as in Go kit's stringsvc tutorial")
	fs.BoolVar(&c.httpPublic, "http.public", false, "with -mesh.tls connect, let -http.addr listen beyond loopback: its callers are not authenticated and intentions do not apply to them (an edge's is always public: it is the mesh's ingress)")
	fs.StringVar(&c.advertise, "advertise", "", "host:port registered in Consul (default: the local address of the route to Consul, and the bound port)")
	fs.StringVar(&c.adminAddr, "admin.addr", "", "optional listener for /health, /metrics and /debug/* (default: served on -http.addr; "+defaultAdminAddr+" when -http.addr is loopback-only with -mesh.tls connect, and Consul checks /health there)")
	fs.IntVar(&c.maxInFlight, "http.max-inflight", transport.DefaultMaxInFlight, "requests served at once; more get 503 with Retry-After")
	fs.Int64Var(&c.maxBodyBytes, "http.max-body", transport.DefaultMaxBodyBytes, "largest request body in bytes; larger ones get 413")
	fs.BoolVar(&c.logRequests, "log.requests", true, "log every request served by this member")

	fs.StringVar(&c.consulAddr, "consul.addr", "", `Consul agent address (default $CONSUL_HTTP_ADDR, then `+consulDefault+`, or "none" when -proxy is given); "none" runs without Consul`)
	fs.StringVar(&c.consulTokenFile, "consul.token-file", getenv("CONSUL_HTTP_TOKEN_FILE"), "file holding the Consul ACL token, read again when it changes and after a 403 (default $CONSUL_HTTP_TOKEN_FILE; else $CONSUL_HTTP_TOKEN is used)")
	fs.StringVar(&c.serviceName, "service.name", "stringsvc", "service name to register and discover")
	fs.StringVar(&c.serviceTags, "service.tags", "", "comma-separated tags to register")
	fs.DurationVar(&c.checkInterval, "check.interval", 2*time.Second, "Consul health check interval")
	fs.DurationVar(&c.checkTimeout, "check.timeout", time.Second, "Consul health check timeout")
	fs.DurationVar(&c.deregisterAfter, "check.deregister-after", time.Minute, "Consul removes a member whose check stays critical this long")

	fs.Func("proxy", "comma-separated static upstreams (host:port or URL) instead of discovery, as in Go kit's stringsvc tutorial", func(v string) error {
		c.proxy = splitList(v)
		for _, p := range c.proxy {
			if _, err := transport.ParseInstance(p); err != nil {
				return err
			}
		}
		return nil
	})
	fs.StringVar(&c.proxyService, "proxy.service", "", "service to forward Uppercase to (default: -service.name); another name makes this member an edge that always forwards")
	fs.StringVar(&c.proxyTags, "proxy.tags", "", "comma-separated tags an instance must have to receive forwarded requests")
	fs.DurationVar(&c.debugDelay, "debug.delay", 0, "delay added to every request this member serves itself (for benchmarks and fault drills)")
	fs.StringVar(&c.balancer, "proxy.balancer", lb.BalancerNames()[0], "balancer: "+strings.Join(lb.BalancerNames(), ", ")+" (p2c is power of two choices over peak EWMA latency)")
	fs.IntVar(&c.maxAttempts, "proxy.max-attempts", 3, "attempts per forwarded request, each on a different member")
	fs.DurationVar(&c.proxyTimeout, "proxy.timeout", time.Second, "overall timeout of a forwarded request (never beyond the caller's deadline)")
	fs.DurationVar(&c.attemptTimeout, "proxy.attempt-timeout", 250*time.Millisecond, "timeout of one attempt")
	fs.Float64Var(&c.retryRatio, "proxy.retry-ratio", 0.2, "retry budget: retries allowed per request")
	fs.Float64Var(&c.retryMin, "proxy.retry-min", 10, "retry budget: retries allowed per second whatever the traffic")
	fs.Float64Var(&c.rateLimit, "proxy.rate", 5000, "requests per second forwarded to one upstream; 0 is no limit")
	fs.IntVar(&c.rateBurst, "proxy.burst", 500, "burst above -proxy.rate")
	fs.UintVar(&c.breakerFailures, "proxy.breaker-failures", 5, "consecutive failures that open an upstream's circuit breaker")
	fs.DurationVar(&c.breakerTimeout, "proxy.breaker-timeout", 5*time.Second, "how long a breaker stays open before a trial request")
	fs.IntVar(&c.maxConnsPerHost, "proxy.idle-conns", 256, "idle keep-alive connections kept per upstream")
	fs.StringVar(&c.proxyTransport, "proxy.transport", "direct", `deprecated: "direct", the only HTTP client of forwards; "net/http" was removed`)

	fs.StringVar(&c.meshTLS, "mesh.tls", meshTLSOff, `member-to-member traffic: "off" (plain HTTP to the peers' -http.addr) or "connect" (mutual TLS with Consul Connect identities on -mesh.addr, intentions enforced)`)
	fs.StringVar(&c.meshAddr, "mesh.addr", ":8443", "mutual-TLS listener for member-to-member traffic, with -mesh.tls connect")
	fs.DurationVar(&c.authzTTL, "mesh.authz-cache", 2*time.Second, "how long an intention decision is cached: a new deny takes effect within this time")

	fs.DurationVar(&c.drain, "shutdown.drain", time.Second, "after deregistering, wait this long for peers to notice before closing")
	fs.DurationVar(&c.shutdownTimeout, "shutdown.timeout", 10*time.Second, "deadline for in-flight requests at shutdown")

	fs.Usage = func() {
		fmt.Fprintf(output, "Usage: stringsvc [flags]\n       stringsvc healthcheck [-http.addr addr]\n       stringsvc call [-addr host:port] uppercase|count STRING\n\n")
		fmt.Fprintf(output, "Every flag falls back to an environment variable, e.g. -http.addr to %s.\n\n", envName("http.addr"))
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) {
		set[f.Name] = true
		if target, ok := aliasOf(f.Name); ok {
			set[target] = true
		}
	})
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if _, alias := aliasOf(f.Name); alias || set[f.Name] {
			return
		}
		if v := getenv(envName(f.Name)); v != "" {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %w", envName(f.Name), v, err))
			}
		}
	})
	if err := errors.Join(errs...); err != nil {
		return c, err
	}
	if c.consulAddr == "" {
		c.consulAddr = getenv("CONSUL_HTTP_ADDR")
	}
	c.consulToken = getenv("CONSUL_HTTP_TOKEN")
	if c.consulAddr == "" {
		c.consulAddr = consulDefault
		if c.proxy != nil {
			c.consulAddr = consulNone
		}
	}
	if c.httpAddr == "" {
		c.httpAddr = defaultHTTPAddr
		if c.privateHTTP() {
			c.httpAddr = privateHTTPAddr
		}
	}
	if c.adminAddr == "" && c.privateHTTP() {
		c.adminAddr = defaultAdminAddr
	}
	return c, c.validate()
}

func (c config) validate() error {
	var errs []error
	if c.maxBodyBytes <= 0 {
		errs = append(errs, errors.New("-http.max-body must be positive"))
	}
	if c.maxInFlight < 1 {
		errs = append(errs, errors.New("-http.max-inflight must be at least 1"))
	}
	if err := discovery.ValidServiceName(c.serviceName); err != nil {
		errs = append(errs, fmt.Errorf("-service.name: %w", err))
	}
	if c.proxyService != "" {
		if err := discovery.ValidServiceName(c.proxyService); err != nil {
			errs = append(errs, fmt.Errorf("-proxy.service: %w", err))
		}
	}
	if _, err := lb.ParseBalancer(c.balancer); err != nil {
		errs = append(errs, fmt.Errorf("-proxy.balancer: %w", err))
	}
	if c.maxAttempts < 1 {
		errs = append(errs, errors.New("-proxy.max-attempts must be at least 1"))
	}
	if c.proxyTimeout <= 0 || c.attemptTimeout <= 0 {
		errs = append(errs, errors.New("-proxy.timeout and -proxy.attempt-timeout must be positive"))
	}
	if c.rateLimit < 0 || math.IsNaN(c.rateLimit) || c.rateLimit > 0 && c.rateBurst < 1 {
		errs = append(errs, errors.New("-proxy.rate must not be negative (0 is no limit), and -proxy.burst at least 1 with a limit"))
	}
	if c.breakerFailures < 1 || c.breakerFailures > math.MaxUint32 {
		errs = append(errs, fmt.Errorf("-proxy.breaker-failures must be between 1 and %d", uint32(math.MaxUint32)))
	}
	if c.breakerTimeout <= 0 {
		errs = append(errs, errors.New("-proxy.breaker-timeout must be positive"))
	}
	if c.retryRatio < 0 || c.retryMin < 0 || math.IsNaN(c.retryRatio) || math.IsNaN(c.retryMin) {
		errs = append(errs, errors.New("-proxy.retry-ratio and -proxy.retry-min must not be negative"))
	}
	if c.shutdownTimeout <= 0 {
		errs = append(errs, errors.New("-shutdown.timeout must be positive"))
	}
	if c.drain < 0 {
		errs = append(errs, errors.New("-shutdown.drain must not be negative"))
	}
	if c.maxConnsPerHost < 1 {
		errs = append(errs, errors.New("-proxy.idle-conns must be at least 1"))
	}
	if c.proxyTransport != "direct" {
		errs = append(errs, fmt.Errorf("-proxy.transport %q: removed; forwards use the direct transport, since Go's http.Transport can hand one request another's answer (see the README, \"A peer never frames another request's answer\")", c.proxyTransport))
	}
	switch c.meshTLS {
	case meshTLSOff:
	case meshTLSConnect:
		if !c.registers() || c.proxy != nil {
			errs = append(errs, errors.New("-mesh.tls connect needs Consul, and discovery rather than a static -proxy list"))
		}
		if c.authzTTL <= 0 {
			errs = append(errs, errors.New("-mesh.authz-cache must be positive"))
		}
		if c.privateHTTP() && !loopbackAddr(c.httpAddr) {
			errs = append(errs, fmt.Errorf("-http.addr %q listens beyond loopback, where callers are not authenticated and intentions do not apply: with -mesh.tls connect, peers come through -mesh.addr; keep -http.addr on loopback (the default, %s), or set -http.public to expose it on purpose", c.httpAddr, privateHTTPAddr))
		}
	default:
		errs = append(errs, fmt.Errorf("-mesh.tls: want %q or %q, have %q", meshTLSOff, meshTLSConnect, c.meshTLS))
	}
	if c.checkInterval <= 0 || c.checkTimeout <= 0 {
		errs = append(errs, errors.New("-check.interval and -check.timeout must be positive"))
	} else if c.checkTimeout > c.checkInterval {
		errs = append(errs, fmt.Errorf("-check.timeout %v is longer than -check.interval %v: Consul would start a check before the last one timed out", c.checkTimeout, c.checkInterval))
	}
	return errors.Join(errs...)
}

func (c config) tags() []string { return splitList(c.serviceTags) }

// privateHTTP reports whether the client listener must stay on loopback:
// a Connect member's, unless -http.public exposes it. An edge's is the
// mesh's ingress, public by design.
func (c config) privateHTTP() bool { return c.connect() && !c.edge() && !c.httpPublic }

// plainNote says who may call the client listener, for its start line and
// /debug/mesh.
func (c config) plainNote() string {
	switch {
	case c.privateHTTP():
		return "loopback only: the mesh port is this member's only door to the network"
	case c.connect() && c.edge():
		return "the mesh's ingress: callers are not authenticated; the edge's own calls are subject to intentions"
	case c.connect():
		return "exposed by -http.public: callers are not authenticated and intentions do not apply to them"
	default:
		return "plain HTTP: callers are not authenticated"
	}
}

// loopbackAddr reports whether a listen address binds loopback only.
func loopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// connect reports whether members talk mutual TLS with Connect identities.
func (c config) connect() bool { return c.meshTLS == meshTLSConnect }

// edge reports whether the member forwards to another service than its
// own: it then cannot stand in for its upstreams.
func (c config) edge() bool { return c.upstreamService() != c.serviceName }

// meshed reports whether the member forwards at all: it has Consul to
// discover peers in, or a static -proxy list.
func (c config) meshed() bool { return c.consulAddr != consulNone || c.proxy != nil }

// registers reports whether the member registers itself in Consul.
func (c config) registers() bool { return c.consulAddr != consulNone }

func (c config) upstreamService() string {
	if c.proxyService != "" {
		return c.proxyService
	}
	return c.serviceName
}

func splitList(s string) []string {
	var tags []string
	for _, t := range strings.Split(s, ",") {
		if t = strings.TrimSpace(t); t != "" {
			tags = append(tags, t)
		}
	}
	return tags
}

// consulHostPort strips a scheme from the Consul address, as
// CONSUL_HTTP_ADDR may carry one.
func (c config) consulHostPort() string {
	a := c.consulAddr
	if i := strings.Index(a, "://"); i >= 0 {
		a = a[i+3:]
	}
	return strings.TrimSuffix(a, "/")
}
