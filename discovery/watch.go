package discovery

import (
	"context"
	"net"
	"strings"
	"sync/atomic"
	"time"

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
	ctx     context.Context
	consul  *api.Client
	reach   *Reachability
	started atomic.Bool
}

var _ consul.Client = (*watchClient)(nil)

func (c *watchClient) Register(r *api.AgentServiceRegistration) error {
	return c.consul.Agent().ServiceRegister(r)
}

func (c *watchClient) Deregister(r *api.AgentServiceRegistration) error {
	return c.consul.Agent().ServiceDeregister(r.ID)
}

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
	q = q.WithContext(c.ctx)
	backoff := minBackoff
	for {
		entries, meta, err := c.consul.Health().Service(service, tag, passingOnly, q)
		c.reach.Observe(err)
		if err == nil {
			c.started.Store(true)
			for _, e := range entries {
				addr := e.Service.Address
				if addr == "" {
					addr = e.Node.Address
				}
				e.Service.Address = bracketIPv6(addr)
			}
			return entries, meta, nil
		}
		// The first call comes from NewInstancer itself, which must not
		// block a member's start while Consul is away.
		if c.ctx.Err() != nil || !c.started.Swap(true) {
			return nil, nil, err
		}
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-c.ctx.Done():
			t.Stop()
			return nil, nil, c.ctx.Err()
		}
		backoff = nextBackoff(backoff)
		q.WaitIndex = 0
	}
}

// bracketIPv6 returns addr so that "addr:port" is a valid host:port.
func bracketIPv6(addr string) string {
	if ip := net.ParseIP(addr); ip != nil && ip.To4() == nil && !strings.HasPrefix(addr, "[") {
		return "[" + addr + "]"
	}
	return addr
}
