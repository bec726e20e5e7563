package discovery

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/go-kit/kit/metrics"
	"github.com/go-kit/log"
	"github.com/hashicorp/consul/api"
)

// Intentions decides, per request, whether the Connect client that sent it
// may call this member's service, by asking the local agent
// (ConnectAuthorize), which applies the service's intentions.
//
// Decisions are cached for TTL per caller identity (its whole SPIFFE ID:
// trust domain, partition, namespace, datacenter and service), so that a
// new deny takes effect within TTL even on kept-alive connections. At most
// one question per identity is in flight: concurrent requests wait on it.
// A decision still in use shortly before it expires is asked again in the
// background, so that a steady caller never waits on the agent.
type Intentions struct {
	target string
	ttl    time.Duration
	ask    func(ctx context.Context, target, uri, serial string) (allowed bool, reason string, err error)
	o      IntentionsOptions
	now    func() time.Time

	mu      sync.Mutex
	cache   map[string]*cached // by client URI
	flights sync.WaitGroup     // questions in flight, for tests
}

// cached is what one caller identity has: its last decision, and the
// question in flight, if any.
type cached struct {
	d        decision
	have     bool
	flight   chan struct{} // closed when the question in flight is answered
	failedAt time.Time     // when the agent last failed to answer
	waiters  int           // requests waiting on flight, for tests
}

type decision struct {
	allowed bool
	reason  string
	at      time.Time
}

// IntentionsOptions are the companions of Intentions. All may be nil.
type IntentionsOptions struct {
	// Denied counts denied requests, labelled source (the caller's
	// service).
	Denied metrics.Counter
	// Asked counts the questions to the agent, labelled result (allowed,
	// denied, error).
	Asked metrics.Counter
	// Logger gets one line per change of decision for a source.
	Logger log.Logger
}

// maxCachedClients bounds the decision cache: one entry per calling
// service identity, so a mesh of a few services never comes near it.
const maxCachedClients = 1024

// staleFor is how long a decision may outlive its TTL while the agent
// does not answer: an agent restart must not stop the mesh, and the
// decision is as fresh as the agent could make it.
const staleFor = time.Minute

// askTimeout bounds one question to the agent.
const askTimeout = 2 * time.Second

// staleWait is how long a request with a stale decision at hand waits for
// the agent's new answer before it takes the stale one: a hung agent must
// not turn into 503s for callers whose deadlines are shorter than
// askTimeout.
const staleWait = 100 * time.Millisecond

// failedPause is how long after a failed question the agent is not asked
// again about the same caller: a down agent costs one question a second
// per caller, not one per request.
const failedPause = time.Second

// ErrCannotAuthorize says the agent could not be asked and no recent
// decision is known. The request is refused, but not as a denial: the
// caller may try another instance.
var ErrCannotAuthorize = errors.New("cannot check intentions: the Consul agent does not answer")

// NewIntentions returns the per-request authorizer of service target.
func NewIntentions(client *Client, target string, ttl time.Duration, o IntentionsOptions) *Intentions {
	ask := func(ctx context.Context, target, uri, serial string) (bool, string, error) {
		a, err := client.ConnectAuthorize(ctx, target, uri, serial)
		if err != nil {
			return false, "", err
		}
		return a.Authorized, a.Reason, nil
	}
	return newIntentions(target, ttl, ask, time.Now, o)
}

// NewEgressIntentions returns the authorizer of this member's own calls,
// as service source, to service target: an edge asks it before it serves
// a request itself. It asks /v1/connect/intentions/check, which needs only
// service:read on target (the agent's authorize endpoint would need
// service:write on it, enough to impersonate its instances).
func NewEgressIntentions(client *Client, source, target string, ttl time.Duration, o IntentionsOptions) *Intentions {
	ask := func(ctx context.Context, target, _, _ string) (bool, string, error) {
		// AllowStale: any server answers, so that an edge can still tell
		// while the cluster has no leader.
		allowed, _, err := client.Connect().IntentionCheck(&api.IntentionCheck{Source: source, Destination: target, SourceType: api.IntentionSourceConsul}, (&api.QueryOptions{AllowStale: true}).WithContext(ctx))
		if err != nil {
			return false, "", err
		}
		return allowed, "intention check of " + source + " calling " + target, nil
	}
	return newIntentions(target, ttl, ask, time.Now, o)
}

func newIntentions(target string, ttl time.Duration, ask func(context.Context, string, string, string) (bool, string, error), now func() time.Time, o IntentionsOptions) *Intentions {
	if o.Logger == nil {
		o.Logger = log.NewNopLogger()
	}
	return &Intentions{target: target, ttl: ttl, ask: ask, o: o, now: now, cache: map[string]*cached{}}
}

// refreshAhead is how long before its expiry a decision in use is asked
// again: a tenth of the TTL, so that a steady caller costs the agent about
// one question per TTL.
func (in *Intentions) refreshAhead() time.Duration { return in.ttl / 10 }

// Allow returns nil if the client of the TLS connection cs may call the
// target service, a *DeniedError if an intention forbids it, and
// ErrCannotAuthorize (wrapped) if the agent cannot tell.
func (in *Intentions) Allow(ctx context.Context, cs *tls.ConnectionState) error {
	if cs == nil || len(cs.PeerCertificates) == 0 {
		return &DeniedError{Source: "(no certificate)", Target: in.target, Reason: "not a Connect client"}
	}
	peer := cs.PeerCertificates[0]
	sid, ok := serviceID(peer)
	if !ok {
		return &DeniedError{Source: "(no service identity)", Target: in.target, Reason: "not a Connect service"}
	}
	return in.allow(ctx, sid, serialHex(peer.SerialNumber))
}

// AllowSelf is Allow for this member's own identity as the caller: an
// edge asks whether it may call its upstream service before it serves a
// request itself.
func (in *Intentions) AllowSelf(ctx context.Context, id *Identity) error {
	s := id.state.Load()
	if s.leaf == nil {
		return fmt.Errorf("%w: %w", ErrCannotAuthorize, errNotReady)
	}
	return in.allow(ctx, s.id, serialHex(s.leaf.SerialNumber))
}

func (in *Intentions) allow(ctx context.Context, sid spiffeID, serial string) error {
	d, err := in.decide(ctx, sid.String(), serial)
	if err != nil {
		return err
	}
	if d.allowed {
		return nil
	}
	if in.o.Denied != nil {
		in.o.Denied.With("source", sid.service).Add(1)
	}
	return &DeniedError{Source: sid.service, Target: in.target, Reason: d.reason}
}

// decide returns the decision for uri: the cached one while fresh (asking
// again in the background near its end), else the answer of the one
// question in flight.
func (in *Intentions) decide(ctx context.Context, uri, serial string) (decision, error) {
	now := in.now()
	in.mu.Lock()
	c := in.cache[uri]
	if c == nil {
		c = &cached{}
		if in.room(now) {
			in.cache[uri] = c
		}
	}
	age := now.Sub(c.d.at)
	paused := now.Sub(c.failedAt) < failedPause
	if c.have && age < in.ttl {
		if age >= in.ttl-in.refreshAhead() && c.flight == nil && !paused {
			in.start(c, uri, serial)
		}
		d := c.d
		in.mu.Unlock()
		return d, nil
	}
	if c.flight == nil {
		if paused {
			// The agent just failed: answer from what is known.
			defer in.mu.Unlock()
			return in.known(c, now, uri)
		}
		in.start(c, uri, serial)
	}
	flight := c.flight
	c.waiters++
	in.mu.Unlock()
	defer func() {
		in.mu.Lock()
		c.waiters--
		in.mu.Unlock()
	}()

	// A slow agent: after staleWait, a stale decision answers if it may
	// (see usable); otherwise the request waits for the agent, as long as
	// its own deadline allows.
	wait := time.NewTimer(staleWait)
	defer wait.Stop()
	for {
		select {
		case <-flight:
			in.mu.Lock()
			defer in.mu.Unlock()
			return in.known(c, in.now(), uri)
		case <-wait.C:
			in.mu.Lock()
			if d, ok := in.usable(c, in.now()); ok {
				in.mu.Unlock()
				return d, nil
			}
			in.mu.Unlock()
		case <-ctx.Done():
			in.mu.Lock()
			defer in.mu.Unlock()
			if d, ok := in.usable(c, in.now()); ok {
				return d, nil
			}
			return decision{}, fmt.Errorf("%w: %w", ErrCannotAuthorize, ctx.Err())
		}
	}
}

// known returns c's decision if it is fresh, or a stale one that may
// answer. Called with in.mu held.
func (in *Intentions) known(c *cached, now time.Time, uri string) (decision, error) {
	if d, ok := in.usable(c, now); ok {
		return d, nil
	}
	return decision{}, fmt.Errorf("%w: no decision for %s", ErrCannotAuthorize, uri)
}

// usable returns c's decision if it is fresh; or stale within staleFor
// and either a deny (refusing on old news fails closed) or kept while the
// agent fails to answer (an agent restart must not stop the mesh). A
// working agent that is merely slow never lets an old allow answer past
// the TTL. Called with in.mu held.
func (in *Intentions) usable(c *cached, now time.Time) (decision, bool) {
	age := now.Sub(c.d.at)
	switch {
	case !c.have:
		return decision{}, false
	case age < in.ttl:
		return c.d, true
	case age < in.ttl+staleFor && (!c.d.allowed || now.Sub(c.failedAt) < staleFor):
		return c.d, true
	}
	return decision{}, false
}

// room reports whether the cache can take one more identity, dropping
// expired ones if it must. Without room every request of that identity
// asks the agent.
func (in *Intentions) room(now time.Time) bool {
	if len(in.cache) < maxCachedClients {
		return true
	}
	for k, v := range in.cache {
		if v.flight == nil && now.Sub(v.d.at) >= in.ttl+staleFor {
			delete(in.cache, k)
		}
	}
	return len(in.cache) < maxCachedClients
}

// start asks the agent about uri for c, in the background: the question
// is never cut short by the request that started it, since others wait on
// it too. Called with in.mu held.
func (in *Intentions) start(c *cached, uri, serial string) {
	c.flight = make(chan struct{})
	in.flights.Add(1)
	go func() {
		defer in.flights.Done()
		// Dated when asked: the answer is no older than that, and a deny
		// written later takes effect within TTL of this moment.
		at := in.now()
		ctx, cancel := context.WithTimeout(context.Background(), askTimeout)
		allowed, reason, err := in.ask(ctx, in.target, uri, serial)
		cancel()
		result := "error"
		if err == nil {
			result = map[bool]string{true: "allowed", false: "denied"}[allowed]
		}
		if in.o.Asked != nil {
			in.o.Asked.With("result", result).Add(1)
		}
		in.mu.Lock()
		old, had := c.d, c.have
		if err == nil {
			c.d, c.have = decision{allowed: allowed, reason: reason, at: at}, true
			c.failedAt = time.Time{}
		} else {
			c.failedAt = in.now()
		}
		close(c.flight)
		c.flight = nil
		in.mu.Unlock()
		if err == nil && (!had || old.allowed != allowed) {
			in.o.Logger.Log("source", uri, "target", in.target, "allowed", allowed, "reason", reason)
		}
	}()
}

// DeniedError is a request refused by an intention.
type DeniedError struct {
	Source, Target, Reason string
}

func (e *DeniedError) Error() string {
	return fmt.Sprintf("intention denies %s calling %s: %s", e.Source, e.Target, e.Reason)
}
