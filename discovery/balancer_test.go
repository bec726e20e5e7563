package discovery

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/sd/lb"
	"github.com/go-kit/log"
)

// fakeInstance is a unit-test stand-in for an instance: it fails or is slow
// as told, and counts its calls.
type fakeInstance struct {
	calls atomic.Int64
	fail  atomic.Bool
	delay time.Duration
	hang  bool
}

func (f *fakeInstance) endpoint(ctx context.Context, _ interface{}) (interface{}, error) {
	f.calls.Add(1)
	if f.hang {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	if f.delay > 0 {
		time.Sleep(f.delay)
	}
	if f.fail.Load() {
		return nil, errors.New("connection refused")
	}
	return "ok", nil
}

// testPool returns a pool holding the given instances, named i0, i1, ...
func testPool(t *testing.T, fakes ...*fakeInstance) *Pool {
	t.Helper()
	p := NewPool(log.NewNopLogger())
	f := p.Factory(func(instance string) (endpoint.Endpoint, io.Closer, error) {
		var i int
		fmt.Sscanf(instance, "i%d", &i)
		return fakes[i].endpoint, nil, nil
	})
	for i := range fakes {
		if _, _, err := f(fmt.Sprintf("i%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

func TestPoolFactoryLifecycle(t *testing.T) {
	p := NewPool(log.NewNopLogger())
	f := p.Factory(func(string) (endpoint.Endpoint, io.Closer, error) {
		return (&fakeInstance{}).endpoint, nil, nil
	})
	_, c1, _ := f("b:1")
	_, c2, _ := f("a:1")
	if have := len(p.Upstreams()); have != 2 {
		t.Fatalf("want 2 upstreams, have %d", have)
	}
	if first := p.Upstreams()[0].Instance; first != "a:1" {
		t.Errorf("want the set sorted, have %s first", first)
	}
	c1.Close()
	c2.Close()
	if have := len(p.Upstreams()); have != 0 {
		t.Errorf("want 0 upstreams after close, have %d", have)
	}
	for _, name := range []string{"p2c", "roundrobin", "random"} {
		b, _ := NewBalancer(name, p)
		if _, err := b.Endpoint(); !errors.Is(err, lb.ErrNoEndpoints) {
			t.Errorf("%s on an empty set: want ErrNoEndpoints, have %v", name, err)
		}
	}
	if _, err := NewBalancer("nope", p); err == nil {
		t.Error("want an error for an unknown balancer")
	}
}

func TestPickNeverReturnsExcluded(t *testing.T) {
	p := testPool(t, &fakeInstance{}, &fakeInstance{}, &fakeInstance{})
	for _, name := range []string{"p2c", "roundrobin", "random"} {
		b, _ := NewBalancer(name, p)
		for i := 0; i < 100; i++ {
			ex := []*Upstream{p.Upstreams()[i%3], p.Upstreams()[(i+1)%3]}
			u, err := b.Pick(ex)
			if err != nil || contains(ex, u) {
				t.Fatalf("%s: picked %v (err %v) with %v excluded", name, u, err, ex)
			}
		}
		if _, err := b.Pick(p.Upstreams()); !errors.Is(err, lb.ErrNoEndpoints) {
			t.Errorf("%s with all excluded: want ErrNoEndpoints, have %v", name, err)
		}
	}
}

// TestPeakEWMAAvoidsSlowInstance sends sequential traffic through each
// balancer to two fast instances and one slow one, and compares the slow
// one's share.
func TestPeakEWMAAvoidsSlowInstance(t *testing.T) {
	share := func(name string) float64 {
		fast1, fast2, slow := &fakeInstance{}, &fakeInstance{}, &fakeInstance{delay: 5 * time.Millisecond}
		p := testPool(t, fast1, fast2, slow)
		b, _ := NewBalancer(name, p)
		for i := 0; i < 300; i++ {
			e, err := b.Endpoint()
			if err != nil {
				t.Fatal(err)
			}
			e(context.Background(), nil)
		}
		return float64(slow.calls.Load()) / 300
	}
	rr, p2c := share("roundrobin"), share("p2c")
	if p2c > 0.1 || p2c >= rr/2 {
		t.Errorf("slow instance's share: want p2c well under round robin's %.2f, have %.2f", rr, p2c)
	}
}

func TestRetry(t *testing.T) {
	t.Run("never the same instance twice", func(t *testing.T) {
		a, b, c := &fakeInstance{}, &fakeInstance{}, &fakeInstance{}
		for _, f := range []*fakeInstance{a, b, c} {
			f.fail.Store(true)
		}
		p := testPool(t, a, b, c)
		bal, _ := NewBalancer("random", p)
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
		p := testPool(t, dead, live)
		bal, _ := NewBalancer("roundrobin", p)
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
		p := testPool(t, hung, live)
		bal, _ := NewBalancer("roundrobin", p)
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
		p := testPool(t, hung)
		bal, _ := NewBalancer("p2c", p)
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

	t.Run("empty set says so at once", func(t *testing.T) {
		bal, _ := NewBalancer("p2c", NewPool(log.NewNopLogger()))
		if _, err := Retry(bal, RetryOptions{})(context.Background(), nil); !errors.Is(err, lb.ErrNoEndpoints) {
			t.Errorf("want ErrNoEndpoints, have %v", err)
		}
	})
}

// TestRetryBudget sends 1,000 requests to a dead cluster of three and
// counts the attempts: without a budget there would be 3,000.
func TestRetryBudget(t *testing.T) {
	fakes := []*fakeInstance{{}, {}, {}}
	for _, f := range fakes {
		f.fail.Store(true)
	}
	p := testPool(t, fakes...)
	bal, _ := NewBalancer("random", p)
	var mu sync.Mutex
	outcomes := map[string]int{}
	e := Retry(bal, RetryOptions{MaxAttempts: 3, Budget: NewBudget(0.2, 10), Attempts: countFunc(func(lvs []string) {
		mu.Lock()
		outcomes[lvs[1]]++
		mu.Unlock()
	})})
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
	if outcomes["budget_exhausted"] == 0 || outcomes["failure"] != int(attempts) {
		t.Errorf("outcome counts: want budget_exhausted > 0 and failure = %d, have %v", attempts, outcomes)
	}
}

func TestBracketIPv6(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.1": "10.0.0.1", "::1": "[::1]", "fe80::1": "[fe80::1]", "[::1]": "[::1]", "node.consul": "node.consul",
	} {
		if have := bracketIPv6(in); have != want {
			t.Errorf("bracketIPv6(%q): want %q, have %q", in, want, have)
		}
	}
}
