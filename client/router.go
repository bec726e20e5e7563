package client

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/metrics"
	"github.com/go-kit/kit/sd"
	"github.com/go-kit/log"

	"github.com/kitmesh/stringsvc/discovery"
	"github.com/kitmesh/stringsvc/discovery/lb"
	"github.com/kitmesh/stringsvc/service"
	"github.com/kitmesh/stringsvc/transport"
)

// RouterOptions configures NewRouter.
type RouterOptions struct {
	// Service is the upstream service, the chain's.
	Service string
	// Watcher follows the service's discovery chain; nil routes
	// everything to the service itself.
	Watcher *discovery.ChainWatcher
	// Instancer builds the instances of one target: the service, a
	// subset's filter, a datacenter.
	Instancer func(discovery.Target) sd.Instancer
	// Chain configures every target's chain.
	Chain ChainOptions
	// Requests counts forwards by target ("service", "subset",
	// "datacenter"). May be nil.
	Requests metrics.Counter
	// Roll returns a number in [0, 100) for the splitter; nil is random.
	Roll func() float32
	// Logger gets one line per new plan and per unsupported feature.
	Logger log.Logger
}

// Router applies Consul's discovery chain to every call: the route its
// request matches, the split its roll falls in, and the chain (pool,
// balancer, retries) of that target, then of its failover targets. With
// no config entries it is one route to the service itself, and costs what
// that chain costs.
type Router struct {
	o       RouterOptions
	current atomic.Pointer[routing]
	mu      sync.Mutex // serialises rebuilds
	retired map[*targetChain]*time.Timer
	stop    chan struct{}
	done    chan struct{}
}

// routing is one plan and the chains of its targets.
type routing struct {
	plan   *discovery.Plan
	chains map[string]*targetChain // by Target.ID
	// ids holds each target's ID, for the log line: a reused chain keeps
	// the Target it was built for, whose ID may be another plan's.
	ids map[string]*string
	// overrides holds, per route with its own timeout or retries, the
	// endpoint of each target it may call.
	overrides map[*discovery.Route]map[string]endpoint.Endpoint
}

type targetChain struct {
	once     sync.Once
	key      string // what must stay equal for the chain to be reused
	target   discovery.Target
	chain    *Chain
	stop     func()
	requests metrics.Counter
}

// gracePeriod is how long a target's chain outlives the plan that dropped
// it, for the calls still on it.
const gracePeriod = 10 * time.Second

// NewRouter builds the chain of the service itself at once, then follows
// the discovery chain.
func NewRouter(o RouterOptions) (*Router, error) {
	if o.Logger == nil {
		o.Logger = log.NewNopLogger()
	}
	if o.Roll == nil {
		o.Roll = func() float32 { return rand.Float32() * 100 }
	}
	r := &Router{o: o, retired: map[*targetChain]*time.Timer{}, stop: make(chan struct{}), done: make(chan struct{})}
	if err := r.apply(selfPlan(o.Service)); err != nil {
		return nil, err
	}
	go r.follow()
	return r, nil
}

// selfPlan is the plan without config entries: one route to the service.
func selfPlan(svc string) *discovery.Plan {
	t := discovery.Target{ID: svc, Service: svc, Local: true}
	return &discovery.Plan{
		Default: true,
		Routes:  []discovery.Route{{Splits: []discovery.Split{{Weight: 100, Target: t.ID}}}},
		Targets: map[string]discovery.Target{t.ID: t},
	}
}

func (r *Router) follow() {
	defer close(r.done)
	if r.o.Watcher == nil {
		return
	}
	var said map[string]bool
	for {
		changed := r.o.Watcher.Changed()
		if c := r.o.Watcher.Chain(); c != nil {
			plan := discovery.CompilePlan(c)
			if plan.Default || len(plan.Routes) == 0 {
				// No route reaches a target the member can call: plain
				// balancing over the service, never nowhere.
				plan.Routes, plan.Targets = selfPlan(r.o.Service).Routes, selfPlan(r.o.Service).Targets
			}
			if err := r.apply(plan); err != nil {
				r.o.Logger.Log("msg", "discovery chain not applied", "err", err)
			} else {
				r.o.Logger.Log("msg", "discovery chain applied", "default", plan.Default, "routes", len(plan.Routes), "targets", len(plan.Targets))
			}
			now := map[string]bool{}
			for _, u := range plan.Unsupported {
				now[u] = true
				if !said[u] {
					r.o.Logger.Log("msg", "discovery chain feature not applied", "feature", u)
				}
			}
			said = now
		}
		select {
		case <-changed:
		case <-r.stop:
			return
		}
	}
}

// key says what a target's chain is built from: a target whose subset
// filter changed under the same ID gets a new chain.
func key(t discovery.Target) string {
	dc := t.Datacenter
	if t.Local {
		dc = ""
	}
	return fmt.Sprintf("%s|%s|%s|%s|%t", t.Service, t.Subset, dc, t.Filter, t.OnlyPassing)
}

// apply builds the chains the plan needs, reuses the ones it has, and
// retires the rest after gracePeriod.
func (r *Router) apply(plan *discovery.Plan) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.current.Load()
	next := &routing{plan: plan, chains: map[string]*targetChain{}, ids: map[string]*string{}}
	reused := map[*targetChain]bool{}
	for id, t := range plan.Targets {
		next.ids[id] = &id
		if old != nil {
			if tc, ok := old.findByKey(key(t)); ok {
				next.chains[id] = tc
				reused[tc] = true
				continue
			}
		}
		instancer := r.o.Instancer(t)
		chain, err := NewChain(instancer, r.o.Chain)
		if err != nil {
			instancer.Stop()
			for _, tc := range next.chains {
				if !reused[tc] {
					tc.close()
				}
			}
			return err
		}
		tc := &targetChain{key: key(t), target: t, chain: chain, stop: instancer.Stop}
		if r.o.Requests != nil {
			tc.requests = r.o.Requests.With("service", t.Service, "subset", t.Subset, "datacenter", t.Datacenter)
		}
		next.chains[id] = tc
	}
	next.overrides = map[*discovery.Route]map[string]endpoint.Endpoint{}
	for i := range plan.Routes {
		route := &plan.Routes[i]
		if route.RequestTimeout <= 0 && route.NumRetries <= 0 {
			continue
		}
		eps := map[string]endpoint.Endpoint{}
		for _, sp := range route.Splits {
			for _, id := range append([]string{sp.Target}, sp.Failover...) {
				if tc := next.chains[id]; tc != nil {
					attempts := 0 // the member's
					if route.NumRetries > 0 {
						attempts = route.NumRetries + 1
					}
					eps[id] = tc.chain.EndpointWith(route.RequestTimeout, attempts)
				}
			}
		}
		next.overrides[route] = eps
	}
	r.current.Store(next)
	if old != nil {
		var retired []*targetChain
		for _, tc := range old.chains {
			if !reused[tc] {
				retired = append(retired, tc)
			}
		}
		for _, tc := range retired {
			r.retired[tc] = time.AfterFunc(gracePeriod, func() {
				r.mu.Lock()
				defer r.mu.Unlock()
				delete(r.retired, tc)
				tc.close()
			})
		}
	}
	return nil
}

func (rt *routing) findByKey(k string) (*targetChain, bool) {
	for _, tc := range rt.chains {
		if tc.key == k {
			return tc, true
		}
	}
	return nil, false
}

func (tc *targetChain) close() {
	tc.once.Do(func() {
		tc.chain.Close()
		tc.stop()
	})
}

// Endpoint serves both requests of endpoints.Set through the chain.
func (r *Router) Endpoint() endpoint.Endpoint {
	return func(ctx context.Context, request interface{}) (interface{}, error) {
		rt := r.current.Load()
		route := &rt.plan.Routes[0]
		if !rt.plan.Default {
			route = rt.plan.Route(requestOf(ctx, rt.plan.MatchesQuery()))
		}
		split := route.Splits[0]
		if len(route.Splits) > 1 {
			split = route.Pick(r.o.Roll())
		}
		if len(split.Failover) > 0 {
			return rt.failover(ctx, route, split, cmp.Or(route.RequestTimeout, r.o.Chain.Retry.Timeout), request)
		}
		return rt.call(ctx, route, split.Target, request)
	}
}

// failover calls the split's target, then its failover targets in order,
// within one deadline for them all. (On its own, so that the common path
// pays for no deadline: a deferred cancel there costs an allocation.)
func (rt *routing) failover(ctx context.Context, route *discovery.Route, split discovery.Split, timeout time.Duration, request interface{}) (interface{}, error) {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = lb.WithOwnDeadline(ctx, time.Now().Add(timeout))
		defer cancel()
	}
	response, err := rt.call(ctx, route, split.Target, request)
	for _, id := range split.Failover {
		if err == nil || !failsOver(ctx, err) {
			break
		}
		response, err = rt.call(ctx, route, id, request)
	}
	return response, err
}

func (rt *routing) call(ctx context.Context, route *discovery.Route, id string, request interface{}) (interface{}, error) {
	tc := rt.chains[id]
	if tc == nil {
		return nil, lb.ErrNoEndpoints
	}
	if tc.requests != nil {
		tc.requests.Add(1)
	}
	transport.NoteTarget(ctx, rt.ids[id])
	if e := rt.overrides[route][id]; e != nil {
		return e(ctx, request)
	}
	return tc.chain.Endpoint()(ctx, request)
}

// failsOver reports whether a target's failure moves the call to the next
// target: it had no instance, or every attempt failed, and the caller is
// still waiting. A denial is final, and so is the call's own deadline,
// which ctx carries. (An attempt's timeout is not: a peer's 504 reads as
// one. Nor is a spent retry budget: lb.Retry asks for it before it knows
// that no instance is left to try.)
func failsOver(ctx context.Context, err error) bool {
	return !lb.Expired(ctx) && !errors.Is(err, service.ErrDenied)
}

// requestOf is what the routes match: the HTTP request the call serves.
// The query is parsed only for a plan that matches on it.
func requestOf(ctx context.Context, query bool) discovery.Request {
	r := transport.RequestFrom(ctx)
	if r == nil {
		return discovery.Request{}
	}
	req := discovery.Request{Method: r.Method, Path: r.URL.EscapedPath(), Header: r.Header, Host: r.Host}
	if query {
		req.Query = r.URL.Query()
	}
	return req
}

// RouterView is what /debug/mesh shows of a Router.
type RouterView struct {
	Plan    *discovery.Plan       `json:"plan"`
	Targets map[string]TargetView `json:"target_pools"`
}

// TargetView is one target's pool.
type TargetView struct {
	Target    discovery.Target `json:"target"`
	Upstreams []lb.Snapshot    `json:"upstreams"`
}

// View returns the plan in force and every target's pool.
func (r *Router) View() RouterView {
	rt := r.current.Load()
	v := RouterView{Plan: rt.plan, Targets: map[string]TargetView{}}
	for id, tc := range rt.chains {
		v.Targets[id] = TargetView{Target: tc.target, Upstreams: tc.chain.Pool().Snapshot()}
	}
	return v
}

// DefaultPool is the pool of the plan's first target of its last route,
// where a request no route matches goes.
func (r *Router) DefaultPool() *lb.Pool {
	rt := r.current.Load()
	routes := rt.plan.Routes
	return rt.chains[routes[len(routes)-1].Splits[0].Target].chain.Pool()
}

// Close stops following the chain and closes every target's chain.
func (r *Router) Close() {
	close(r.stop)
	<-r.done
	r.mu.Lock()
	defer r.mu.Unlock()
	for tc, t := range r.retired {
		t.Stop()
		tc.close()
	}
	for _, tc := range r.current.Load().chains {
		tc.close()
	}
}
