package lb

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/go-kit/log"
)

func TestRetry(t *testing.T) {
	t.Run("never the same instance twice", func(t *testing.T) {
		a, b, c := &fakeInstance{}, &fakeInstance{}, &fakeInstance{}
		for _, f := range []*fakeInstance{a, b, c} {
			f.fail.Store(true)
		}
		p := testPool(t, nil, a, b, c)
		bal := NewRandom(p)
		e := Retry(bal, RetryOptions{MaxAttempts: 5, Budget: NewBudget(1, 100)})
		_, err := e(context.Background(), nil)
		if err == nil {
			t.Fatal("want an error, have none")
		}
		for i, f := range []*fakeInstance{a, b, c} {
			if have := f.calls.Load(); have != 1 {
				t.Errorf("instance %d: want 1 call, have %d", i, have)
			}
		}
	})

	t.Run("moves on from a dead instance", func(t *testing.T) {
		dead, live := &fakeInstance{}, &fakeInstance{}
		dead.fail.Store(true)
		p := testPool(t, nil, dead, live)
		bal := NewRoundRobin(p)
		e := Retry(bal, RetryOptions{MaxAttempts: 3, Budget: NewBudget(0.2, 1000)})
		for i := 0; i < 100; i++ {
			if _, err := e(context.Background(), nil); err != nil {
				t.Fatalf("request %d: %v", i, err)
			}
		}
		if live.calls.Load() != 100 {
			t.Errorf("live instance: want 100 calls, have %d", live.calls.Load())
		}
	})

	t.Run("attempt timeout moves a hung request on", func(t *testing.T) {
		hung, live := &fakeInstance{hang: true}, &fakeInstance{}
		p := testPool(t, nil, hung, live)
		bal := NewRoundRobin(p)
		e := Retry(bal, RetryOptions{MaxAttempts: 2, Timeout: 5 * time.Second, AttemptTimeout: 20 * time.Millisecond, Budget: NewBudget(1, 100)})
		for i := 0; i < 4; i++ {
			if _, err := e(context.Background(), nil); err != nil {
				t.Fatalf("request %d: %v", i, err)
			}
		}
		if hung.calls.Load() == 0 {
			t.Error("the hung instance was never tried; the test proves nothing")
		}
	})

	t.Run("caller's deadline wins", func(t *testing.T) {
		hung := &fakeInstance{hang: true}
		p := testPool(t, nil, hung)
		bal := NewPeakEWMA(p)
		e := Retry(bal, RetryOptions{Timeout: time.Minute, AttemptTimeout: time.Minute, Budget: NewBudget(1, 100)})
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		begin := time.Now()
		_, err := e(ctx, nil)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("want DeadlineExceeded, have %v", err)
		}
		if took := time.Since(begin); took > 10*time.Second {
			t.Errorf("want the caller's 50ms deadline to end it, took %v", took)
		}
	})

	t.Run("no attempt once the caller's deadline has passed, timer or not", func(t *testing.T) {
		a, b := &fakeInstance{}, &fakeInstance{}
		a.fail.Store(true)
		b.fail.Store(true)
		p := testPool(t, nil, a, b)
		e := Retry(NewRoundRobin(p), RetryOptions{MaxAttempts: 2, Budget: NewBudget(1, 100)})
		_, err := e(passedDeadline{context.Background()}, nil)
		if calls := a.calls.Load() + b.calls.Load(); calls != 0 {
			t.Errorf("want no attempt, have %d", calls)
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("want DeadlineExceeded, have %v", err)
		}
	})

	t.Run("overall timeout bounds every attempt", func(t *testing.T) {
		// Three hung instances, attempts of 2 s each within 100 ms in all:
		// the first attempt is cut at the overall deadline, and no other
		// starts after it.
		a, b, c := &fakeInstance{hang: true}, &fakeInstance{hang: true}, &fakeInstance{hang: true}
		p := testPool(t, nil, a, b, c)
		e := Retry(NewRoundRobin(p), RetryOptions{MaxAttempts: 3, Timeout: 100 * time.Millisecond, AttemptTimeout: 2 * time.Second, Budget: NewBudget(1, 100)})
		begin := time.Now()
		_, err := e(context.Background(), nil)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("want DeadlineExceeded, have %v", err)
		}
		if took := time.Since(begin); took > 1500*time.Millisecond {
			t.Errorf("want the overall 100ms to end it long before one 2s attempt, took %v", took)
		}
		if calls := a.calls.Load() + b.calls.Load() + c.calls.Load(); calls != 1 {
			t.Errorf("want 1 attempt, the one the overall deadline cut, have %d", calls)
		}
	})

	t.Run("empty set says so at once", func(t *testing.T) {
		bal := NewPeakEWMA(newPool(log.NewNopLogger()))
		if _, err := Retry(bal, RetryOptions{})(context.Background(), nil); !errors.Is(err, ErrNoEndpoints) {
			t.Errorf("want ErrNoEndpoints, have %v", err)
		}
	})
}

// passedDeadline is a context whose deadline has passed but whose timer
// has not fired: Err is still nil, as on a loaded machine.
type passedDeadline struct{ context.Context }

func (passedDeadline) Deadline() (time.Time, bool) { return time.Now().Add(-time.Millisecond), true }
