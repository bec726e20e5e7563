package discovery

import (
	"fmt"
	"math/rand/v2"
	"sync/atomic"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/sd/lb"
)

// Picker chooses an upstream, never one in exclude. It returns
// lb.ErrNoEndpoints when there is none left to choose.
type Picker interface {
	Pick(exclude []*Upstream) (*Upstream, error)
}

// Balancer is a Picker that also serves Go kit's lb.Balancer interface.
type Balancer interface {
	Picker
	lb.Balancer
}

// NewBalancer returns the balancer called name over p: "p2c" (the default:
// power of two choices over peak EWMA latency), "roundrobin" or "random".
func NewBalancer(name string, p *Pool) (Balancer, error) {
	switch name {
	case "", "p2c":
		return &PeakEWMA{pool: p}, nil
	case "roundrobin":
		return &RoundRobin{pool: p}, nil
	case "random":
		return &Random{pool: p}, nil
	default:
		return nil, fmt.Errorf("unknown balancer %q (want p2c, roundrobin or random)", name)
	}
}

// maxStackCandidates sizes the candidate buffer kept on the stack.
const maxStackCandidates = 16

// PeakEWMA picks two candidates at random and takes the one with the lower
// cost (latency average times outstanding requests), as Linkerd and Finagle
// do. A slow instance quickly receives less than its share; an idle fast one
// receives more. This member's own instance, called in-process, is usually
// the cheapest, so a member keeps a large share of its own traffic.
type PeakEWMA struct{ pool *Pool }

// Pick implements Picker.
func (b *PeakEWMA) Pick(exclude []*Upstream) (*Upstream, error) {
	var buf [maxStackCandidates]*Upstream
	c := b.pool.candidates(buf[:0], exclude)
	switch len(c) {
	case 0:
		return nil, lb.ErrNoEndpoints
	case 1:
		return c[0], nil
	}
	i := rand.IntN(len(c))
	j := rand.IntN(len(c) - 1)
	if j >= i {
		j++
	}
	now := b.pool.now()
	if c[j].cost(now) < c[i].cost(now) {
		return c[j], nil
	}
	return c[i], nil
}

// Endpoint implements lb.Balancer.
func (b *PeakEWMA) Endpoint() (endpoint.Endpoint, error) { return endpointOf(b.Pick(nil)) }

// RoundRobin takes the candidates in turn.
type RoundRobin struct {
	pool *Pool
	next atomic.Uint64
}

// Pick implements Picker.
func (b *RoundRobin) Pick(exclude []*Upstream) (*Upstream, error) {
	var buf [maxStackCandidates]*Upstream
	c := b.pool.candidates(buf[:0], exclude)
	if len(c) == 0 {
		return nil, lb.ErrNoEndpoints
	}
	return c[(b.next.Add(1)-1)%uint64(len(c))], nil
}

// Endpoint implements lb.Balancer.
func (b *RoundRobin) Endpoint() (endpoint.Endpoint, error) { return endpointOf(b.Pick(nil)) }

// Random picks a candidate uniformly. math/rand/v2's top-level functions
// are safe for concurrent use, unlike the shared source of Go kit's
// lb.NewRandom.
type Random struct{ pool *Pool }

// Pick implements Picker.
func (b *Random) Pick(exclude []*Upstream) (*Upstream, error) {
	var buf [maxStackCandidates]*Upstream
	c := b.pool.candidates(buf[:0], exclude)
	if len(c) == 0 {
		return nil, lb.ErrNoEndpoints
	}
	return c[rand.IntN(len(c))], nil
}

// Endpoint implements lb.Balancer.
func (b *Random) Endpoint() (endpoint.Endpoint, error) { return endpointOf(b.Pick(nil)) }

func endpointOf(u *Upstream, err error) (endpoint.Endpoint, error) {
	if err != nil {
		return nil, err
	}
	return u.Call, nil
}
