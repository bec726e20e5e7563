package lb

import (
	"fmt"
	"strings"

	kitlb "github.com/go-kit/kit/sd/lb"
)

// Picker chooses an upstream, never one in exclude. It returns
// ErrNoEndpoints when there is none left to choose.
type Picker interface {
	Pick(exclude []*Upstream) (*Upstream, error)
}

// Balancer is a policy over a Pool: a Picker, which lb.Retry calls.
type Balancer interface {
	Picker
}

// ErrNoEndpoints is Go kit's: no instance is available.
var ErrNoEndpoints = kitlb.ErrNoEndpoints

// NewBalancerFunc builds a balancer over a pool.
type NewBalancerFunc func(*Pool) Balancer

// policies lists every balancer by name, the default first. It is the one
// place that names them.
func policies() []struct {
	name string
	new  NewBalancerFunc
} {
	return []struct {
		name string
		new  NewBalancerFunc
	}{
		{"p2c", func(p *Pool) Balancer { return NewPeakEWMA(p) }},
		{"roundrobin", func(p *Pool) Balancer { return NewRoundRobin(p) }},
		{"random", func(p *Pool) Balancer { return NewRandom(p) }},
	}
}

// BalancerNames returns the names ParseBalancer accepts, the default first.
func BalancerNames() []string {
	var names []string
	for _, p := range policies() {
		names = append(names, p.name)
	}
	return names
}

// ParseBalancer returns the constructor of the balancer called name: "p2c"
// (power of two choices over peak EWMA latency), "roundrobin" or "random".
func ParseBalancer(name string) (NewBalancerFunc, error) {
	for _, p := range policies() {
		if p.name == name {
			return p.new, nil
		}
	}
	return nil, fmt.Errorf("unknown balancer %q (want one of %s)", name, strings.Join(BalancerNames(), ", "))
}

// policy is what every balancer holds: the pool it reads, and a random
// source that tests replace to make a policy deterministic, as grpc-go's
// balancer tests do.
type policy struct {
	pool *Pool
	intn func(n int) int
}

// available gathers the candidates into buf, which a balancer's Pick keeps
// on its stack, and says when there are none. (A shared pick taking the
// policy's choice as a func value made buf escape: one allocation per
// request.)
func (p *Pool) available(buf, exclude []*Upstream) ([]*Upstream, error) {
	c := p.candidates(buf, exclude)
	if len(c) == 0 {
		return nil, ErrNoEndpoints
	}
	return c, nil
}
