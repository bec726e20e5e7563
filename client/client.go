package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/sd"
	"github.com/go-kit/log"

	"github.com/kitmesh/stringsvc/discovery"
	"github.com/kitmesh/stringsvc/discovery/lb"
	"github.com/kitmesh/stringsvc/service"
	"github.com/kitmesh/stringsvc/transport"
	"github.com/kitmesh/stringsvc/transport/endpoints"
	"github.com/kitmesh/stringsvc/transport/http1"
)

// Option configures New and its siblings.
type Option func(*options)

type options struct {
	service        string
	tags           []string
	token          string
	tokenFile      string
	connectAs      string
	balancer       string
	maxAttempts    int
	timeout        time.Duration
	attemptTimeout time.Duration
	logger         log.Logger
}

// WithService names the Consul service to call; the default is
// "stringsvc".
func WithService(name string) Option { return func(o *options) { o.service = name } }

// WithTags calls only the instances that carry every tag.
func WithTags(tags ...string) Option { return func(o *options) { o.tags = tags } }

// WithToken sends an ACL token with every query to Consul. It needs
// service:read on the service and node:read.
func WithToken(secret string) Option { return func(o *options) { o.token = secret } }

// WithTokenFile reads the ACL token from file, again whenever it changes.
func WithTokenFile(file string) Option { return func(o *options) { o.tokenFile = file } }

// WithConnect makes the client a Connect-native caller named service: it
// calls the instances' mesh ports over mutual TLS with a certificate of
// that service from the agent, and checks that each instance proves to be
// the service it calls. Intentions decide whether it may. The token needs
// service:write on service, which the agent's leaf certificate requires.
func WithConnect(service string) Option { return func(o *options) { o.connectAs = service } }

// WithBalancer picks the balancing policy: "p2c" (the default),
// "roundrobin" or "random".
func WithBalancer(name string) Option { return func(o *options) { o.balancer = name } }

// WithRetries bounds a call: at most maxAttempts instances, each given
// attemptTimeout, all within timeout. The defaults are 3, 1 s and 1 s.
func WithRetries(maxAttempts int, timeout, attemptTimeout time.Duration) Option {
	return func(o *options) { o.maxAttempts, o.timeout, o.attemptTimeout = maxAttempts, timeout, attemptTimeout }
}

// WithLogger gets one line per change: of instances, breakers, and
// Consul's reachability. The default logs nothing.
func WithLogger(logger log.Logger) Option { return func(o *options) { o.logger = logger } }

// New returns a StringService whose calls go to the passing instances of
// the service in the Consul agent at consulAddr ("host:port" or a URL;
// Consul's CONSUL_* TLS variables apply). It watches Consul until ctx is
// done. Count answers 0 when every attempt failed; NewEndpoints gives the
// error.
func New(ctx context.Context, consulAddr string, opts ...Option) (service.StringService, error) {
	set, err := NewEndpoints(ctx, consulAddr, opts...)
	if err != nil {
		return nil, err
	}
	return set.Service(), nil
}

// NewFixed returns a StringService over a fixed list of instances,
// "host:port" or base URLs, with the same balancing and retries as New.
func NewFixed(ctx context.Context, instances []string, opts ...Option) (service.StringService, error) {
	set, err := NewFixedEndpoints(ctx, instances, opts...)
	if err != nil {
		return nil, err
	}
	return set.Service(), nil
}

// NewEndpoints is New at the level of endpoints: its Set's Count returns
// the error of a failed call.
func NewEndpoints(ctx context.Context, consulAddr string, opts ...Option) (endpoints.Set, error) {
	o := collect(opts)
	logger := o.logger
	token := discovery.NewToken(o.tokenFile, o.token, log.With(logger, "component", "consul"))
	consul, err := discovery.NewClient(consulAddr, token)
	if err != nil {
		return endpoints.Set{}, err
	}
	reach := discovery.NewReachability(log.With(logger, "component", "consul"))
	var identity *discovery.Identity
	if o.connectAs != "" {
		identity = discovery.NewIdentity(consul.Client, o.connectAs, discovery.IdentityOptions{Reach: reach, Logger: log.With(logger, "component", "connect")})
	}
	instancer := discovery.NewInstancer(consul.Client, o.service, o.tags, discovery.InstancerOptions{
		Reach:     reach,
		Logger:    log.With(logger, "component", "instancer"),
		Authorize: consul.CanRead,
		Connect:   identity != nil,
	})
	why := func() string {
		switch {
		case reach.Failing():
			return "Consul at " + consulAddr + " does not answer"
		case instancer.LastError() != "":
			return instancer.LastError()
		}
		return "Consul lists no passing instance of " + o.service
	}
	set, err := build(ctx, instancer, identity, why, o)
	if err != nil {
		instancer.Stop()
		if identity != nil {
			identity.Close()
		}
	}
	return set, err
}

// NewFixedEndpoints is NewFixed at the level of endpoints.
func NewFixedEndpoints(ctx context.Context, instances []string, opts ...Option) (endpoints.Set, error) {
	o := collect(opts)
	if o.connectAs != "" {
		return endpoints.Set{}, errors.New("client: WithConnect needs Consul's agent for certificates; use New")
	}
	if len(instances) == 0 {
		return endpoints.Set{}, errors.New("client: no instances")
	}
	for _, in := range instances {
		u, err := transport.ParseInstance(in)
		if err != nil {
			return endpoints.Set{}, fmt.Errorf("client: %w", err)
		}
		if u.Scheme != "http" {
			return endpoints.Set{}, fmt.Errorf("client: instance %q: members serve http, or mutual TLS through Consul (New with WithConnect)", in)
		}
	}
	return build(ctx, sd.FixedInstancer(instances), nil, nil, o)
}

func collect(opts []Option) options {
	o := options{service: "stringsvc", logger: log.NewNopLogger()}
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// Breaker and limiter settings of a Go program's client: the member's
// defaults.
const (
	breakerFailures = 5
	breakerTimeout  = 10 * time.Second
)

// ErrNoCertificate is a Connect client's answer while the agent has not
// given it a certificate: after the call's timeout (WithRetries), its
// context, or the client's lifetime, whichever ends first.
var ErrNoCertificate = fmt.Errorf("%w: no Connect certificate yet", service.ErrUnavailable)

// build puts the chain over instancer and tears it all down when ctx is
// done. why, if set, says why the pool is empty.
func build(ctx context.Context, instancer sd.Instancer, identity *discovery.Identity, why func() string, o options) (endpoints.Set, error) {
	rt := http1.NewTransport(0)
	up := UpstreamOptions{Transport: rt, BreakerFailures: breakerFailures, BreakerTimeout: breakerTimeout}
	if identity != nil {
		rt.TLS = identity.ClientTLS(o.service)
		rt.Track = identity.TrackClient(o.service)
		up.TLS = true
	}
	chain, err := NewChain(instancer, ChainOptions{
		Upstream: up,
		Balancer: o.balancer,
		Retry: lb.RetryOptions{
			MaxAttempts:    o.maxAttempts,
			Timeout:        o.timeout,
			AttemptTimeout: o.attemptTimeout,
			Budget:         lb.NewBudget(0.2, 10),
		},
		Logger: o.logger,
	})
	if err != nil {
		return endpoints.Set{}, err
	}
	go func() {
		<-ctx.Done()
		chain.Close()
		instancer.Stop()
		if identity != nil {
			identity.Close()
		}
		rt.CloseIdleConnections()
	}()
	call := closable(ctx, chain.Endpoint())
	if why != nil {
		call = explain(why, call)
	}
	if identity != nil {
		wait := o.timeout
		if wait <= 0 {
			wait = defaultTimeout
		}
		call = waitFor(ctx, identity, wait, call)
	}
	return endpoints.Set{UppercaseEndpoint: call, CountEndpoint: call}, nil
}

// ErrClosed is the answer of a client whose context is done.
var ErrClosed = errors.New("client: closed (its context is done)")

// closable refuses calls once lifetime is done: the instances it knew are
// no longer followed.
func closable(lifetime context.Context, next endpoint.Endpoint) endpoint.Endpoint {
	return func(ctx context.Context, request interface{}) (interface{}, error) {
		if lifetime.Err() != nil {
			return nil, ErrClosed
		}
		return next(ctx, request)
	}
}

// defaultTimeout is lb.Retry's, for the wait for a certificate.
const defaultTimeout = time.Second

// explain adds why to a call that found no instance.
func explain(why func() string, next endpoint.Endpoint) endpoint.Endpoint {
	return func(ctx context.Context, request interface{}) (interface{}, error) {
		response, err := next(ctx, request)
		if errors.Is(err, lb.ErrNoEndpoints) {
			err = fmt.Errorf("%w: %s", err, why())
		}
		return response, err
	}
}

// waitFor holds each call until identity has a certificate, within the
// call's context, the client's lifetime and timeout.
func waitFor(lifetime context.Context, identity *discovery.Identity, timeout time.Duration, next endpoint.Endpoint) endpoint.Endpoint {
	return func(ctx context.Context, request interface{}) (interface{}, error) {
		select {
		case <-identity.Ready():
			return next(ctx, request)
		default:
		}
		t := time.NewTimer(timeout)
		defer t.Stop()
		select {
		case <-identity.Ready():
			return next(ctx, request)
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %w", ErrNoCertificate, ctx.Err())
		case <-lifetime.Done():
			return nil, fmt.Errorf("%w: the client was closed", ErrNoCertificate)
		case <-t.C:
			return nil, fmt.Errorf("%w after %v", ErrNoCertificate, timeout)
		}
	}
}
