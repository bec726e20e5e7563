package lb

import (
	"sync"
	"sync/atomic"
	"time"
)

// Zones makes a pool prefer the upstreams in its own zone, as Envoy's
// zone-aware routing does, and spill over to the other zones only while
// the local one is short of healthy upstreams or much slower than the
// others. Zero fields get the defaults below.
type Zones struct {
	// Local is this member's zone; "" (not known yet, or none) means no
	// preference.
	Local func() string
	// Of is an instance's zone, asked once when it joins the pool.
	Of func(instance string) string
	// MinHealthy: the pool spills over while fewer local upstreams than
	// this are healthy (breaker not open). Envoy's min_cluster_size
	// plays the same part.
	MinHealthy int
	// SpillRatio: the pool spills over while the local upstreams' mean
	// latency average is more than this times the remote ones', both over
	// the upstreams called at least once (so the ratio applies once the
	// pool has measured another zone: after a spill-over or a retry).
	SpillRatio float64
	// Hold is how long the reasons to spill must have been gone before the
	// pool returns to its zone: the hysteresis that keeps it from
	// flapping. Spilling over is immediate.
	Hold time.Duration
	// Changed, if set, is told each change, with the reason.
	Changed func(spilling bool, reason string)
}

// Defaults of Zones, measured in BENCHMARKS.md ("Zones").
const (
	DefaultZoneMinHealthy = 2
	DefaultZoneSpillRatio = 4
	DefaultZoneHold       = 5 * time.Second
)

// zoneReturnFraction of SpillRatio is the latency ratio under which the
// local zone counts as recovered: below SpillRatio, so that a ratio
// hovering at the threshold does not switch the pool back and forth.
const zoneReturnFraction = 0.5

// zoneEvery is how often the decision is revisited: often enough that a
// spill-over shows within a few milliseconds, rarely enough that a pick
// rarely pays for it.
const zoneEvery = 10 * time.Millisecond

// zonePolicy holds the decision and its hysteresis.
type zonePolicy struct {
	Zones
	next     atomic.Int64 // unix nanos of the next evaluation
	spilling atomic.Bool
	mu       sync.Mutex // serialises evaluations
	reason   string
	since    time.Time // of the current state
	okSince  time.Time // since when no reason to spill (zero: there is one)
	ratio    float64   // last measured local/remote latency ratio
	counts   atomic.Pointer[map[string]*atomic.Int64]
	countsMu sync.Mutex
}

func newZonePolicy(z Zones) *zonePolicy {
	if z.MinHealthy <= 0 {
		z.MinHealthy = DefaultZoneMinHealthy
	}
	if z.SpillRatio <= 0 {
		z.SpillRatio = DefaultZoneSpillRatio
	}
	if z.Hold <= 0 {
		z.Hold = DefaultZoneHold
	}
	if z.Of == nil {
		z.Of = func(string) string { return "" }
	}
	if z.Local == nil {
		z.Local = func() string { return "" }
	}
	zp := &zonePolicy{Zones: z, reason: "local zone healthy"}
	zp.counts.Store(&map[string]*atomic.Int64{})
	return zp
}

// maxZones bounds the zones counted apart: a zone is what peers register,
// and each one is a metric series. The rest count as "other".
const maxZones = 32

// counter returns the request counter of zone, made once.
func (z *zonePolicy) counter(zone string) *atomic.Int64 {
	if c := (*z.counts.Load())[zone]; c != nil {
		return c
	}
	z.countsMu.Lock()
	defer z.countsMu.Unlock()
	old := *z.counts.Load()
	if c := old[zone]; c != nil {
		return c
	}
	if len(old) >= maxZones {
		zone = "other"
		if c := old[zone]; c != nil {
			return c
		}
	}
	next := make(map[string]*atomic.Int64, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	c := &atomic.Int64{}
	next[zone] = c
	z.counts.Store(&next)
	return c
}

// filter narrows the candidates c to the local zone's, unless the pool
// is spilling over or none of them is left (a retry that has tried every
// local one goes elsewhere rather than fail).
func (z *zonePolicy) filter(c, set []*Upstream, clock func() time.Time) []*Upstream {
	local := z.Local()
	if local == "" {
		return c // no zone: no clock read either, on every pick
	}
	if now := clock(); now.UnixNano() >= z.next.Load() {
		z.evaluate(set, local, now)
	}
	if z.spilling.Load() {
		return c
	}
	var n int
	for _, u := range c {
		if u.Zone == local {
			n++
		}
	}
	if n == 0 || n == len(c) {
		return c
	}
	out := c[:0]
	for _, u := range c {
		if u.Zone == local {
			out = append(out, u)
		}
	}
	return out
}

// evaluate revisits the decision from the whole set.
func (z *zonePolicy) evaluate(set []*Upstream, local string, now time.Time) {
	z.mu.Lock()
	defer z.mu.Unlock()
	if now.UnixNano() < z.next.Load() {
		return // another pick did it
	}
	z.next.Store(now.Add(zoneEvery).UnixNano())
	var healthy, remote, measuredLocal, measuredRemote int
	var localLatency, remoteLatency float64
	for _, u := range set {
		// Healthy is a breaker not open: a spent rate limit is a moment's
		// state, and must not send the pool out of its zone for a hold.
		if u.State() == "open" {
			continue
		}
		// Only measured upstreams count towards the latency ratio: the
		// average of one never called is a guess.
		measured := u.requests.Load() > 0
		if u.Zone == local {
			healthy++
			if measured {
				measuredLocal++
				localLatency += u.latency()
			}
		} else {
			remote++
			if measured {
				measuredRemote++
				remoteLatency += u.latency()
			}
		}
	}
	if remote == 0 {
		// Nowhere to spill to: the candidates are all local anyway. The
		// state is kept, so that it does not flap while remote breakers
		// open and close.
		return
	}
	z.ratio = 0
	if measuredLocal > 0 && measuredRemote > 0 && remoteLatency > 0 {
		z.ratio = (localLatency / float64(measuredLocal)) / (remoteLatency / float64(measuredRemote))
	}
	var why string
	switch {
	case healthy < z.MinHealthy:
		why = "too few healthy upstreams in the local zone"
	case z.ratio > z.SpillRatio:
		why = "local zone's latency above the spill ratio"
	case z.spilling.Load() && z.ratio > z.SpillRatio*zoneReturnFraction:
		why = "local zone's latency not yet back under half the spill ratio"
	}
	if why != "" {
		z.okSince = time.Time{}
		z.set(true, why, now)
		return
	}
	if !z.spilling.Load() {
		return
	}
	if z.okSince.IsZero() {
		z.okSince = now
	}
	if now.Sub(z.okSince) >= z.Hold {
		z.set(false, "local zone healthy", now)
	}
}

// set records a state and its reason; a change is told.
func (z *zonePolicy) set(spilling bool, reason string, now time.Time) {
	z.reason = reason
	if z.spilling.Load() == spilling {
		return
	}
	z.spilling.Store(spilling)
	z.since = now
	if z.Changed != nil {
		z.Changed(spilling, reason)
	}
}

// ZoneSnapshot describes the zone decision for operators (/debug/mesh).
type ZoneSnapshot struct {
	Local        string           `json:"local"`
	Spilling     bool             `json:"spilling"`
	Reason       string           `json:"reason"`
	Since        time.Time        `json:"since,omitzero"`
	LatencyRatio float64          `json:"latency_ratio"` // local mean latency / remote, at the last evaluation; 0 until both are measured
	Requests     map[string]int64 `json:"requests"`      // sent to each zone's upstreams ("" for none)
}

func (z *zonePolicy) snapshot() ZoneSnapshot {
	z.mu.Lock()
	s := ZoneSnapshot{Local: z.Local(), Spilling: z.spilling.Load(), Reason: z.reason, Since: z.since, LatencyRatio: z.ratio}
	z.mu.Unlock()
	s.Requests = map[string]int64{}
	for k, v := range *z.counts.Load() {
		s.Requests[k] = v.Load()
	}
	return s
}
