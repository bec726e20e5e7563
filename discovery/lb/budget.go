package lb

import (
	"errors"
	"sync"

	"golang.org/x/time/rate"
)

// ErrBudgetExhausted says that a request was not retried because the retry
// budget was spent.
var ErrBudgetExhausted = errors.New("retry budget exhausted")

// Budget allows retries up to a ratio of requests plus a small floor per
// second, as Linkerd and Finagle do. When a whole cluster fails, clients
// then add at most ratio more load instead of multiplying it by the number
// of attempts.
type Budget struct {
	mu      sync.Mutex
	ratio   float64
	balance float64
	max     float64
	floor   *rate.Limiter
}

// NewBudget allows retries of ratio (e.g. 0.2) of requests, plus
// minPerSecond retries every second whatever the traffic.
func NewBudget(ratio, minPerSecond float64) *Budget {
	burst := int(minPerSecond)
	if burst < 1 {
		burst = 1
	}
	return &Budget{
		ratio: ratio,
		// A short window: a burst of requests can fund at most this many
		// retries in advance.
		max:   100 * ratio,
		floor: rate.NewLimiter(rate.Limit(minPerSecond), burst),
	}
}

func (b *Budget) deposit() {
	if b == nil {
		return
	}
	b.mu.Lock()
	b.balance += b.ratio
	if b.balance > b.max {
		b.balance = b.max
	}
	b.mu.Unlock()
}

func (b *Budget) withdraw() bool {
	if b == nil {
		return false
	}
	b.mu.Lock()
	if b.balance >= 1 {
		b.balance--
		b.mu.Unlock()
		return true
	}
	b.mu.Unlock()
	return b.floor.Allow()
}
