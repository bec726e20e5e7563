package discovery

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/go-kit/kit/metrics"
	"github.com/go-kit/log"
	"github.com/hashicorp/consul/api"
)

// Registration describes how a member registers itself.
type Registration struct {
	Name      string // service name, e.g. "stringsvc"
	Advertise string // "host:port" that peers and Consul's check can reach
	Tags      []string
	Version   string // goes into meta "version"
	// CheckInterval and CheckTimeout drive Consul's HTTP check of
	// /health. DeregisterAfter removes a registration whose check has been
	// critical that long, so a crashed member does not linger forever.
	CheckInterval   time.Duration
	CheckTimeout    time.Duration
	DeregisterAfter time.Duration
}

// ServiceID returns the stable ID "<name>-<host>-<port>". It is the same on
// every restart of the same member, so restarts replace the old entry
// instead of piling up ghosts. IPv6 colons are kept; Consul accepts them.
func (r Registration) ServiceID() string {
	host, port, _ := net.SplitHostPort(r.Advertise)
	return r.Name + "-" + host + "-" + port
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
	return &api.AgentServiceRegistration{
		ID:      r.ServiceID(),
		Name:    r.Name,
		Address: host,
		Port:    port,
		Tags:    r.Tags,
		Meta:    map[string]string{"version": r.Version},
		Check: &api.AgentServiceCheck{
			CheckID:                        r.ServiceID() + "-health",
			Name:                           "HTTP /health",
			HTTP:                           "http://" + r.Advertise + "/health",
			Interval:                       r.CheckInterval.String(),
			Timeout:                        r.CheckTimeout.String(),
			DeregisterCriticalServiceAfter: r.DeregisterAfter.String(),
		},
	}, nil
}

// Registrar keeps a member registered. Unlike Go kit's sd/consul Registrar,
// which registers once and only logs an error, it retries with capped,
// jittered backoff until the agent answers, then watches its own entry with
// a blocking query and registers again whenever the agent has lost it (an
// agent restart, a dev-mode Consul that forgot everything).
type Registrar struct {
	client     *api.Client
	reg        *api.AgentServiceRegistration
	logger     log.Logger
	reach      *Reachability
	registered metrics.Gauge

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once

	mu    sync.Mutex
	state bool
}

// NewRegistrar returns a registrar for r. registered is set to 1 while the
// member is known to the agent and 0 otherwise; it may be nil.
func NewRegistrar(client *api.Client, r Registration, reach *Reachability, registered metrics.Gauge, logger log.Logger) (*Registrar, error) {
	reg, err := r.agentRegistration()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Registrar{
		client:     client,
		reg:        reg,
		logger:     log.With(logger, "service", reg.Name, "id", reg.ID),
		reach:      reach,
		registered: registered,
		ctx:        ctx,
		cancel:     cancel,
		done:       make(chan struct{}),
	}, nil
}

// ID returns the service ID the registrar registers.
func (r *Registrar) ID() string { return r.reg.ID }

// Registered reports whether the member is known to be registered.
func (r *Registrar) Registered() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.state
}

func (r *Registrar) setState(registered bool, keyvals ...interface{}) {
	r.mu.Lock()
	changed := r.state != registered
	r.state = registered
	r.mu.Unlock()
	if r.registered != nil {
		v := 0.0
		if registered {
			v = 1
		}
		r.registered.Set(v)
	}
	if changed {
		r.logger.Log(append([]interface{}{"registered", registered}, keyvals...)...)
	}
}

// Run registers and keeps the registration alive until Stop.
func (r *Registrar) Run() error {
	defer close(r.done)
	backoff := minBackoff
	for {
		err := r.register()
		if r.ctx.Err() != nil {
			return nil
		}
		if err != nil {
			r.setState(false)
			if !r.sleep(backoff) {
				return nil
			}
			backoff = nextBackoff(backoff)
			continue
		}
		backoff = minBackoff
		r.setState(true, "addr", fmt.Sprintf("%s:%d", r.reg.Address, r.reg.Port))
		r.watch()
		if r.ctx.Err() != nil {
			return nil
		}
	}
}

// errNoLeader says the agent answers but its cluster has no leader yet.
var errNoLeader = errors.New("consul has no leader yet")

// register registers once the cluster has a leader. An agent accepts a
// registration before that, but its first sync to the catalog then fails
// and is retried only some 15 seconds later, so peers would not see the
// member for that long.
func (r *Registrar) register() error {
	leader, err := r.client.Status().LeaderWithQueryOptions((&api.QueryOptions{}).WithContext(r.ctx))
	r.reach.Observe(err)
	if err != nil {
		return err
	}
	if leader == "" {
		return errNoLeader
	}
	err = r.client.Agent().ServiceRegisterOpts(r.reg, api.ServiceRegisterOpts{}.WithContext(r.ctx))
	r.reach.Observe(err)
	return err
}

// watch blocks on the agent's view of our entry. It returns when the
// agent no longer knows it, or when the registrar stops.
func (r *Registrar) watch() {
	var hash string
	backoff := minBackoff
	for {
		q := (&api.QueryOptions{WaitHash: hash, WaitTime: blockingWait}).WithContext(r.ctx)
		_, meta, err := r.client.Agent().Service(r.reg.ID, q)
		r.reach.Observe(err)
		if r.ctx.Err() != nil {
			return
		}
		var status api.StatusError
		switch {
		case errors.As(err, &status) && status.Code == 404:
			r.setState(false, "reason", "agent lost the registration")
			return
		case err != nil:
			// Consul is away. We cannot know whether it still has us;
			// keep asking, and register again if it answers 404.
			if !r.sleep(backoff) {
				return
			}
			backoff = nextBackoff(backoff)
		default:
			backoff = minBackoff
			hash = meta.LastContentHash
		}
	}
}

func (r *Registrar) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.ctx.Done():
		return false
	}
}

// Stop ends Run and waits for it. It does not deregister.
func (r *Registrar) Stop() {
	r.once.Do(r.cancel)
	<-r.done
}

// Deregister removes the member from the agent, so that peers stop sending
// to it at once rather than after its check fails.
func (r *Registrar) Deregister(ctx context.Context) error {
	err := r.client.Agent().ServiceDeregisterOpts(r.reg.ID, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return fmt.Errorf("deregister %s: %w", r.reg.ID, err)
	}
	r.setState(false, "reason", "deregistered")
	return nil
}
