package lb

import (
	"sync/atomic"
)

// RoundRobin takes the candidates in turn.
type RoundRobin struct {
	policy
	next atomic.Uint64
}

// NewRoundRobin returns a round-robin balancer over p.
func NewRoundRobin(p *Pool) *RoundRobin { return &RoundRobin{policy: policy{pool: p}} }

// Pick implements Picker.
func (b *RoundRobin) Pick(exclude []*Upstream) (*Upstream, error) {
	var buf [maxStackCandidates]*Upstream
	c, err := b.pool.available(buf[:0], exclude)
	if err != nil {
		return nil, err
	}
	return c[(b.next.Add(1)-1)%uint64(len(c))], nil
}
