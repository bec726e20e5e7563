package discovery

import (
	"context"
	"net"
	"strings"
	"time"

	"github.com/go-kit/kit/sd/consul"
	"github.com/hashicorp/consul/api"
)

// blockingWait is how long one blocking query may wait at Consul for a
// change. Long waits keep an idle member at well under one request per
// minute to Consul.
const blockingWait = 5 * time.Minute

// watchClient adapts *api.Client to Go kit's consul.Client and fixes three
// things the Go kit Instancer cannot do itself:
//   - its blocking queries carry a context, so Stop does not leave one
//     hanging for the whole wait time;
//   - IPv6 addresses come back bracketed, because the Instancer formats
//     instances with "%s:%d";
//   - every outcome feeds a Reachability, which logs once per change.
type watchClient struct {
	ctx    context.Context
	consul *api.Client
	reach  *Reachability
}

var _ consul.Client = (*watchClient)(nil)

func (c *watchClient) Register(r *api.AgentServiceRegistration) error {
	return c.consul.Agent().ServiceRegister(r)
}

func (c *watchClient) Deregister(r *api.AgentServiceRegistration) error {
	return c.consul.Agent().ServiceDeregister(r.ID)
}

func (c *watchClient) Service(service, tag string, passingOnly bool, q *api.QueryOptions) ([]*api.ServiceEntry, *api.QueryMeta, error) {
	if q == nil {
		q = &api.QueryOptions{}
	}
	q.WaitTime = blockingWait
	q = q.WithContext(c.ctx)
	entries, meta, err := c.consul.Health().Service(service, tag, passingOnly, q)
	c.reach.Observe(err)
	if err != nil {
		return nil, nil, err
	}
	for _, e := range entries {
		addr := e.Service.Address
		if addr == "" {
			addr = e.Node.Address
		}
		e.Service.Address = bracketIPv6(addr)
	}
	return entries, meta, nil
}

// bracketIPv6 returns addr so that "addr:port" is a valid host:port.
func bracketIPv6(addr string) string {
	if ip := net.ParseIP(addr); ip != nil && ip.To4() == nil && !strings.HasPrefix(addr, "[") {
		return "[" + addr + "]"
	}
	return addr
}
