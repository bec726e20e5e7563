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
	"github.com/kitmesh/stringsvc/internal/member"
	"github.com/kitmesh/stringsvc/transport"
	"github.com/kitmesh/stringsvc/transport/limit"
)

// version is set at link time with -ldflags "-X main.version=...".
var version = "dev"

// envPrefix prefixes the environment variable of every flag: -http.addr
// falls back to STRINGSVC_HTTP_ADDR.
const envPrefix = "STRINGSVC_"

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

// config is a member's settings, as the flags give them.
type config = member.Config

// aliasOf returns the flag that a flag kept for Go kit's stringsvc
// tutorial stands for. An alias has no environment variable of its own.
func aliasOf(name string) (target string, ok bool) {
	switch name {
	case "listen":
		return "http.addr", true
	}
	return "", false
}

func envName(flagName string) string {
	r := strings.NewReplacer(".", "_", "-", "_")
	return envPrefix + strings.ToUpper(r.Replace(flagName))
}

// parseConfig reads flags, then fills every flag not given on the command
// line from its environment variable.
func parseConfig(args []string, getenv func(string) string, output io.Writer) (config, error) {
	c := config{Version: version}
	fs := flag.NewFlagSet("stringsvc", flag.ContinueOnError)
	fs.SetOutput(output)

	fs.StringVar(&c.HTTPAddr, "http.addr", "", "HTTP listen address for clients (default "+defaultHTTPAddr+"; "+privateHTTPAddr+" for a member with -mesh.tls connect, see -http.public)")
	fs.StringVar(&c.HTTPAddr, "listen", "", "alias of -http.addr, as in Go kit's stringsvc tutorial")
	fs.BoolVar(&c.HTTPPublic, "http.public", false, "with -mesh.tls connect, let -http.addr listen beyond loopback: its callers are not authenticated and intentions do not apply to them (an edge's is always public: it is the mesh's ingress)")
	fs.StringVar(&c.Advertise, "advertise", "", "host:port registered in Consul (default: the local address of the route to Consul, and the bound port)")
	fs.StringVar(&c.AdminAddr, "admin.addr", "", "optional listener for /health, /metrics and /debug/* (default: served on -http.addr; "+defaultAdminAddr+" when -http.addr is loopback-only with -mesh.tls connect, and Consul checks /health there)")
	fs.IntVar(&c.MaxInFlight, "http.max-inflight", transport.DefaultMaxInFlight, "hard ceiling on requests served at once, whatever -http.limiter says; more wait in the queue (-http.max-queue) or get a fast 503 with Retry-After")
	fs.IntVar(&c.MaxQueue, "http.max-queue", transport.DefaultMaxQueue, "requests that may wait for a slot past the limit; more get a fast 503 (0: none wait)")
	fs.DurationVar(&c.MaxWait, "http.max-wait", transport.DefaultMaxWait, "longest wait for a slot, never past the request's deadline; then a 503")
	fs.StringVar(&c.Limiter, "http.limiter", limit.Names()[0], "concurrency limit that follows measured latency: "+strings.Join(limit.Names(), ", ")+" (fixed is -http.max-inflight alone)")
	fs.Int64Var(&c.MaxBodyBytes, "http.max-body", transport.DefaultMaxBodyBytes, "largest request body in bytes; larger ones get 413")
	fs.BoolVar(&c.LogRequests, "log.requests", true, "log every request served by this member")

	fs.StringVar(&c.ConsulAddr, "consul.addr", "", `Consul agent address (default $CONSUL_HTTP_ADDR, then `+consulDefault+`, or "none" when -proxy is given); "none" runs without Consul`)
	fs.StringVar(&c.ConsulTokenFile, "consul.token-file", getenv("CONSUL_HTTP_TOKEN_FILE"), "file holding the Consul ACL token, read again when it changes and after a 403 (default $CONSUL_HTTP_TOKEN_FILE; else $CONSUL_HTTP_TOKEN is used)")
	fs.StringVar(&c.ServiceName, "service.name", "stringsvc", "service name to register and discover")
	fs.StringVar(&c.ServiceTags, "service.tags", "", "comma-separated tags to register")
	fs.StringVar(&c.Zone, "service.zone", "", "this member's zone, registered in service meta \"zone\" (default: its Consul agent's node meta \"zone\"; none: no zone preference)")
	fs.DurationVar(&c.CheckInterval, "check.interval", 2*time.Second, "Consul health check interval")
	fs.DurationVar(&c.CheckTimeout, "check.timeout", time.Second, "Consul health check timeout")
	fs.DurationVar(&c.DeregisterAfter, "check.deregister-after", time.Minute, "Consul removes a member whose check stays critical this long")

	fs.Func("proxy", "comma-separated static upstreams (host:port or URL) instead of discovery, as in Go kit's stringsvc tutorial", func(v string) error {
		c.Proxy = member.SplitList(v)
		for _, p := range c.Proxy {
			if _, err := transport.ParseInstance(p); err != nil {
				return err
			}
		}
		return nil
	})
	fs.StringVar(&c.ProxyService, "proxy.service", "", "service to forward Uppercase to (default: -service.name); another name makes this member an edge that always forwards")
	fs.StringVar(&c.ProxyTags, "proxy.tags", "", "comma-separated tags an instance must have to receive forwarded requests")
	fs.DurationVar(&c.DebugDelay, "debug.delay", 0, "delay added to every request this member serves itself (for benchmarks and fault drills)")
	fs.StringVar(&c.Balancer, "proxy.balancer", lb.BalancerNames()[0], "balancer: "+strings.Join(lb.BalancerNames(), ", ")+" (p2c is power of two choices over peak EWMA latency)")
	fs.IntVar(&c.MaxAttempts, "proxy.max-attempts", 3, "attempts per forwarded request, each on a different member")
	fs.DurationVar(&c.ProxyTimeout, "proxy.timeout", time.Second, "overall timeout of a forwarded request (never beyond the caller's deadline)")
	fs.DurationVar(&c.AttemptTimeout, "proxy.attempt-timeout", 250*time.Millisecond, "timeout of one attempt")
	fs.Float64Var(&c.RetryRatio, "proxy.retry-ratio", 0.2, "retry budget: retries allowed per request")
	fs.Float64Var(&c.RetryMin, "proxy.retry-min", 10, "retry budget: retries allowed per second whatever the traffic")
	fs.Float64Var(&c.RateLimit, "proxy.rate", 5000, "requests per second forwarded to one upstream; 0 is no limit")
	fs.IntVar(&c.RateBurst, "proxy.burst", 500, "burst above -proxy.rate")
	fs.UintVar(&c.BreakerFailures, "proxy.breaker-failures", 5, "consecutive failures that open an upstream's circuit breaker")
	fs.DurationVar(&c.BreakerTimeout, "proxy.breaker-timeout", 5*time.Second, "how long a breaker stays open before a trial request")
	fs.IntVar(&c.MaxConnsPerHost, "proxy.idle-conns", 256, "idle keep-alive connections kept per upstream")
	fs.IntVar(&c.ZoneMinHealthy, "proxy.zone-min-healthy", lb.DefaultZoneMinHealthy, "spill over to other zones while fewer upstreams than this are healthy in this member's zone")
	fs.Float64Var(&c.ZoneSpillRatio, "proxy.zone-spill-ratio", lb.DefaultZoneSpillRatio, "spill over to other zones while the latency average of this zone's upstreams is more than this times theirs")
	fs.DurationVar(&c.ZoneHold, "proxy.zone-hold", lb.DefaultZoneHold, "return to this member's zone only after it has been fine this long (hysteresis)")

	fs.StringVar(&c.MeshTLS, "mesh.tls", member.MeshTLSOff, `member-to-member traffic: "off" (plain HTTP to the peers' -http.addr) or "connect" (mutual TLS with Consul Connect identities on -mesh.addr, intentions enforced)`)
	fs.StringVar(&c.MeshAddr, "mesh.addr", ":8443", "mutual-TLS listener for member-to-member traffic, with -mesh.tls connect")
	fs.DurationVar(&c.AuthzTTL, "mesh.authz-cache", 2*time.Second, "how long an intention decision is cached: a new deny takes effect within this time")

	fs.DurationVar(&c.Drain, "shutdown.drain", time.Second, "after deregistering, wait this long for peers to notice before closing")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown.timeout", 10*time.Second, "deadline for in-flight requests at shutdown")

	fs.Usage = func() {
		fmt.Fprintf(output, "Usage: stringsvc [flags]\n       stringsvc healthcheck [-http.addr addr]\n       stringsvc call [-addr host:port | -consul host:port] uppercase|count STRING\n\n")
		fmt.Fprintf(output, "Every flag falls back to an environment variable, e.g. -http.addr to %s.\n\n", envName("http.addr"))
		printGrouped(output, fs)
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
	if c.ConsulAddr == "" {
		c.ConsulAddr = getenv("CONSUL_HTTP_ADDR")
	}
	c.ConsulToken = getenv("CONSUL_HTTP_TOKEN")
	if c.ConsulAddr == "" {
		c.ConsulAddr = consulDefault
		if c.Proxy != nil {
			c.ConsulAddr = member.ConsulNone
		}
	}
	if c.HTTPAddr == "" {
		c.HTTPAddr = defaultHTTPAddr
		if c.PrivateHTTP() {
			c.HTTPAddr = privateHTTPAddr
		}
	}
	if c.AdminAddr == "" && c.PrivateHTTP() {
		c.AdminAddr = defaultAdminAddr
	}
	return c, validate(c)
}

func validate(c config) error {
	var errs []error
	if c.MaxBodyBytes <= 0 {
		errs = append(errs, errors.New("-http.max-body must be positive"))
	}
	if c.MaxInFlight < 1 {
		errs = append(errs, errors.New("-http.max-inflight must be at least 1"))
	}
	if c.MaxQueue < 0 || c.MaxWait <= 0 || c.MaxWait > transport.DefaultMaxTimeout {
		errs = append(errs, fmt.Errorf("-http.max-queue must not be negative and -http.max-wait between 0 and %v (a waiting client may have gone: the server notices only when it reads)", transport.DefaultMaxTimeout))
	}
	if _, err := limit.Parse(c.Limiter); err != nil {
		errs = append(errs, fmt.Errorf("-http.limiter: %w", err))
	}
	if c.ZoneMinHealthy < 1 || !(c.ZoneSpillRatio > 1) || c.ZoneHold <= 0 {
		errs = append(errs, errors.New("-proxy.zone-min-healthy must be at least 1, -proxy.zone-spill-ratio above 1 and -proxy.zone-hold positive"))
	}
	if err := discovery.ValidServiceName(c.ServiceName); err != nil {
		errs = append(errs, fmt.Errorf("-service.name: %w", err))
	}
	if c.ProxyService != "" {
		if err := discovery.ValidServiceName(c.ProxyService); err != nil {
			errs = append(errs, fmt.Errorf("-proxy.service: %w", err))
		}
	}
	if _, err := lb.ParseBalancer(c.Balancer); err != nil {
		errs = append(errs, fmt.Errorf("-proxy.balancer: %w", err))
	}
	if c.MaxAttempts < 1 {
		errs = append(errs, errors.New("-proxy.max-attempts must be at least 1"))
	}
	if c.ProxyTimeout <= 0 || c.AttemptTimeout <= 0 {
		errs = append(errs, errors.New("-proxy.timeout and -proxy.attempt-timeout must be positive"))
	}
	if c.RateLimit < 0 || math.IsNaN(c.RateLimit) || c.RateLimit > 0 && c.RateBurst < 1 {
		errs = append(errs, errors.New("-proxy.rate must not be negative (0 is no limit), and -proxy.burst at least 1 with a limit"))
	}
	if c.BreakerFailures < 1 || c.BreakerFailures > math.MaxUint32 {
		errs = append(errs, fmt.Errorf("-proxy.breaker-failures must be between 1 and %d", uint32(math.MaxUint32)))
	}
	if c.BreakerTimeout <= 0 {
		errs = append(errs, errors.New("-proxy.breaker-timeout must be positive"))
	}
	if c.RetryRatio < 0 || c.RetryMin < 0 || math.IsNaN(c.RetryRatio) || math.IsNaN(c.RetryMin) {
		errs = append(errs, errors.New("-proxy.retry-ratio and -proxy.retry-min must not be negative"))
	}
	if c.ShutdownTimeout <= 0 {
		errs = append(errs, errors.New("-shutdown.timeout must be positive"))
	}
	if c.Drain < 0 {
		errs = append(errs, errors.New("-shutdown.drain must not be negative"))
	}
	if c.MaxConnsPerHost < 1 {
		errs = append(errs, errors.New("-proxy.idle-conns must be at least 1"))
	}
	switch c.MeshTLS {
	case member.MeshTLSOff:
	case member.MeshTLSConnect:
		if !c.Registers() || c.Proxy != nil {
			errs = append(errs, errors.New("-mesh.tls connect needs Consul, and discovery rather than a static -proxy list"))
		}
		if c.AuthzTTL <= 0 {
			errs = append(errs, errors.New("-mesh.authz-cache must be positive"))
		}
		if c.PrivateHTTP() && !loopbackAddr(c.HTTPAddr) {
			errs = append(errs, fmt.Errorf("-http.addr %q listens beyond loopback, where callers are not authenticated and intentions do not apply: with -mesh.tls connect, peers come through -mesh.addr; keep -http.addr on loopback (the default, %s), or set -http.public to expose it on purpose", c.HTTPAddr, privateHTTPAddr))
		}
	default:
		errs = append(errs, fmt.Errorf("-mesh.tls: want %q or %q, have %q", member.MeshTLSOff, member.MeshTLSConnect, c.MeshTLS))
	}
	if c.CheckInterval <= 0 || c.CheckTimeout <= 0 {
		errs = append(errs, errors.New("-check.interval and -check.timeout must be positive"))
	} else if c.CheckTimeout > c.CheckInterval {
		errs = append(errs, fmt.Errorf("-check.timeout %v is longer than -check.interval %v: Consul would start a check before the last one timed out", c.CheckTimeout, c.CheckInterval))
	}
	return errors.Join(errs...)
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

// flagGroups orders -h by topic: each flag goes under the first group
// that names its prefix.
var flagGroups = []struct{ title, prefixes string }{
	{"Listeners", "http. listen admin. advertise log."},
	{"Consul", "consul. service. check."},
	{"Forwarding", "proxy debug."},
	{"Mesh (Connect)", "mesh."},
	{"Shutdown", "shutdown."},
}

// printGrouped prints the flags of fs under flagGroups' titles.
func printGrouped(w io.Writer, fs *flag.FlagSet) {
	done := map[string]bool{}
	for _, g := range flagGroups {
		fmt.Fprintf(w, "%s:\n", g.title)
		group := flag.NewFlagSet(g.title, flag.ContinueOnError)
		group.SetOutput(w)
		fs.VisitAll(func(f *flag.Flag) {
			for _, p := range strings.Fields(g.prefixes) {
				if strings.HasPrefix(f.Name, p) && !done[f.Name] {
					done[f.Name] = true
					group.Var(f.Value, f.Name, f.Usage)
					group.Lookup(f.Name).DefValue = f.DefValue
				}
			}
		})
		group.PrintDefaults()
		fmt.Fprintln(w)
	}
	fs.VisitAll(func(f *flag.Flag) {
		if !done[f.Name] {
			fmt.Fprintf(w, "  -%s\n    \t%s\n", f.Name, f.Usage) // a flag no group names
		}
	})
}
