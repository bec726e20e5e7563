package member

import (
	"strings"
	"time"
)

// ConsulNone as -consul.addr runs the member without Consul: standalone,
// or forwarding to the static -proxy list.
const ConsulNone = "none"

type Config struct {
	// Version is the build's, registered in Consul's service meta.
	Version string

	HTTPAddr     string
	HTTPPublic   bool
	AdminAddr    string
	MaxInFlight  int
	Limiter      string // see limit.Parse
	MaxQueue     int
	MaxWait      time.Duration
	Advertise    string
	MaxBodyBytes int64
	LogRequests  bool

	ConsulAddr      string
	ConsulTokenFile string
	ConsulToken     string // from CONSUL_HTTP_TOKEN; never printed
	ServiceName     string
	ServiceTags     string
	Zone            string // "" asks the agent's node meta
	CheckInterval   time.Duration
	CheckTimeout    time.Duration
	DeregisterAfter time.Duration

	Proxy           []string // static upstreams; nil means discover them
	ProxyService    string
	ProxyTags       string
	DebugDelay      time.Duration
	Balancer        string
	MaxAttempts     int
	ProxyTimeout    time.Duration
	AttemptTimeout  time.Duration
	RetryRatio      float64
	RetryMin        float64
	RateLimit       float64
	RateBurst       int
	BreakerFailures uint
	BreakerTimeout  time.Duration
	MaxConnsPerHost int
	ZoneMinHealthy  int
	ZoneSpillRatio  float64
	ZoneHold        time.Duration

	MeshAddr string
	MeshTLS  string // MeshTLSOff or MeshTLSConnect
	AuthzTTL time.Duration

	Drain           time.Duration
	ShutdownTimeout time.Duration
}

func (c Config) Tags() []string { return SplitList(c.ServiceTags) }

// PrivateHTTP reports whether the client listener must stay on loopback:
// a Connect member's, unless -http.public exposes it. An edge's is the
// mesh's ingress, public by design.
func (c Config) PrivateHTTP() bool { return c.Connect() && !c.Edge() && !c.HTTPPublic }

// PlainNote says who may call the client listener, for its start line and
// /debug/mesh.
func (c Config) PlainNote() string {
	switch {
	case c.PrivateHTTP():
		return "loopback only: the mesh port is this member's only door to the network"
	case c.Connect() && c.Edge():
		return "the mesh's ingress: callers are not authenticated; the edge's own calls are subject to intentions"
	case c.Connect():
		return "exposed by -http.public: callers are not authenticated and intentions do not apply to them"
	default:
		return "plain HTTP: callers are not authenticated"
	}
}

// Connect reports whether members talk mutual TLS with Connect identities.
func (c Config) Connect() bool { return c.MeshTLS == MeshTLSConnect }

// Edge reports whether the member forwards to another service than its
// own: it then cannot stand in for its upstreams.
func (c Config) Edge() bool { return c.UpstreamService() != c.ServiceName }

// Meshed reports whether the member forwards at all: it has Consul to
// discover peers in, or a static -proxy list.
func (c Config) Meshed() bool { return c.ConsulAddr != ConsulNone || c.Proxy != nil }

// Registers reports whether the member registers itself in Consul.
func (c Config) Registers() bool { return c.ConsulAddr != ConsulNone }

func (c Config) UpstreamService() string {
	if c.ProxyService != "" {
		return c.ProxyService
	}
	return c.ServiceName
}

func SplitList(s string) []string {
	var tags []string
	for _, t := range strings.Split(s, ",") {
		if t = strings.TrimSpace(t); t != "" {
			tags = append(tags, t)
		}
	}
	return tags
}

// ConsulHostPort strips a scheme from the Consul address, as
// CONSUL_HTTP_ADDR may carry one.
func (c Config) ConsulHostPort() string {
	a := c.ConsulAddr
	if i := strings.Index(a, "://"); i >= 0 {
		a = a[i+3:]
	}
	return strings.TrimSuffix(a, "/")
}

// The values of -mesh.tls.
const (
	MeshTLSOff     = "off"
	MeshTLSConnect = "connect"
)
