package limit

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// queue holds the requests waiting for a slot, first come first served.
// A closed-loop client resends at once after a refusal, so refusing
// costs CPU on both sides while the member is busiest; waiting costs a
// parked goroutine. The limit keeps the requests in service few, so
// their latency stays near the unloaded one, and the queue holds the
// rest until a slot frees, until their wait would outlive their
// deadline, or until the queue is full.
type queue struct {
	mu      sync.Mutex
	front   []*waiter // FIFO, served before back
	back    []*waiter // FIFO; granted or abandoned ones are removed
	max     int
	waiting atomic.Int64 // len(front)+len(back), read without the lock
	run     int          // front grants in a row while back waited
}

// frontRun is how many front waiters are granted in a row while back ones
// wait: the front goes first, but cannot starve the back.
const frontRun = 3

type waiter struct {
	granted chan Token // buffered: the releaser never blocks
}

// SetQueue lets up to n requests wait for a slot (see Wait); 0, the
// default, refuses at once. Call it before the limiter is used.
func (l *Limiter) SetQueue(n int) { l.q.max = n }

// Waiting is the number of requests waiting for a slot.
func (l *Limiter) Waiting() int { return int(l.q.waiting.Load()) }

// Wait is Acquire that, past the limit, waits in the queue for a slot:
// at most maxWait, never past ctx's deadline, and not after ctx is
// cancelled (a server may notice a client's departure only later). It
// returns ok=false at once when the queue is full, and when the wait ends
// without a slot. Waiters with first set are served before the others
// (but see frontRun), each kind in arrival order. A request that waited is timed
// from its admission: the algorithm judges the service, not the queue.
func (l *Limiter) Wait(ctx context.Context, maxWait time.Duration, first bool) (Token, bool) {
	if l.q.waiting.Load() == 0 {
		if t, ok := l.Acquire(); ok {
			return t, true
		}
	}
	if l.q.max <= 0 {
		return Token{}, false
	}
	if d, ok := ctx.Deadline(); ok {
		if left := time.Until(d); left < maxWait {
			maxWait = left
		}
	}
	if maxWait <= 0 {
		return Token{}, false
	}
	w := &waiter{granted: make(chan Token, 1)}
	l.q.mu.Lock()
	if int(l.q.waiting.Load()) >= l.q.max {
		l.q.mu.Unlock()
		return Token{}, false
	}
	if first {
		l.q.front = append(l.q.front, w)
	} else {
		l.q.back = append(l.q.back, w)
	}
	l.q.waiting.Add(1)
	l.q.mu.Unlock()
	l.dispatch() // a slot may have freed since Acquire failed
	timer := time.NewTimer(maxWait)
	defer timer.Stop()
	select {
	case t := <-w.granted:
		return admit(ctx, t)
	case <-timer.C:
	case <-ctx.Done():
	}
	if l.abandon(w) {
		return Token{}, false
	}
	return admit(ctx, <-w.granted) // granted while it gave up
}

// admit hands t over unless nobody waits for the answer any more: the
// caller has gone, or its deadline has passed (maxWait may end at the
// deadline a moment before ctx's timer, and a grant may race either).
func admit(ctx context.Context, t Token) (Token, bool) {
	if d, ok := ctx.Deadline(); ctx.Err() != nil || ok && !time.Now().Before(d) {
		t.Release(Ignore) // nobody waits for the answer
		return Token{}, false
	}
	return t, true
}

// abandon removes w from the queue; false if it was granted already.
func (l *Limiter) abandon(w *waiter) bool {
	l.q.mu.Lock()
	defer l.q.mu.Unlock()
	for _, q := range []*[]*waiter{&l.q.front, &l.q.back} {
		for i, x := range *q {
			if x == w {
				*q = append((*q)[:i], (*q)[i+1:]...)
				l.q.waiting.Add(-1)
				return true
			}
		}
	}
	return false
}

// dispatch grants free slots to the waiters, oldest first, the front
// before the back, but one back waiter after every frontRun front ones.
func (l *Limiter) dispatch() {
	if l.q.waiting.Load() == 0 {
		return
	}
	l.q.mu.Lock()
	defer l.q.mu.Unlock()
	for len(l.q.front)+len(l.q.back) > 0 {
		q := &l.q.front
		switch {
		case len(l.q.front) == 0:
			q = &l.q.back
		case len(l.q.back) > 0 && l.q.run >= frontRun:
			q = &l.q.back
		}
		t, ok := l.Acquire()
		if !ok {
			return
		}
		if q == &l.q.front && len(l.q.back) > 0 {
			l.q.run++
		} else {
			l.q.run = 0
		}
		w := (*q)[0]
		(*q)[0] = nil
		*q = (*q)[1:]
		l.q.waiting.Add(-1)
		w.granted <- t
	}
}
