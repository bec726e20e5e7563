package client

import (
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/sd"
	"github.com/go-kit/log"

	"github.com/kitmesh/stringsvc/discovery/lb"
)

// ChainOptions configures NewChain. Zero values get defaults.
type ChainOptions struct {
	// Upstream builds the guarded endpoint of each instance.
	Upstream UpstreamOptions
	// Balancer names the policy (see lb.ParseBalancer); "" is p2c.
	Balancer string
	// Retry bounds the attempts of one call (see lb.Retry).
	Retry lb.RetryOptions
	// Zones, when set, makes the pool prefer the upstreams of its own
	// zone (see lb.Zones). Its Of may be nil when the instancer knows its
	// instances' zones, as discovery.Instancer does.
	Zones *lb.Zones
	// Logger gets the pool's and the breakers' lines.
	Logger log.Logger
}

// Chain is the forward chain: instances from an sd.Instancer, one guarded
// endpoint per instance in an lb.Pool, a balancer over the pool, and
// lb.Retry over the balancer. Each call goes to one instance, and to
// another when that attempt fails.
type Chain struct {
	pool     *lb.Pool
	balancer lb.Balancer
	retry    lb.RetryOptions
	call     endpoint.Endpoint
}

// NewChain builds the chain over instancer, which it subscribes to; Close
// unsubscribes, and the instancer stays its owner's to stop.
func NewChain(instancer sd.Instancer, o ChainOptions) (*Chain, error) {
	if o.Balancer == "" {
		o.Balancer = lb.BalancerNames()[0]
	}
	newBalancer, err := lb.ParseBalancer(o.Balancer)
	if err != nil {
		return nil, err
	}
	if o.Logger == nil {
		o.Logger = log.NewNopLogger()
	}
	if o.Upstream.Logger == nil {
		o.Upstream.Logger = log.With(o.Logger, "component", "proxy")
	}
	upstreams := NewUpstreamFactory(o.Upstream)
	var options []lb.PoolOption
	if o.Zones != nil {
		z := *o.Zones
		if zoned, ok := instancer.(interface{ ZoneOf(string) string }); ok && z.Of == nil {
			z.Of = zoned.ZoneOf
		}
		options = append(options, lb.WithZones(z))
	}
	pool := lb.NewPool(instancer, func(instance string) (endpoint.Endpoint, lb.Health, error) {
		e, guard, err := upstreams(instance)
		if err != nil {
			return nil, nil, err
		}
		return e, guard, nil
	}, log.With(o.Logger, "component", "pool"), options...)
	b := newBalancer(pool)
	return &Chain{pool: pool, balancer: b, retry: o.Retry, call: lb.Retry(b, o.Retry)}, nil
}

// Endpoint serves both requests of endpoints.Set through the chain.
func (c *Chain) Endpoint() endpoint.Endpoint { return c.call }

// EndpointWith is Endpoint with a route's own timeout and retries: zero
// fields keep the chain's. The pool and the balancer are the same.
func (c *Chain) EndpointWith(timeout time.Duration, maxAttempts int) endpoint.Endpoint {
	o := c.retry
	if timeout > 0 {
		o.Timeout = timeout
		if o.AttemptTimeout > timeout {
			o.AttemptTimeout = timeout
		}
	}
	if maxAttempts > 0 {
		o.MaxAttempts = maxAttempts
	}
	return lb.Retry(c.balancer, o)
}

// Pool is the chain's set of instances, for metrics and /debug pages.
func (c *Chain) Pool() *lb.Pool { return c.pool }

// Close stops following the instancer and closes every instance's guard.
func (c *Chain) Close() { c.pool.Close() }

// The Guard of an upstream is what the pool sees as its health.
var _ lb.Health = (*Guard)(nil)
