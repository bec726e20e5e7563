package lb

import (
	"math/rand/v2"
)

// PeakEWMA picks two candidates at random and takes the one with the lower
// cost (latency average times outstanding requests), as Linkerd and Finagle
// do. A slow instance quickly receives less than its share; an idle fast one
// receives more. This member's own instance, called in-process, is usually
// the cheapest, so a member keeps a large share of its own traffic.
type PeakEWMA struct{ policy }

// NewPeakEWMA returns a power-of-two-choices balancer over p.
func NewPeakEWMA(p *Pool) *PeakEWMA { return &PeakEWMA{policy{p, rand.IntN}} }

// Pick implements Picker.
func (b *PeakEWMA) Pick(exclude []*Upstream) (*Upstream, error) {
	var buf [maxStackCandidates]*Upstream
	c, err := b.pool.available(buf[:0], exclude)
	if err != nil {
		return nil, err
	}
	return b.choose(c), nil
}

// choose takes the cheaper of two distinct random candidates.
func (b *PeakEWMA) choose(c []*Upstream) *Upstream {
	if len(c) == 1 {
		return c[0]
	}
	i := b.intn(len(c))
	j := b.intn(len(c) - 1)
	if j >= i {
		j++
	}
	now := b.pool.now()
	if c[j].cost(now) < c[i].cost(now) {
		return c[j]
	}
	return c[i]
}
