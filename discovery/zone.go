package discovery

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/go-kit/log"
	"github.com/hashicorp/consul/api"
)

// ZoneKey is the meta key that names an instance's zone: the service's
// meta (a member registers its -service.zone there), or else its node's
// (an agent started with -node-meta zone:a), as Kubernetes nodes carry
// topology.kubernetes.io/zone.
const ZoneKey = "zone"

// entryZone is the zone of one health entry: the service's meta first,
// then its node's.
func entryZone(e *api.ServiceEntry) string {
	if z := e.Service.Meta[ZoneKey]; z != "" {
		return z
	}
	if e.Node != nil {
		return e.Node.Meta[ZoneKey]
	}
	return ""
}

// zoneMap maps an instance, as Go kit's instancer formats it
// ("address:port"), to its zone. It is written before the instancer
// publishes the set the zones came with, so a pool that asks when an
// instance joins always finds its zone.
type zoneMap struct {
	m atomic.Pointer[map[string]string]
}

func (z *zoneMap) store(entries []*api.ServiceEntry) {
	m := make(map[string]string, len(entries))
	for _, e := range entries {
		if zone := entryZone(e); zone != "" {
			m[fmt.Sprintf("%s:%d", e.Service.Address, e.Service.Port)] = zone
		}
	}
	z.m.Store(&m)
}

func (z *zoneMap) of(instance string) string {
	if m := z.m.Load(); m != nil {
		return (*m)[instance]
	}
	return ""
}

// LocalZone is this member's zone: the one it was given, or else the
// meta "zone" of its agent's node, asked for until the agent answers.
type LocalZone struct {
	zone   atomic.Pointer[string]
	cancel context.CancelFunc
	done   chan struct{}
}

// NewLocalZone returns given as the zone if it is not empty. Otherwise it
// asks the agent in the background, with capped backoff, and logs the
// zone once it knows it; until then Get returns "" (no zone, so no
// preference). Stop ends the asking.
func NewLocalZone(client *api.Client, given string, logger log.Logger) *LocalZone {
	ctx, cancel := context.WithCancel(context.Background())
	l := &LocalZone{cancel: cancel, done: make(chan struct{})}
	l.zone.Store(&given)
	if given != "" || client == nil {
		close(l.done)
		return l
	}
	go func() {
		defer close(l.done)
		backoff := minBackoff
		why := &lastReason{logger: logger}
		for {
			var self struct{ Meta map[string]string }
			qctx, qcancel := context.WithTimeout(ctx, callTimeout)
			_, err := client.Raw().Query("/v1/agent/self", &self, (&api.QueryOptions{}).WithContext(qctx))
			qcancel()
			wait := backoff
			if err != nil && ctx.Err() == nil {
				// Once per reason: until the agent answers there is no
				// zone preference. A token without agent:read is told so
				// once, and asked again only every deniedRecheck: the
				// token file may still be being written, or rotated to
				// one that has it (see NewToken).
				why.set(describe("zone", "agent self", err), true, "op", "zone", "msg", "no zone preference until the agent says its node meta; set -service.zone instead")
				if failureKind(err) == "denied" {
					wait = deniedRecheck
				}
			}
			if err == nil {
				z := self.Meta[ZoneKey]
				l.zone.Store(&z)
				if z != "" {
					logger.Log("zone", z, "from", "node meta")
				}
				return
			}
			if !pause(ctx, wait) {
				return
			}
			backoff = nextBackoff(backoff)
		}
	}()
	return l
}

// deniedRecheck is how often a zone lookup the agent refused is tried
// again: rarely, since the shipped member policy has no agent:read.
var deniedRecheck = 30 * time.Second // a variable for tests

// Get returns the zone, "" while it is not known or there is none.
func (l *LocalZone) Get() string { return *l.zone.Load() }

// Stop ends the asking and waits for it.
func (l *LocalZone) Stop() {
	l.cancel()
	<-l.done
}
