package discovery

import (
	"context"

	"github.com/go-kit/kit/metrics"
	"github.com/go-kit/kit/sd"
	"github.com/go-kit/kit/sd/consul"
	"github.com/go-kit/log"
	"github.com/hashicorp/consul/api"
)

// Instancer is Go kit's Consul instancer for the passing instances of one
// service, with a Stop that also cancels the blocking query in flight.
//
// While Consul is unreachable it keeps retrying and publishes nothing, so
// subscribers keep the last known set, which is what a member wants during
// an outage. An empty passing set is delivered as an empty set.
type Instancer struct {
	*consul.Instancer
	cancel context.CancelFunc
	reason *lastReason
	zones  *zoneMap
}

// ZoneOf returns the zone of an instance of the last set found (see
// ZoneKey), or "" when it has none. It is known before the instance is
// published.
func (i *Instancer) ZoneOf(instance string) string { return i.zones.of(instance) }

// LastError says why Consul refuses the discovery query (a missing ACL
// permission), or "" when it answers.
func (i *Instancer) LastError() string { return i.reason.get() }

// InstancerOptions are the Instancer's companions. All may be nil.
type InstancerOptions struct {
	// Reach is told the outcome of every query.
	Reach *Reachability
	// Failures counts failed queries, labelled op="discover" and kind
	// (see failureKind).
	Failures metrics.Counter
	// Logger gets one line per change of the reason Consul refuses the
	// query, instead of Go kit's line per failure.
	Logger log.Logger
	// Authorize, when set, tells an empty set from one the token may not
	// read (see Authorizer).
	Authorize Authorizer
	// Connect discovers the service's Connect-capable instances (Consul's
	// /v1/health/connect): for a Connect-native service, its mesh ports.
	Connect bool
	// Filter is a filter expression over the health entries (a
	// service-resolver subset's, e.g. "v2" in Service.Tags), which Consul
	// applies: the member never downloads the instances it would drop.
	Filter string
	// Datacenter is where to look; "" is the agent's own.
	Datacenter string
}

// NewInstancer starts watching the passing instances of service, filtered by
// tags. It returns within about half a second whatever Consul does.
func NewInstancer(client *api.Client, service string, tags []string, o InstancerOptions) *Instancer {
	if o.Reach == nil {
		o.Reach = NewReachability(log.NewNopLogger())
	}
	if o.Logger == nil {
		o.Logger = log.NewNopLogger()
	}
	ctx, cancel := context.WithCancel(context.Background())
	why := &lastReason{logger: o.Logger}
	zones := &zoneMap{}
	wc := &watchClient{ctx: ctx, zones: zones, consul: client, reach: o.Reach, failures: o.Failures, authorize: o.Authorize, reason: why, connect: o.Connect, filter: o.Filter, datacenter: o.Datacenter}
	return &Instancer{
		Instancer: consul.NewInstancer(wc, withoutErrors(o.Logger), service, tags, true),
		cancel:    cancel,
		reason:    why,
		zones:     zones,
	}
}

// Stop ends the watch and cancels its query in flight.
func (i *Instancer) Stop() {
	i.Instancer.Stop()
	i.cancel()
}

var _ sd.Instancer = (*Instancer)(nil)

// withoutErrors drops log lines that carry an "err" key. Go kit's instancer
// and endpoint cache log every failed query; during an outage that is one
// line per retry, which Reachability replaces with one line per change.
func withoutErrors(logger log.Logger) log.Logger {
	return log.LoggerFunc(func(keyvals ...interface{}) error {
		for i := 0; i < len(keyvals); i += 2 {
			if keyvals[i] == "err" {
				return nil
			}
		}
		return logger.Log(keyvals...)
	})
}
