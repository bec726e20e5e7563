package discovery

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/hashicorp/consul/api"
)

func TestRouteMatches(t *testing.T) {
	h := func(kv ...string) http.Header {
		out := http.Header{}
		for i := 0; i < len(kv); i += 2 {
			out.Add(kv[i], kv[i+1])
		}
		return out
	}
	for _, tc := range []struct {
		name  string
		match api.ServiceRouteHTTPMatch
		req   Request
		want  bool
	}{
		{"exact path", api.ServiceRouteHTTPMatch{PathExact: "/count"}, Request{Path: "/count"}, true},
		{"exact path, another", api.ServiceRouteHTTPMatch{PathExact: "/count"}, Request{Path: "/counts"}, false},
		{"prefix", api.ServiceRouteHTTPMatch{PathPrefix: "/up"}, Request{Path: "/uppercase"}, true},
		{"prefix, case-insensitive", api.ServiceRouteHTTPMatch{PathPrefix: "/UP", CaseInsensitive: true}, Request{Path: "/uppercase"}, true},
		{"regex is anchored", api.ServiceRouteHTTPMatch{PathRegex: "/u.*e"}, Request{Path: "/uppercase/x"}, false},
		{"regex", api.ServiceRouteHTTPMatch{PathRegex: "/u.*e"}, Request{Path: "/uppercase"}, true},
		{"method", api.ServiceRouteHTTPMatch{Methods: []string{"GET", "PUT"}}, Request{Method: "PUT"}, true},
		{"method, another", api.ServiceRouteHTTPMatch{Methods: []string{"GET"}}, Request{Method: "POST"}, false},
		{"header present", api.ServiceRouteHTTPMatch{Header: []api.ServiceRouteHTTPMatchHeader{{Name: "x-v", Present: true}}}, Request{Header: h("X-V", "")}, true},
		{"header absent", api.ServiceRouteHTTPMatch{Header: []api.ServiceRouteHTTPMatchHeader{{Name: "x-v", Present: true}}}, Request{Header: h()}, false},
		{"header inverted", api.ServiceRouteHTTPMatch{Header: []api.ServiceRouteHTTPMatchHeader{{Name: "x-v", Exact: "2", Invert: true}}}, Request{Header: h("X-V", "1")}, true},
		{"header inverted, equal", api.ServiceRouteHTTPMatch{Header: []api.ServiceRouteHTTPMatchHeader{{Name: "x-v", Exact: "2", Invert: true}}}, Request{Header: h("X-V", "2")}, false},
		{"header suffix", api.ServiceRouteHTTPMatch{Header: []api.ServiceRouteHTTPMatchHeader{{Name: "user-agent", Suffix: "bot"}}}, Request{Header: h("User-Agent", "crawlbot")}, true},
		{"header prefix", api.ServiceRouteHTTPMatch{Header: []api.ServiceRouteHTTPMatchHeader{{Name: "x-v", Prefix: "v2"}}}, Request{Header: h("X-V", "v2.1")}, true},
		{"header regex", api.ServiceRouteHTTPMatch{Header: []api.ServiceRouteHTTPMatchHeader{{Name: "x-v", Regex: "v[23]"}}}, Request{Header: h("X-V", "v3")}, true},
		{"header values joined", api.ServiceRouteHTTPMatch{Header: []api.ServiceRouteHTTPMatchHeader{{Name: "x-v", Exact: "a,b"}}}, Request{Header: h("X-V", "a", "X-V", "b")}, true},
		{"query exact", api.ServiceRouteHTTPMatch{QueryParam: []api.ServiceRouteHTTPMatchQueryParam{{Name: "v", Exact: "2"}}}, Request{Query: url.Values{"v": {"2"}}}, true},
		{"query present", api.ServiceRouteHTTPMatch{QueryParam: []api.ServiceRouteHTTPMatchQueryParam{{Name: "v", Present: true}}}, Request{Query: url.Values{}}, false},
		{"query regex", api.ServiceRouteHTTPMatch{QueryParam: []api.ServiceRouteHTTPMatchQueryParam{{Name: "v", Regex: "[0-9]+"}}}, Request{Query: url.Values{"v": {"12"}}}, true},
		{"inverted exact, header absent: no match, as in Envoy", api.ServiceRouteHTTPMatch{Header: []api.ServiceRouteHTTPMatchHeader{{Name: "x-env", Exact: "prod", Invert: true}}}, Request{Header: h()}, false},
		{"inverted present, header absent", api.ServiceRouteHTTPMatch{Header: []api.ServiceRouteHTTPMatchHeader{{Name: "x-env", Present: true, Invert: true}}}, Request{Header: h()}, true},
		{"host is a header", api.ServiceRouteHTTPMatch{Header: []api.ServiceRouteHTTPMatchHeader{{Name: "host", Exact: "api.example"}}}, Request{Header: h(), Host: "api.example"}, true},
		{"methods are case-sensitive", api.ServiceRouteHTTPMatch{Methods: []string{"get"}}, Request{Method: "GET"}, false},
		{"case-insensitive does not apply to a regex", api.ServiceRouteHTTPMatch{PathRegex: "/UP.*", CaseInsensitive: true}, Request{Path: "/uppercase"}, false},
		{"all must hold", api.ServiceRouteHTTPMatch{PathPrefix: "/up", Methods: []string{"GET"}}, Request{Path: "/uppercase", Method: "POST"}, false},
	} {
		m, err := newMatcher(&tc.match)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if have := m.matches(tc.req); have != tc.want {
			t.Errorf("%s: want %v, have %v", tc.name, tc.want, have)
		}
	}
	if _, err := newMatcher(&api.ServiceRouteHTTPMatch{PathRegex: "("}); err == nil {
		t.Error("a bad regex: want an error, have none")
	}
}

// Splits over a roll in [0, 100): each weight is its share of the range.
func TestRoutePick(t *testing.T) {
	rt := Route{Splits: []Split{{Weight: 90, Target: "v1"}, {Weight: 10, Target: "v2"}}}
	counts := map[string]int{}
	for roll := float32(0); roll < 100; roll += 0.01 {
		counts[rt.Pick(roll).Target]++
	}
	if v1, v2 := counts["v1"], counts["v2"]; v1 < 8990 || v1 > 9010 || v2 < 990 || v2 > 1010 {
		t.Errorf("want 90/10 of 10,000 rolls, have %d/%d", v1, v2)
	}
}

// A request that matches no route, or carries no HTTP request at all,
// takes the last route; the catch-all "/" matches even an empty path.
func TestPlanRouteFallsBackToTheDefault(t *testing.T) {
	p := &Plan{Routes: []Route{{Splits: []Split{{Weight: 100, Target: "a"}}}}}
	p.Routes[0].match, _ = newMatcher(&api.ServiceRouteHTTPMatch{PathExact: "/only"})
	if rt := p.Route(Request{}); rt != &p.Routes[0] {
		t.Errorf("no match: want the last route, have %v", rt)
	}
	if rt := (&Plan{}).Route(Request{}); rt != nil {
		t.Errorf("no routes: want nil, have %v", rt)
	}
	route, ok := compileRoute(&api.DiscoveryRoute{Definition: &api.ServiceRoute{Match: &api.ServiceRouteMatch{HTTP: &api.ServiceRouteHTTPMatch{PathPrefix: "/"}}}}, func(string, ...interface{}) {})
	if !ok || !route.match.matches(Request{}) {
		t.Error("the catch-all \"/\": want it to match a request with no path")
	}
}
