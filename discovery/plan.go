package discovery

import (
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"
)

// Plan is a compiled discovery chain as a member applies it: routes tried
// in order, each splitting its requests over targets, each target a set of
// instances (a service, a subset, a datacenter) with its failover targets.
// What the member does not implement is listed in Unsupported, and the
// routes that need it are dropped, so that their requests take the default
// route: never somewhere else.
type Plan struct {
	// Default is true when no config entry shapes the chain.
	Default bool `json:"default"`
	// Routes are tried in order; the last matches every request.
	Routes []Route `json:"routes"`
	// Targets are every target a route or a failover names, by ID.
	Targets map[string]Target `json:"targets"`
	// Unsupported names, once each, the features the chain uses that the
	// member does not apply.
	Unsupported []string `json:"unsupported,omitempty"`

	query bool // a route matches on query parameters
}

// Route sends the requests it matches to its splits.
type Route struct {
	Match  *api.ServiceRouteHTTPMatch `json:"match,omitempty"` // nil matches all
	Splits []Split                    `json:"splits"`
	// The route's overrides of the member's own settings; zero means the
	// member's.
	RequestTimeout        time.Duration `json:"request_timeout,omitempty"`
	NumRetries            int           `json:"num_retries,omitempty"`
	RetryOnConnectFailure bool          `json:"retry_on_connect_failure,omitempty"`
	RetryOnStatusCodes    []uint32      `json:"retry_on_status_codes,omitempty"`

	match matcher
}

// Split is a share of a route's requests, in percent, and its target.
type Split struct {
	Weight   float32  `json:"weight"`
	Target   string   `json:"target"`
	Failover []string `json:"failover,omitempty"`
}

// Target is one set of instances of the chain.
type Target struct {
	ID             string        `json:"id"`
	Service        string        `json:"service"`
	Subset         string        `json:"subset,omitempty"`
	Datacenter     string        `json:"datacenter,omitempty"`
	Local          bool          `json:"local"`            // the chain's own datacenter
	Filter         string        `json:"filter,omitempty"` // Consul's filter expression over the health entry
	OnlyPassing    bool          `json:"only_passing,omitempty"`
	ConnectTimeout time.Duration `json:"connect_timeout,omitempty"`
}

// Request is what a route matches on.
type Request struct {
	Method string
	Path   string
	Header http.Header
	Host   string // Go keeps it out of Header
	Query  url.Values
}

// Route returns the first route that matches r, else the last one, the
// default route; nil only for a plan without routes.
func (p *Plan) Route(r Request) *Route {
	for i := range p.Routes {
		if p.Routes[i].match.matches(r) {
			return &p.Routes[i]
		}
	}
	if len(p.Routes) == 0 {
		return nil
	}
	return &p.Routes[len(p.Routes)-1] // what no route matches takes the default route
}

// MatchesQuery reports whether a route matches on query parameters, which
// are then worth parsing.
func (p *Plan) MatchesQuery() bool { return p.query }

// Pick returns the split that roll, a number in [0, 100), falls in.
func (rt *Route) Pick(roll float32) Split {
	var sum float32
	for _, s := range rt.Splits {
		sum += s.Weight
		if roll < sum {
			return s
		}
	}
	return rt.Splits[len(rt.Splits)-1] // weights summing to a hair under 100
}

// CompilePlan turns Consul's compiled chain into a Plan.
func CompilePlan(c *api.CompiledDiscoveryChain) *Plan {
	p := &Plan{Default: c.Default, Targets: map[string]Target{}}
	unsupported := map[string]bool{}
	say := func(format string, args ...interface{}) { unsupported[fmt.Sprintf(format, args...)] = true }
	if c.Protocol != "" && c.Protocol != "http" && !c.Default {
		say("protocol %q: only http routes, splits and subsets are applied", c.Protocol)
	}
	var walk func(node string, seen map[string]bool) ([]Split, bool)
	walk = func(name string, seen map[string]bool) ([]Split, bool) {
		n := c.Nodes[name]
		if n == nil || seen[name] {
			return nil, false
		}
		seen[name] = true
		defer delete(seen, name)
		if n.LoadBalancer != nil && n.LoadBalancer.Policy != "" {
			say("load balancer policy %q: the member's own balancer is used", n.LoadBalancer.Policy)
		}
		switch n.Type {
		case api.DiscoveryGraphNodeTypeSplitter:
			var out []Split
			for _, s := range n.Splits {
				sub, ok := walk(s.NextNode, seen)
				if !ok {
					return nil, false
				}
				for _, x := range sub {
					x.Weight = x.Weight * s.Weight / 100
					out = append(out, x)
				}
			}
			return out, len(out) > 0
		case api.DiscoveryGraphNodeTypeResolver:
			r := n.Resolver
			if r == nil || !p.addTarget(c, r.Target, say) {
				return nil, false
			}
			s := Split{Weight: 100, Target: r.Target}
			if r.Failover != nil {
				if r.Failover.Policy.Mode != "" && r.Failover.Policy.Mode != "sequential" {
					say("failover policy %q: failover targets are tried in order", r.Failover.Policy.Mode)
				}
				for _, t := range r.Failover.Targets {
					if p.addTarget(c, t, say) {
						s.Failover = append(s.Failover, t)
					}
				}
			}
			return []Split{s}, true
		}
		return nil, false
	}
	start := c.Nodes[c.StartNode]
	if start != nil && start.Type == api.DiscoveryGraphNodeTypeRouter {
		for _, r := range start.Routes {
			route, ok := compileRoute(r, say)
			if !ok {
				continue
			}
			if route.Splits, ok = walk(r.NextNode, map[string]bool{}); ok {
				p.Routes = append(p.Routes, route)
			}
		}
	} else if splits, ok := walk(c.StartNode, map[string]bool{}); ok {
		p.Routes = append(p.Routes, Route{Splits: splits})
	}
	if n := len(p.Routes); n == 0 || !matchesAll(p.Routes[n-1].Match) {
		// Requests no route matches go to the service's own default
		// target, as Envoy's catch-all route sends them.
		id := defaultTarget(c)
		if p.addTarget(c, id, say) {
			p.Routes = append(p.Routes, Route{Splits: []Split{{Weight: 100, Target: id}}})
		}
	}
	for _, rt := range p.Routes {
		p.query = p.query || rt.Match != nil && len(rt.Match.QueryParam) > 0
	}
	for u := range unsupported {
		p.Unsupported = append(p.Unsupported, u)
	}
	sort.Strings(p.Unsupported)
	return p
}

// matchesAll reports whether m matches every request: none, or the
// catch-all prefix "/" that Consul appends to a router's routes.
func matchesAll(m *api.ServiceRouteHTTPMatch) bool {
	return m == nil || m.PathPrefix == "/" && m.PathExact == "" && m.PathRegex == "" &&
		len(m.Header) == 0 && len(m.QueryParam) == 0 && len(m.Methods) == 0
}

// defaultTarget is the target of the chain's own service, default subset,
// local datacenter: where an unmatched request goes.
func defaultTarget(c *api.CompiledDiscoveryChain) string {
	for id, t := range c.Targets {
		if t.Service == c.ServiceName && t.ServiceSubset == "" && t.Datacenter == c.Datacenter {
			return id
		}
	}
	for _, n := range c.Nodes {
		if n.Type == api.DiscoveryGraphNodeTypeResolver && n.Resolver != nil && n.Resolver.Default {
			return n.Resolver.Target
		}
	}
	return ""
}

// consulConnectTimeout is the ConnectTimeout Consul gives every target that
// no resolver sets.
const consulConnectTimeout = 5 * time.Second

// addTarget adds the chain's target id to p, or reports false when the
// member cannot reach it.
func (p *Plan) addTarget(c *api.CompiledDiscoveryChain, id string, say func(string, ...interface{})) bool {
	t := c.Targets[id]
	if t == nil {
		return false
	}
	if t.External {
		say("target %s: external services are not reached by members", id)
		return false
	}
	if t.MeshGateway.Mode != "" && t.MeshGateway.Mode != api.MeshGatewayModeDefault && t.MeshGateway.Mode != api.MeshGatewayModeNone {
		say("target %s: mesh gateway mode %q: the member calls the datacenter's instances directly", id, t.MeshGateway.Mode)
	}
	if t.ConnectTimeout > 0 && t.ConnectTimeout != consulConnectTimeout {
		say("target %s: ConnectTimeout: the member's own dial timeout is used", id)
	}
	p.Targets[id] = Target{
		ID: id, Service: t.Service, Subset: t.ServiceSubset, Datacenter: t.Datacenter, Local: t.Datacenter == c.Datacenter,
		Filter: t.Subset.Filter, OnlyPassing: t.Subset.OnlyPassing, ConnectTimeout: t.ConnectTimeout,
	}
	return true
}

// compileRoute reads a router's route; a route that needs what the member
// cannot do is dropped, and said.
func compileRoute(r *api.DiscoveryRoute, say func(string, ...interface{})) (Route, bool) {
	var route Route
	def := r.Definition
	if def == nil {
		return route, true
	}
	if d := def.Destination; d != nil {
		switch {
		case d.PrefixRewrite != "":
			say("route destination PrefixRewrite: the route is not applied")
			return route, false
		case d.RequestHeaders != nil || d.ResponseHeaders != nil:
			say("route destination RequestHeaders/ResponseHeaders: the route is not applied")
			return route, false
		case len(d.RetryOn) > 0:
			say("route destination RetryOn: the route is not applied")
			return route, false
		}
		route.RequestTimeout = d.RequestTimeout
		route.NumRetries = int(d.NumRetries)
		route.RetryOnConnectFailure = d.RetryOnConnectFailure
		route.RetryOnStatusCodes = d.RetryOnStatusCodes
	}
	if def.Match == nil || def.Match.HTTP == nil {
		return route, true
	}
	if matchesAll(def.Match.HTTP) {
		route.Match = def.Match.HTTP // shown as written; matches every request
		return route, true
	}
	m, err := newMatcher(def.Match.HTTP)
	if err != nil {
		say("route match: %v: the route is not applied", err)
		return route, false
	}
	route.Match, route.match = def.Match.HTTP, m
	return route, true
}

// matcher is a route's match, compiled. The zero matcher matches all.
type matcher struct {
	m     *api.ServiceRouteHTTPMatch
	path  *regexp.Regexp
	heads []*regexp.Regexp // per header, for Regex
	keys  []string         // per header, its canonical name
	host  []bool           // per header, whether it names the Host
	query []*regexp.Regexp
}

func newMatcher(m *api.ServiceRouteHTTPMatch) (matcher, error) {
	out := matcher{m: m}
	var err error
	if m.PathRegex != "" {
		// As in Envoy, CaseInsensitive does not apply to a regex.
		if out.path, err = regexp.Compile("^(?:" + m.PathRegex + ")$"); err != nil {
			return out, fmt.Errorf("PathRegex %q: %w", m.PathRegex, err)
		}
	}
	for _, h := range m.Header {
		name := strings.ToLower(h.Name)
		out.keys = append(out.keys, http.CanonicalHeaderKey(h.Name))
		out.host = append(out.host, name == "host" || name == ":authority")
		var re *regexp.Regexp
		if h.Regex != "" {
			if re, err = regexp.Compile("^(?:" + h.Regex + ")$"); err != nil {
				return out, fmt.Errorf("header %s regex: %w", h.Name, err)
			}
		}
		out.heads = append(out.heads, re)
	}
	for _, q := range m.QueryParam {
		var re *regexp.Regexp
		if q.Regex != "" {
			if re, err = regexp.Compile("^(?:" + q.Regex + ")$"); err != nil {
				return out, fmt.Errorf("query %s regex: %w", q.Name, err)
			}
		}
		out.query = append(out.query, re)
	}
	return out, nil
}

func (mt matcher) matches(r Request) bool {
	m := mt.m
	if m == nil {
		return true
	}
	path := r.Path
	eq, prefix := func(a, b string) bool { return a == b }, strings.HasPrefix
	if m.CaseInsensitive {
		eq = strings.EqualFold
		prefix = func(s, p string) bool { return len(s) >= len(p) && strings.EqualFold(s[:len(p)], p) }
	}
	switch {
	case m.PathExact != "" && !eq(path, m.PathExact):
		return false
	case m.PathPrefix != "" && !prefix(path, m.PathPrefix):
		return false
	case mt.path != nil && !mt.path.MatchString(path):
		return false
	}
	if len(m.Methods) > 0 {
		found := false
		for _, method := range m.Methods {
			found = found || method == r.Method // case-sensitive, as :method is
		}
		if !found {
			return false
		}
	}
	for i, h := range m.Header {
		values, present := r.Header[mt.keys[i]]
		if mt.host[i] && r.Host != "" {
			values, present = []string{r.Host}, true // Go keeps it out of Header
		}
		if !present {
			// As in Envoy: an absent header matches only an inverted
			// Present.
			if !(h.Invert && h.Exact == "" && h.Prefix == "" && h.Suffix == "" && h.Regex == "") {
				return false
			}
			continue
		}
		v := strings.Join(values, ",")
		var ok bool
		switch {
		case h.Exact != "":
			ok = v == h.Exact
		case h.Prefix != "":
			ok = strings.HasPrefix(v, h.Prefix)
		case h.Suffix != "":
			ok = strings.HasSuffix(v, h.Suffix)
		case mt.heads[i] != nil:
			ok = mt.heads[i].MatchString(v)
		default: // Present, or a name alone
			ok = true
		}
		if ok == h.Invert {
			return false
		}
	}
	for i, q := range m.QueryParam {
		values, present := r.Query[q.Name]
		var ok bool
		switch {
		case q.Exact != "":
			ok = present && len(values) > 0 && values[0] == q.Exact
		case mt.query[i] != nil:
			ok = present && len(values) > 0 && mt.query[i].MatchString(values[0])
		default:
			ok = present
		}
		if !ok {
			return false
		}
	}
	return true
}
