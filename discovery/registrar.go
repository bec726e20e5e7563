package discovery

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-kit/kit/metrics"
	"github.com/go-kit/log"
	"github.com/hashicorp/consul/api"
	"github.com/kitmesh/stringsvc/internal/clip"
)

// Registration describes how a member registers itself.
type Registration struct {
	Name      string // service name, e.g. "stringsvc"
	Advertise string // "host:port" that peers and Consul's check can reach
	// AskAgent, when Advertise's host is loopback, makes the registrar ask
	// the agent for the address it advertises itself (/v1/agent/self) and
	// register that host instead. It is for the standard deployment: a
	// Consul client agent on every host at 127.0.0.1:8500, where the route
	// to the agent says nothing about how peers reach this host. A dev
	// agent on loopback answers loopback, which is kept.
	AskAgent bool
	Tags     []string
	Version  string // goes into meta "version"
	// Zone, when set, goes into meta "zone" (ZoneKey), where peers read
	// it before their node's.
	Zone string
	// MeshPort, when set, registers the member as a Connect-native
	// service on that port (the mutual-TLS listener peers call), with
	// Advertise's port, where /health and clients are served, in meta
	// "http_port".
	MeshPort int
	// Upstream, with MeshPort, is the service this member calls through
	// the mesh when it is not its own (an edge's), declared in the
	// registration as a sidecar proxy declares its upstreams. Consul's
	// topology then draws the edge as the caller: without it, Consul
	// infers a Connect-native service's upstreams from intentions alone,
	// and under default allow every service is everyone's upstream.
	Upstream string
	// CheckInterval and CheckTimeout drive Consul's HTTP check of
	// /health. DeregisterAfter removes a registration whose check has been
	// critical that long, so a crashed member does not linger forever.
	CheckInterval   time.Duration
	CheckTimeout    time.Duration
	DeregisterAfter time.Duration
	// CheckPort, when set, is the port of Advertise's host that Consul's
	// check calls instead of Advertise's: the admin listener of a member
	// whose client port listens on loopback only. It goes into meta
	// "admin_port", where Prometheus finds /metrics.
	CheckPort int
	// PrivateHTTP keeps Advertise's port out of meta "http_port": it
	// listens on loopback only, and nobody else can reach it.
	PrivateHTTP bool
}

// ServiceID returns the stable ID "<name>@<host>:<port>", e.g.
// "stringsvc@10.0.0.7:8080" or "stringsvc@[fe80::1]:8080". It is the same
// on every restart of the same member, so restarts replace the old entry
// instead of piling up ghosts. It is unambiguous because neither a service
// name (see ValidServiceName) nor a host contains "@".
func (r Registration) ServiceID() string {
	return r.Name + "@" + r.Advertise
}

// ValidServiceName reports why name cannot be registered, or nil. Names are
// DNS labels, as Consul recommends: letters, digits and hyphens.
func ValidServiceName(name string) error {
	if name == "" || len(name) > 63 {
		return fmt.Errorf("service name %q: want 1 to 63 characters", name)
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return fmt.Errorf("service name %q: want only letters, digits and hyphens", name)
		}
	}
	return nil
}

func (r Registration) agentRegistration() (*api.AgentServiceRegistration, error) {
	host, portStr, err := net.SplitHostPort(r.Advertise)
	if err != nil {
		return nil, fmt.Errorf("advertise address %q: %w", r.Advertise, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("advertise port %q: %w", portStr, err)
	}
	check := url.URL{Scheme: "http", Host: r.Advertise, Path: "/health"}
	meta := map[string]string{"version": r.Version}
	if r.Zone != "" {
		meta[ZoneKey] = r.Zone
	}
	if r.CheckPort > 0 {
		check.Host = net.JoinHostPort(host, strconv.Itoa(r.CheckPort))
		meta["admin_port"] = strconv.Itoa(r.CheckPort)
	}
	var connect *api.AgentServiceConnect
	if r.MeshPort > 0 {
		if !r.PrivateHTTP {
			meta["http_port"] = portStr
		}
		port = r.MeshPort
		connect = &api.AgentServiceConnect{Native: true}
	}
	var proxy *api.AgentServiceConnectProxyConfig
	if r.MeshPort > 0 && r.Upstream != "" && r.Upstream != r.Name {
		// Consul records a Connect-native service's Proxy.Upstreams in
		// its mesh topology (they bind no port: nothing listens for them).
		proxy = &api.AgentServiceConnectProxyConfig{
			DestinationServiceName: r.Name,
			Upstreams:              []api.Upstream{{DestinationName: r.Upstream}},
		}
	}
	return &api.AgentServiceRegistration{
		ID:      r.ServiceID(),
		Name:    r.Name,
		Address: host,
		Port:    port,
		Tags:    r.Tags,
		Meta:    meta,
		Connect: connect,
		Proxy:   proxy,
		Check: &api.AgentServiceCheck{
			CheckID:                        r.ServiceID() + "/health",
			Name:                           "HTTP /health",
			HTTP:                           check.String(), // a zone's "%" escaped
			Interval:                       r.CheckInterval.String(),
			Timeout:                        r.CheckTimeout.String(),
			DeregisterCriticalServiceAfter: r.DeregisterAfter.String(),
		},
	}, nil
}

// RegistrarOptions are the registrar's companions. All may be nil.
type RegistrarOptions struct {
	// Reach is told the outcome of every call to Consul.
	Reach *Reachability
	// Registered is set to 1 while the member is known to the agent and
	// 0 otherwise.
	Registered metrics.Gauge
	// Failures counts failed calls, labelled "op" (advertise, register,
	// watch, deregister) and "kind" (see failureKind).
	Failures metrics.Counter
	// Logger gets one line per change of state or of failure reason.
	Logger log.Logger
}

// Registrar keeps a member registered. Unlike Go kit's sd/consul Registrar,
// which registers once and only logs an error, it retries with capped,
// jittered backoff until the agent answers, then watches its own entry with
// a blocking query and registers again whenever the agent has lost it (an
// agent restart, a dev-mode Consul that forgot everything) or holds
// another registration under its ID.
type Registrar struct {
	client *api.Client
	r      Registration
	o      RegistrarOptions
	logger log.Logger

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once

	mu        sync.Mutex
	reg       *api.AgentServiceRegistration // nil until the address is settled
	state     bool
	elsewhere string     // why the catalog lists our ID on another node; "" if not
	why       lastReason // the current failure reason
}

// NewRegistrar returns a registrar for r.
func NewRegistrar(client *api.Client, r Registration, o RegistrarOptions) (*Registrar, error) {
	if _, err := r.agentRegistration(); err != nil {
		return nil, err
	}
	if o.Reach == nil {
		o.Reach = NewReachability(log.NewNopLogger())
	}
	if o.Logger == nil {
		o.Logger = log.NewNopLogger()
	}
	ctx, cancel := context.WithCancel(context.Background())
	logger := log.With(o.Logger, "service", r.Name)
	return &Registrar{
		client: client,
		r:      r,
		o:      o,
		logger: logger,
		why:    lastReason{logger: logger},
		ctx:    ctx,
		cancel: cancel,
		done:   make(chan struct{}),
	}, nil
}

// ID returns the service ID the registrar registers, or "" while it is
// still asking the agent which address to advertise.
func (r *Registrar) ID() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.reg == nil {
		return ""
	}
	return r.reg.ID
}

// Advertise returns the "host:port" the registrar registers, the one peers
// call (the mesh port of a Connect-native member), or "" while it is still
// asking the agent.
func (r *Registrar) Advertise() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.reg == nil {
		return ""
	}
	return net.JoinHostPort(r.reg.Address, strconv.Itoa(r.reg.Port))
}

// Registered reports whether the member is known to be registered.
func (r *Registrar) Registered() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.state
}

// Elsewhere says which other node the catalog lists this member's ID on,
// or "" when it lists it on none: a stale entry that Consul keeps passing
// (see checkCatalog).
func (r *Registrar) Elsewhere() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.elsewhere
}

// recheckElsewhere is how often a member that found a stale entry of its
// ID looks again, so that /debug/mesh clears once it is removed.
const recheckElsewhere = 10 * time.Second

// checkCatalog looks, once per registration and again while it finds one,
// for our ID on a node other than our agent's. An agent that lost its data dir joins as a new node,
// and the old node's entries stay in the catalog, passing, while nothing
// checks them (hashicorp/consul#9939): peers then call this member twice
// over, or a dead address under its name. A failed look says nothing.
func (r *Registrar) checkCatalog() {
	q, cancel := r.query()
	defer cancel()
	// Without agent:read the agent's node is unknown; two nodes listing
	// our ID are then the sign.
	var self struct{ Config struct{ NodeName string } }
	if _, err := r.client.Raw().Query("/v1/agent/self", &self, q); err != nil {
		self.Config.NodeName = ""
	}
	q.Filter = fmt.Sprintf("ServiceID == %q", r.reg.ID)
	entries, _, err := r.client.Catalog().Service(r.reg.Name, "", q)
	if err != nil {
		return
	}
	var others []string
	for _, e := range entries {
		if e.Node != self.Config.NodeName {
			others = append(others, e.Node)
		}
	}
	const fix = "a stale entry, e.g. of an agent that lost its data dir: remove it (consul force-leave -prune NODE, or PUT /v1/catalog/deregister) and keep agents' data dirs"
	note := ""
	switch {
	case self.Config.NodeName != "" && len(others) > 0:
		note = fmt.Sprintf("the catalog also lists %s on node %s, not on this member's agent (node %s): %s", r.reg.ID, clip.String(strings.Join(others, ", "), 256), self.Config.NodeName, fix)
	case self.Config.NodeName == "" && len(others) > 1:
		note = fmt.Sprintf("the catalog lists %s on %d nodes (%s): %s", r.reg.ID, len(others), clip.String(strings.Join(others, ", "), 256), fix)
	}
	r.mu.Lock()
	changed := note != r.elsewhere
	r.elsewhere = note
	r.mu.Unlock()
	if changed && note != "" {
		r.logger.Log("id", r.reg.ID, "warning", note)
	}
}

// LastError returns why the last call to Consul failed, or "" when the
// last call succeeded.
func (r *Registrar) LastError() string { return r.why.get() }

func (r *Registrar) setState(registered bool, keyvals ...interface{}) {
	r.mu.Lock()
	changed := r.state != registered
	r.state = registered
	id := ""
	if r.reg != nil {
		id = r.reg.ID
	}
	r.mu.Unlock()
	if registered {
		r.why.clear()
	}
	if r.o.Registered != nil {
		v := 0.0
		if registered {
			v = 1
		}
		r.o.Registered.Set(v)
	}
	if changed {
		r.logger.Log(append([]interface{}{"id", id, "registered", registered}, keyvals...)...)
	}
}

// failed records a failure of op and logs it when its reason differs from
// the last one: a retry loop against a refusing agent writes one line, not
// one per attempt.
func (r *Registrar) failed(op string, err error) {
	kind := failureKind(err)
	if r.o.Failures != nil {
		r.o.Failures.With("op", op, "kind", kind).Add(1)
	}
	// An agent that does not answer is Reachability's to say, once; this
	// line is for an agent that answers and refuses.
	r.why.set(describe(op, r.r.Name, err), kind != "unreachable", "op", op)
}

// Run registers and keeps the registration alive until Stop.
func (r *Registrar) Run() error {
	defer close(r.done)
	if !r.settleAddress() {
		return nil
	}
	backoff := minBackoff
	for {
		err := r.register()
		if r.ctx.Err() != nil {
			return nil
		}
		if err != nil {
			r.failed("register", err)
			r.setState(false)
			if !r.sleep(backoff) {
				return nil
			}
			backoff = nextBackoff(backoff)
			continue
		}
		backoff = minBackoff
		r.setState(true, "addr", r.Advertise())
		r.checkCatalog()
		r.watch()
		if r.ctx.Err() != nil {
			return nil
		}
	}
}

// settleAddress decides, once, the address to register. It returns false
// if the registrar was stopped first.
func (r *Registrar) settleAddress() bool {
	reg := r.r
	if reg.AskAgent && isLoopback(reg.Advertise) {
		backoff := minBackoff
		for {
			host, err := r.agentAddress()
			if err == nil {
				if host != "" && !isLoopbackHost(host) {
					_, port, _ := net.SplitHostPort(reg.Advertise)
					reg.Advertise = net.JoinHostPort(host, port)
				}
				break
			}
			if r.ctx.Err() != nil {
				return false
			}
			r.failed("advertise", err)
			if failureKind(err) == "denied" {
				break // no agent:read: advertise the route to the agent
			}
			if !r.sleep(backoff) {
				return false
			}
			backoff = nextBackoff(backoff)
		}
	}
	ar, _ := reg.agentRegistration() // checked by NewRegistrar; the host is an IP here
	r.mu.Lock()
	r.reg = ar
	r.mu.Unlock()
	return true
}

// callTimeout bounds each call that is not a blocking query: a hung agent
// must not hold the registrar, or a shutdown, forever.
const callTimeout = 10 * time.Second

// query returns options whose context ends at Stop or after callTimeout.
func (r *Registrar) query() (*api.QueryOptions, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(r.ctx, callTimeout)
	return (&api.QueryOptions{}).WithContext(ctx), cancel
}

// agentAddress asks the agent which address it advertises to its cluster.
// (Agent().Self takes no context, so the raw query is used.)
func (r *Registrar) agentAddress() (string, error) {
	var self struct{ Member struct{ Addr string } }
	q, cancel := r.query()
	defer cancel()
	_, err := r.client.Raw().Query("/v1/agent/self", &self, q)
	r.o.Reach.Observe(err)
	if err != nil {
		return "", err
	}
	addr := self.Member.Addr
	if ip := net.ParseIP(addr); ip == nil {
		return "", fmt.Errorf("agent reports no usable address (%q)", addr)
	}
	return addr, nil
}

// errNoLeader says the agent answers but its cluster has no leader yet.
var errNoLeader = errors.New("consul has no leader yet")

// register registers once the cluster has a leader. An agent accepts a
// registration before that, but its first sync to the catalog then fails
// and is retried only some 15 seconds later, so peers would not see the
// member for that long.
func (r *Registrar) register() error {
	q, cancel := r.query()
	defer cancel()
	leader, err := r.client.Status().LeaderWithQueryOptions(q)
	r.o.Reach.Observe(err)
	if err != nil {
		return err
	}
	if leader == "" {
		return errNoLeader
	}
	err = r.client.Agent().ServiceRegisterOpts(r.reg, api.ServiceRegisterOpts{}.WithContext(q.Context()))
	r.o.Reach.Observe(err)
	return err
}

// watch blocks on the agent's view of our entry. It returns when the agent
// no longer knows it or holds another registration under our ID, or when
// the registrar stops.
func (r *Registrar) watch() {
	var hash string
	backoff := minBackoff
	for {
		wait := blockingWait
		if r.Elsewhere() != "" {
			wait = recheckElsewhere // until the stale entry is gone
		}
		q := (&api.QueryOptions{WaitHash: hash, WaitTime: wait}).WithContext(r.ctx)
		svc, meta, err := r.client.Agent().Service(r.reg.ID, q)
		r.o.Reach.Observe(err)
		if r.ctx.Err() != nil {
			return
		}
		var status api.StatusError
		switch {
		case errors.As(err, &status) && status.Code == 404:
			r.setState(false, "reason", "agent lost the registration")
			return
		case err != nil:
			// Consul is away, or refuses to tell. We cannot know whether
			// it still has us; keep asking, and register again if it
			// answers 404.
			r.failed("watch", err)
			if !r.sleep(backoff) {
				return
			}
			backoff = nextBackoff(backoff)
		case !r.isOurs(svc):
			r.setState(false, "reason", "agent holds another registration under our ID",
				"theirs", net.JoinHostPort(svc.Address, strconv.Itoa(svc.Port)))
			return
		default:
			backoff = minBackoff
			hash = meta.LastContentHash
			if r.Elsewhere() != "" {
				r.checkCatalog()
			}
		}
	}
}

// isOurs reports whether the agent's entry is the one we registered.
func (r *Registrar) isOurs(svc *api.AgentService) bool {
	return svc.Service == r.reg.Name &&
		svc.Address == r.reg.Address &&
		svc.Port == r.reg.Port &&
		sameTags(svc.Tags, r.reg.Tags) &&
		svc.Meta["version"] == r.reg.Meta["version"]
}

func sameTags(a, b []string) bool {
	if len(a) == 0 && len(b) == 0 {
		return true
	}
	return reflect.DeepEqual(a, b)
}

func (r *Registrar) sleep(d time.Duration) bool { return pause(r.ctx, d) }

// Stop ends Run and waits for it. It does not deregister.
func (r *Registrar) Stop() {
	r.once.Do(r.cancel)
	<-r.done
}

// Deregister removes the member from the agent, so that peers stop sending
// to it at once rather than after its check fails. It does nothing if the
// registrar never settled its address (so never registered).
func (r *Registrar) Deregister(ctx context.Context) error {
	id := r.ID()
	if id == "" {
		return nil
	}
	err := r.client.Agent().ServiceDeregisterOpts(id, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		r.failed("deregister", err)
		return fmt.Errorf("deregister %s: %s", id, describe("deregister", r.r.Name, err))
	}
	r.setState(false, "reason", "deregistered")
	return nil
}
