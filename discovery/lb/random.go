package lb

import (
	"math/rand/v2"
)

// Random picks a candidate uniformly. math/rand/v2's top-level functions
// are safe for concurrent use, unlike the shared source of Go kit's
// lb.NewRandom.
type Random struct{ policy }

// NewRandom returns a uniformly random balancer over p.
func NewRandom(p *Pool) *Random { return &Random{policy{p, rand.IntN}} }

// Pick implements Picker.
func (b *Random) Pick(exclude []*Upstream) (*Upstream, error) {
	var buf [maxStackCandidates]*Upstream
	c, err := b.pool.available(buf[:0], exclude)
	if err != nil {
		return nil, err
	}
	return c[b.intn(len(c))], nil
}
