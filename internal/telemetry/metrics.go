package telemetry

import (
	"fmt"
	"sort"

	"github.com/go-kit/kit/metrics"
	kitprometheus "github.com/go-kit/kit/metrics/prometheus"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kitmesh/stringsvc/internal/kitprom"
)

const namespace = "stringsvc"

// Metrics holds every metric of a member. The vectors are built here and
// registered on the member's own registry: Go kit's New*From helpers would
// register them globally. Counters and histograms use internal/kitprom.
type Metrics struct {
	registry       prometheus.Registerer
	Requests       metrics.Counter
	Duration       metrics.Histogram
	CountResult    metrics.Histogram
	Fallbacks      metrics.Counter
	Responses      metrics.Counter
	BreakerChanges metrics.Counter
	Attempts       metrics.Counter
	Registered     metrics.Gauge
	ConsulFailures metrics.Counter
	TLSRefused     metrics.Counter
	CertChanges    metrics.Counter
	Denied         metrics.Counter
	Authorize      metrics.Counter
	TargetRequests metrics.Counter
	Shed           metrics.Counter
	Expired        metrics.Counter
}

// NewMetrics builds every metric of a member and registers it on r.
func NewMetrics(r prometheus.Registerer) *Metrics {
	counter := func(name, help string, labels ...string) metrics.Counter {
		v := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: name, Help: help}, labels)
		r.MustRegister(v)
		return kitprom.NewCounter(v, labels...)
	}
	histogram := func(name, help string, buckets []float64, labels ...string) metrics.Histogram {
		v := prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace, Name: name, Help: help, Buckets: buckets}, labels)
		r.MustRegister(v)
		return kitprom.NewHistogram(v, labels...)
	}
	registered := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: namespace, Name: "registered",
		Help: "1 while this member is registered in Consul, 0 otherwise.",
	}, nil)
	r.MustRegister(registered)
	return &Metrics{
		registry: r,
		Requests: counter("requests_total",
			"Requests served by this member itself, by method and error.", "method", "error"),
		Duration: exemplars(histogram("request_duration_seconds",
			"Time to serve a request on this member, by method and error; exemplars link to the request's trace.",
			prometheus.ExponentialBuckets(0.000_01, 4, 10), "method", "error")),
		CountResult: histogram("count_result",
			"Results of Count, in bytes.", prometheus.ExponentialBuckets(1, 4, 10)),
		Fallbacks: counter("fallbacks_total",
			"Uppercase requests served locally because no upstream could take them, by reason.", "reason"),
		Responses: counter("http_responses_total",
			"HTTP answers by path and status code.", "path", "code"),
		BreakerChanges: counter("upstream_breaker_changes_total",
			"Circuit breaker state changes of upstreams, by new state; to=\"open\" is an ejection.", "to"),
		Attempts: counter("proxy_attempts_total",
			"Forwarding attempts by outcome (success, failure, budget_exhausted).", "outcome"),
		Registered: kitprometheus.NewGauge(registered),
		ConsulFailures: counter("consul_failures_total",
			"Calls to Consul that failed, by operation (advertise, register, watch, deregister, discover) and kind (denied is a 403: an ACL permission missing).", "op", "kind"),
		TLSRefused: counter("mesh_tls_refused_total",
			"Mesh TLS handshakes refused, by side (server: this member refused a client; client: it refused a server) and reason.", "side", "reason"),
		CertChanges: counter("mesh_certificate_changes_total",
			"Connect certificates taken from the agent, by what (leaf, roots): a renewal or a rotation.", "what"),
		Denied: counter("mesh_denied_total",
			"Mesh requests refused by intention, by side (server: this member refused a caller; client: a peer refused this member) and source service.", "side", "source"),
		TargetRequests: counter("proxy_target_requests_total",
			"Forwards by target of Consul's discovery chain (service, subset, datacenter): a canary's share.", "service", "subset", "datacenter"),
		Shed: counter("http_shed_total",
			"Requests refused with a fast 503 by the concurrency limit, by path.", "path"),
		Expired: counter("http_expired_total",
			"Requests dropped unserved because the deadline their X-Stringsvc-Timeout-Ms carried had passed."),
		Authorize: counter("mesh_authorize_calls_total",
			"Questions to the agent's /v1/agent/connect/authorize, by result (allowed, denied, error): about one per caller per -mesh.authz-cache.", "result"),
	}
}

// exemplars makes h attach the request's trace to its observations.
func exemplars(h metrics.Histogram) metrics.Histogram {
	return h.(kitprom.Histogram).WithExemplars(TraceExemplar)
}

// WatchPool exports the size of the upstream set.
func (m *Metrics) WatchPool(size func() int) {
	m.registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: namespace, Name: "upstreams",
		Help: "Instances in the current upstream set, this member included.",
	}, func() float64 { return float64(size()) }))
}

// WatchConsul exports whether Consul answers.
func (m *Metrics) WatchConsul(down func() bool) {
	m.registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: namespace, Name: "consul_reachable",
		Help: "0 once calls to Consul have failed for about a second, 1 again after the next success.",
	}, func() float64 {
		if down() {
			return 0
		}
		return 1
	}))
}

// WatchLimiter exports the concurrency limit, the requests in flight and
// those waiting for a slot.
func (m *Metrics) WatchLimiter(limit, inFlight, waiting func() int, algorithm string) {
	m.registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: namespace, Name: "http_waiting",
		Help: "Requests to the endpoints waiting in the queue for a slot (-http.max-queue).",
	}, func() float64 { return float64(waiting()) }))
	m.registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: namespace, Name: "http_concurrency_limit",
		Help:        "Requests to the endpoints this member serves at once before it sheds, as its limiter has set it.",
		ConstLabels: prometheus.Labels{"algorithm": algorithm},
	}, func() float64 { return float64(limit()) }))
	m.registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: namespace, Name: "http_inflight",
		Help: "Requests to the endpoints being served now.",
	}, func() float64 { return float64(inFlight()) }))
}

// ZoneSplit is where a pool's forwards went, by zone.
type ZoneSplit struct {
	Local    string           // this member's zone
	Spilling bool             // forwards leave it now
	Requests map[string]int64 // by zone, "" for none
}

// WatchZones exports the zone split of the default pool's requests, and
// whether it is spilling over to other zones; zones returns ok false
// without a zone preference, and nothing is exported then.
func (m *Metrics) WatchZones(zones func() (ZoneSplit, bool)) {
	m.registry.MustRegister(zoneCollector(zones))
}

var (
	zoneRequestsDesc = prometheus.NewDesc(namespace+"_upstream_zone_requests_total",
		"Calls the balancer made to the upstreams of each zone (\"\" for none, \"other\" past 32 zones), this member's own in-process instance included; local is \"true\" for this member's zone.",
		[]string{"zone", "local"}, nil)
	zoneSpillingDesc = prometheus.NewDesc(namespace+"_upstream_zone_spilling",
		"1 while forwards spill over from this member's zone to the others, 0 while they stay in it.",
		[]string{"zone"}, nil)
)

// zoneCollector reads the pool's counts at scrape time: the zones come
// and go with the instances.
type zoneCollector func() (ZoneSplit, bool)

func (z zoneCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- zoneRequestsDesc
	ch <- zoneSpillingDesc
}

func (z zoneCollector) Collect(ch chan<- prometheus.Metric) {
	s, ok := z()
	if !ok {
		return
	}
	names := make([]string, 0, len(s.Requests))
	for zone := range s.Requests {
		names = append(names, zone)
	}
	sort.Strings(names)
	for _, zone := range names {
		ch <- prometheus.MustNewConstMetric(zoneRequestsDesc, prometheus.CounterValue, float64(s.Requests[zone]), zone, fmt.Sprint(zone == s.Local && zone != ""))
	}
	spilling := 0.0
	if s.Spilling {
		spilling = 1
	}
	ch <- prometheus.MustNewConstMetric(zoneSpillingDesc, prometheus.GaugeValue, spilling, s.Local)
}
