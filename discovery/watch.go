package discovery

import (
	"context"
	"errors"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/go-kit/kit/metrics"
	"github.com/go-kit/kit/sd/consul"
	"github.com/hashicorp/consul/api"
)

// blockingWait is how long one blocking query may wait at Consul for a
// change. Long waits keep an idle member at well under one request per
// minute to Consul.
const blockingWait = 5 * time.Minute

// watchClient adapts *api.Client to Go kit's consul.Client and fixes what
// the Go kit Instancer cannot do itself:
//   - its blocking queries carry a context, so Stop does not leave one
//     hanging for the whole wait time;
//   - IPv6 addresses come back bracketed, because the Instancer formats
//     instances with "%s:%d";
//   - every outcome feeds a Reachability, which logs once per change;
//   - outages are retried here, with a short cap (see Service).
type watchClient struct {
	ctx        context.Context
	consul     *api.Client
	reach      *Reachability
	reason     *lastReason
	failures   metrics.Counter // may be nil
	authorize  Authorizer      // may be nil
	connect    bool            // query /v1/health/connect
	filter     string          // Consul's filter expression, applied by Consul
	datacenter string          // "" is the agent's
	zones      *zoneMap        // may be nil
	started    atomic.Bool
}

var _ consul.Client = (*watchClient)(nil)

func (c *watchClient) Register(r *api.AgentServiceRegistration) error {
	return c.consul.Agent().ServiceRegister(r)
}

func (c *watchClient) Deregister(r *api.AgentServiceRegistration) error {
	return c.consul.Agent().ServiceDeregister(r.ID)
}

// firstQueryTimeout bounds the first query, which Go kit's NewInstancer
// runs before it returns: a member must serve within a second whatever
// Consul does, even when an agent accepts connections and never answers.
// Later queries run in the Instancer's own goroutine.
const firstQueryTimeout = 500 * time.Millisecond

// queryTimeout bounds every later query: the blocking wait, plus the
// up-to-1/16 jitter Consul adds to it, plus time to answer. Without it a
// hung agent would hold a query forever.
const queryTimeout = blockingWait + blockingWait/16 + 30*time.Second

// Service runs one blocking query. While Consul is unreachable it retries
// by itself with capped, jittered backoff (see backoff.go) instead
// of returning the error: Go kit's loop would log every failure and back off
// up to a minute, and we want the last known set kept, one log line per
// change, and a quick recovery. After a failure it asks without a wait
// index: a restarted Consul starts its index again from low values, and a
// query that waits for the old index to pass would block for the whole
// wait time.
func (c *watchClient) Service(service, tag string, passingOnly bool, q *api.QueryOptions) ([]*api.ServiceEntry, *api.QueryMeta, error) {
	if q == nil {
		q = &api.QueryOptions{}
	}
	q.WaitTime = blockingWait
	q.Filter, q.Datacenter = c.filter, c.datacenter
	backoff := minBackoff
	for {
		timeout := queryTimeout
		first := !c.started.Load()
		if first {
			timeout = firstQueryTimeout
		}
		ctx, cancel := context.WithTimeout(c.ctx, timeout)
		query := c.consul.Health().Service
		if c.connect {
			query = c.consul.Health().Connect
		}
		entries, meta, err := query(service, tag, passingOnly, q.WithContext(ctx))
		cancel()
		c.reach.Observe(err)
		if err != nil && c.failures != nil && c.ctx.Err() == nil {
			c.failures.With("op", "discover", "kind", failureKind(err)).Add(1)
		}
		if err == nil {
			c.started.Store(true)
			if c.filtered(c.ctx, service, entries, meta) {
				c.reason.set(describe("discover", service, errFiltered), true, "op", "discover")
				if c.failures != nil {
					c.failures.With("op", "discover", "kind", "denied").Add(1)
				}
			} else {
				c.reason.clear()
			}
			for _, e := range entries {
				addr := e.Service.Address
				if addr == "" {
					addr = e.Node.Address
				}
				e.Service.Address = bracketIPv6(instanceHost(addr, ""))
			}
			if c.zones != nil {
				c.zones.store(entries)
			}
			return entries, meta, nil
		}
		// An agent that answers and refuses (a 403 for a missing ACL
		// permission) is said once per reason; one that does not answer
		// is Reachability's to say.
		var refused api.StatusError
		if errors.As(err, &refused) {
			c.reason.set(describe("discover", service, err), true, "op", "discover")
		}
		// The first call comes from NewInstancer itself, which must not
		// block a member's start while Consul is away.
		if c.ctx.Err() != nil || !c.started.Swap(true) {
			return nil, nil, err
		}
		if !pause(c.ctx, backoff) {
			return nil, nil, c.ctx.Err()
		}
		backoff = nextBackoff(backoff)
		q.WaitIndex = 0
	}
}

// filtered reports whether Consul answered with an empty set because the
// token may not read the service: under default-deny ACLs an empty set is
// checked with the Authorizer, if there is one.
func (c *watchClient) filtered(ctx context.Context, service string, entries []*api.ServiceEntry, meta *api.QueryMeta) bool {
	if meta.ResultsFilteredByACLs {
		return true
	}
	if len(entries) > 0 || meta.DefaultACLPolicy != "deny" || c.authorize == nil {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, firstQueryTimeout)
	defer cancel()
	allowed, err := c.authorize(ctx, service)
	return err == nil && !allowed
}

// bracketIPv6 returns addr so that "addr:port" is a valid host:port: an
// IPv6 address, zone included, in brackets. Go kit's Instancer formats
// instances with "%s:%d".
func bracketIPv6(addr string) string {
	if ip, err := netip.ParseAddr(addr); err == nil && ip.Is6() {
		return "[" + addr + "]"
	}
	return addr
}
