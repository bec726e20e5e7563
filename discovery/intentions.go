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
)

// Intentions decides, per request, whether the Connect client that sent it
// may call this member's service, by asking the local agent
// (ConnectAuthorize), which applies the service's intentions. Decisions
// are cached for TTL, so that a new deny takes effect within TTL even on
// kept-alive connections, and the agent sees at most one question per
// client identity per TTL.
type Intentions struct {
	target string
	ttl    time.Duration
	ask    func(ctx context.Context, target, uri, serial string) (allowed bool, reason string, err error)
	o      IntentionsOptions
	now    func() time.Time

	mu    sync.Mutex
	cache map[string]decision // by client URI
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

// ErrCannotAuthorize says the agent could not be asked and no recent
// decision is known. The request is refused, but not as a denial: the
// caller may try another instance.
var ErrCannotAuthorize = errors.New("cannot check intentions: the Consul agent does not answer")

// NewIntentions returns the per-request authorizer of service target.
func NewIntentions(client *Client, target string, ttl time.Duration, o IntentionsOptions) *Intentions {
	if o.Logger == nil {
		o.Logger = log.NewNopLogger()
	}
	ask := func(ctx context.Context, target, uri, serial string) (bool, string, error) {
		a, err := client.ConnectAuthorize(ctx, target, uri, serial)
		if err != nil {
			return false, "", err
		}
		return a.Authorized, a.Reason, nil
	}
	return &Intentions{target: target, ttl: ttl, ask: ask, o: o, now: time.Now, cache: map[string]decision{}}
}

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
	uri := sid.String()
	now := in.now()
	in.mu.Lock()
	d, cached := in.cache[uri]
	in.mu.Unlock()
	if !cached || now.Sub(d.at) >= in.ttl {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		allowed, reason, err := in.ask(ctx, in.target, uri, serialHex(peer.SerialNumber))
		cancel()
		switch {
		case err != nil && cached && now.Sub(d.at) < in.ttl+staleFor:
			// Keep the last decision for a while.
		case err != nil:
			return fmt.Errorf("%w: %v", ErrCannotAuthorize, err)
		default:
			d = decision{allowed: allowed, reason: reason, at: now}
			in.store(uri, d)
		}
	}
	if d.allowed {
		return nil
	}
	if in.o.Denied != nil {
		in.o.Denied.With("source", sid.service).Add(1)
	}
	return &DeniedError{Source: sid.service, Target: in.target, Reason: d.reason}
}

// store caches d for uri and logs a changed decision for that source.
func (in *Intentions) store(uri string, d decision) {
	in.mu.Lock()
	old, had := in.cache[uri]
	if !had && len(in.cache) >= maxCachedClients {
		for k, v := range in.cache {
			if d.at.Sub(v.at) >= in.ttl {
				delete(in.cache, k)
			}
		}
		if len(in.cache) >= maxCachedClients {
			in.mu.Unlock()
			return // not cached: every request of this client asks the agent
		}
	}
	in.cache[uri] = d
	in.mu.Unlock()
	if !had || old.allowed != d.allowed {
		in.o.Logger.Log("source", uri, "target", in.target, "allowed", d.allowed, "reason", d.reason)
	}
}

// DeniedError is a request refused by an intention.
type DeniedError struct {
	Source, Target, Reason string
}

func (e *DeniedError) Error() string {
	return fmt.Sprintf("intention denies %s calling %s: %s", e.Source, e.Target, e.Reason)
}
