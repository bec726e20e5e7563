package lb

import (
	"context"
	"testing"

	"github.com/kitmesh/stringsvc/internal/metricstest"
)

// TestRetryBudget sends 1,000 requests to a dead cluster of three and
// counts the attempts: without a budget there would be 3,000.
func TestRetryBudget(t *testing.T) {
	fakes := []*fakeInstance{{}, {}, {}}
	for _, f := range fakes {
		f.fail.Store(true)
	}
	p := testPool(t, nil, fakes...)
	bal := NewRandom(p)
	outcomes := metricstest.NewRecorder()
	e := Retry(bal, RetryOptions{MaxAttempts: 3, Budget: NewBudget(0.2, 10), Attempts: outcomes})
	const requests = 1000
	for i := 0; i < requests; i++ {
		e(context.Background(), nil)
	}
	var attempts int64
	for _, f := range fakes {
		attempts += f.calls.Load()
	}
	retries := attempts - requests
	// 20% of requests plus the floor's burst of 10 (and at most a few more
	// if the loop took seconds).
	if max := int64(0.2*requests) + 10 + 50; retries > max {
		t.Errorf("retries: want at most %d, have %d", max, retries)
	}
	if retries < int64(0.2*requests)-1 {
		t.Errorf("retries: want the budget used (about %d), have %d", int(0.2*requests), retries)
	}
	exhausted, failures := outcomes.Sum("outcome", "budget_exhausted"), outcomes.Sum("outcome", "failure")
	if exhausted == 0 || failures != float64(attempts) {
		t.Errorf("outcome counts: want budget_exhausted > 0 and failure = %d, have %v and %v", attempts, exhausted, failures)
	}
}
