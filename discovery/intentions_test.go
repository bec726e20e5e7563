package discovery

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"math/big"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kitmesh/stringsvc/internal/metricstest"
	"github.com/kitmesh/stringsvc/internal/poll"
)

// fakeClock is a clock that tests move by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) step(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// caller returns the TLS state of a client whose leaf names uri.
func caller(uri string) *tls.ConnectionState {
	u, _ := url.Parse(uri)
	return &tls.ConnectionState{PeerCertificates: []*x509.Certificate{{URIs: []*url.URL{u}, SerialNumber: big.NewInt(1)}}}
}

// countingAgent answers ConnectAuthorize as allow says, and counts. Each
// question waits for gate when it is set.
type countingAgent struct {
	asked atomic.Int64
	allow atomic.Bool
	gate  chan struct{}
	in    chan struct{} // told of every question, when set
}

func (a *countingAgent) ask(context.Context, string, string, string) (bool, string, error) {
	a.asked.Add(1)
	if a.in != nil {
		a.in <- struct{}{}
	}
	if a.gate != nil {
		<-a.gate
	}
	return a.allow.Load(), "by the test", nil
}

const web = "spiffe://td.consul/ns/default/dc/dc1/svc/web"

// Concurrent requests of one caller with nothing cached ask the agent
// once, and all get its answer.
func TestIntentionsAskOncePerCaller(t *testing.T) {
	agent := &countingAgent{gate: make(chan struct{})}
	agent.allow.Store(true)
	clock := &fakeClock{now: time.Unix(1000, 0)}
	in := newIntentions("api", 2*time.Second, agent.ask, clock.Now, IntentionsOptions{})
	const callers = 64
	errs := make(chan error, callers)
	for range callers {
		go func() { errs <- in.Allow(context.Background(), caller(web)) }()
	}
	// Every request waits on the one question before it is answered.
	if err := poll.Until(10*time.Second, time.Millisecond, func() error {
		in.mu.Lock()
		defer in.mu.Unlock()
		if c := in.cache[web]; c == nil || c.waiters != callers {
			return errors.New("not every request waits yet")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	close(agent.gate)
	for range callers {
		if err := <-errs; err != nil {
			t.Errorf("want allowed, have %v", err)
		}
	}
	if n := agent.asked.Load(); n != 1 {
		t.Errorf("%d concurrent requests of one caller: want 1 question to the agent, have %d", callers, n)
	}
}

// A caller that waits on a question in flight stops waiting at its own
// deadline, and is told the member cannot tell, not that it is denied,
// and that its deadline ended the wait (504, not 503, for an edge).
func TestIntentionsWaiterKeepsItsDeadline(t *testing.T) {
	agent := &countingAgent{gate: make(chan struct{})}
	defer close(agent.gate)
	in := newIntentions("api", 2*time.Second, agent.ask, time.Now, IntentionsOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := in.Allow(ctx, caller(web)); !errors.Is(err, ErrCannotAuthorize) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("want ErrCannotAuthorize and DeadlineExceeded at the caller's deadline, have %v", err)
	}
}

// A decision in use is asked again shortly before it expires, in the
// background: the request that notices is answered from the cache at once,
// and the next period starts from the new answer.
func TestIntentionsRefreshAhead(t *testing.T) {
	agent := &countingAgent{}
	agent.allow.Store(true)
	clock := &fakeClock{now: time.Unix(1000, 0)}
	ttl := 2 * time.Second
	in := newIntentions("api", ttl, agent.ask, clock.Now, IntentionsOptions{})
	if err := in.Allow(context.Background(), caller(web)); err != nil {
		t.Fatal(err)
	}
	agent.gate = make(chan struct{}) // the next question hangs until released
	agent.allow.Store(false)         // and the operator writes a deny
	clock.step(ttl - in.refreshAhead()/2)
	if err := in.Allow(context.Background(), caller(web)); err != nil {
		t.Errorf("near the end of the TTL: want the cached allow at once, have %v", err)
	}
	close(agent.gate)
	in.flights.Wait()
	if n := agent.asked.Load(); n != 2 {
		t.Errorf("want one question ahead of the expiry, have %d in all", n)
	}
	var de *DeniedError
	clock.step(in.refreshAhead())
	if err := in.Allow(context.Background(), caller(web)); !errors.As(err, &de) {
		t.Errorf("past the first TTL: want the deny written within it, have %v", err)
	}
	if n := agent.asked.Load(); n != 2 {
		t.Errorf("the refreshed decision is used without asking again: have %d questions", n)
	}
}

// Under steady load from one caller the agent sees about one question per
// TTL, never one per request, and no request waits on the agent after the
// first.
func TestIntentionsSteadyLoadCost(t *testing.T) {
	agent := &countingAgent{}
	agent.allow.Store(true)
	clock := &fakeClock{now: time.Unix(1000, 0)}
	ttl := 2 * time.Second
	asked := metricstest.NewRecorder()
	in := newIntentions("api", ttl, agent.ask, clock.Now, IntentionsOptions{Asked: asked})
	const periods, stepsPerPeriod, perStep = 30, 40, 16
	var wg sync.WaitGroup
	for step := range periods * stepsPerPeriod {
		if step > 0 {
			// Each step's refresh has finished, as it would on a real
			// agent in far less than a step.
			in.flights.Wait()
		}
		for range perStep {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := in.Allow(context.Background(), caller(web)); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		clock.step(ttl / stepsPerPeriod)
	}
	in.flights.Wait()
	n := agent.asked.Load()
	// One question per (TTL - refresh-ahead), plus the first.
	limit := int64(float64(periods)*float64(ttl)/float64(ttl-in.refreshAhead())) + 1
	t.Logf("%d requests over %d TTLs: %d questions", periods*stepsPerPeriod*perStep, periods, n)
	if n > limit || n < periods {
		t.Errorf("want between %d and %d questions, have %d", periods, limit, n)
	}
	if have := asked.Sum("result", "allowed"); have != float64(n) {
		t.Errorf("questions counted: want %d, have %v", n, have)
	}
}

// The same service name in another partition or namespace is another
// caller, with its own decision.
func TestIntentionsKeyedByPartitionAndNamespace(t *testing.T) {
	var asked []string
	var mu sync.Mutex
	in := newIntentions("api", 2*time.Second, func(_ context.Context, _, uri, _ string) (bool, string, error) {
		mu.Lock()
		defer mu.Unlock()
		asked = append(asked, uri)
		return uri == web, "by uri", nil
	}, time.Now, IntentionsOptions{})
	if err := in.Allow(context.Background(), caller(web)); err != nil {
		t.Fatalf("web in the default partition: want allowed, have %v", err)
	}
	for _, other := range []string{
		"spiffe://td.consul/ap/other/ns/default/dc/dc1/svc/web",
		"spiffe://td.consul/ns/other/dc/dc1/svc/web",
	} {
		var de *DeniedError
		if err := in.Allow(context.Background(), caller(other)); !errors.As(err, &de) {
			t.Errorf("%s: want its own decision (denied), have %v", other, err)
		}
	}
	if len(asked) != 3 || asked[1] != "spiffe://td.consul/ap/other/ns/default/dc/dc1/svc/web" {
		t.Errorf("want one question per identity, the partition passed on, have %q", asked)
	}
}

// A slow agent never lets an old allow answer past the TTL: the request
// waits for the answer, within its own deadline. An old deny answers
// after staleWait (refusing on old news fails closed), and so does an old
// allow once the agent has failed (an agent restart must not stop the
// mesh).
func TestIntentionsSlowAgent(t *testing.T) {
	ttl := time.Second
	setup := func(t *testing.T, allow bool) (*Intentions, *countingAgent, *fakeClock) {
		agent := &countingAgent{}
		agent.allow.Store(allow)
		clock := &fakeClock{now: time.Unix(1000, 0)}
		in := newIntentions("api", ttl, agent.ask, clock.Now, IntentionsOptions{})
		in.Allow(context.Background(), caller(web))
		agent.gate = make(chan struct{}) // slow from now on
		t.Cleanup(func() { close(agent.gate) })
		clock.step(ttl + ttl/2)
		return in, agent, clock
	}
	short := func() context.Context {
		ctx, cancel := context.WithTimeout(context.Background(), 5*staleWait)
		t.Cleanup(cancel)
		return ctx
	}
	t.Run("an old allow waits for the agent", func(t *testing.T) {
		in, _, _ := setup(t, true)
		if err := in.Allow(short(), caller(web)); !errors.Is(err, ErrCannotAuthorize) {
			t.Errorf("want ErrCannotAuthorize at the caller's deadline, never the old allow; have %v", err)
		}
	})
	t.Run("an old deny answers", func(t *testing.T) {
		in, agent, _ := setup(t, false)
		var de *DeniedError
		if err := in.Allow(short(), caller(web)); !errors.As(err, &de) {
			t.Errorf("want the old deny, have %v", err)
		}
		if n := agent.asked.Load(); n != 2 {
			t.Errorf("want one question in flight, have %d in all", n)
		}
	})
	t.Run("an old allow answers once the agent failed", func(t *testing.T) {
		agent := &countingAgent{}
		agent.allow.Store(true)
		clock := &fakeClock{now: time.Unix(1000, 0)}
		down := errors.New("connection refused")
		var fail atomic.Bool
		in := newIntentions("api", ttl, func(ctx context.Context, a, b, c string) (bool, string, error) {
			if fail.Load() {
				return false, "", down
			}
			return agent.ask(ctx, a, b, c)
		}, clock.Now, IntentionsOptions{})
		in.Allow(context.Background(), caller(web))
		fail.Store(true)
		clock.step(ttl + ttl/2)
		if err := in.Allow(short(), caller(web)); err != nil {
			t.Errorf("agent down, decision recent: want the old allow, have %v", err)
		}
	})
}

// A failed agent is asked again about a caller at most once per
// failedPause, whatever the number of requests.
func TestIntentionsFailedAgentIsNotAskedPerRequest(t *testing.T) {
	var asked atomic.Int64
	clock := &fakeClock{now: time.Unix(1000, 0)}
	in := newIntentions("api", time.Second, func(context.Context, string, string, string) (bool, string, error) {
		asked.Add(1)
		return false, "", errors.New("connection refused")
	}, clock.Now, IntentionsOptions{})
	for range 100 {
		if err := in.Allow(context.Background(), caller(web)); !errors.Is(err, ErrCannotAuthorize) {
			t.Fatalf("want ErrCannotAuthorize, have %v", err)
		}
	}
	if n := asked.Load(); n != 1 {
		t.Errorf("100 requests with the agent down: want 1 question, have %d", n)
	}
	clock.step(failedPause)
	in.Allow(context.Background(), caller(web))
	if n := asked.Load(); n != 2 {
		t.Errorf("after the pause: want a second question, have %d", n)
	}
}
