package archtest

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/kitmesh/stringsvc"

// rule says what one package must never depend on, directly or through
// another package. A forbidden entry ending in "/" forbids a whole tree.
type rule struct {
	pkg    string
	never  []string
	reason string
}

func rules() []rule {
	ours := func(paths ...string) []string {
		var out []string
		for _, p := range paths {
			out = append(out, module+"/"+p)
		}
		return out
	}
	stdlibOnly := func(pkg string) rule {
		return rule{pkg: pkg, never: []string{"github.com/", "golang.org/x/", "google.golang.org/"}, reason: "imports only the standard library"}
	}
	return []rule{
		{pkg: "service", never: append(ours("transport", "transport/", "client", "discovery", "discovery/", "internal/kitprom", "internal/devconsul", "cmd/"),
			"net/http", "github.com/hashicorp/consul/", "github.com/go-kit/kit/sd", "github.com/go-kit/kit/transport/"),
			reason: "the business knows nothing of HTTP, JSON or Consul"},
		{pkg: "transport/endpoints", never: append(ours("transport", "transport/http1", "client", "discovery", "discovery/", "cmd/"),
			"net/http", "github.com/hashicorp/consul/", "github.com/go-kit/kit/transport/"),
			reason: "endpoints know no transport"},
		{pkg: "transport", never: append(ours("client", "discovery", "discovery/", "internal/member", "internal/telemetry", "internal/kitprom", "internal/devconsul", "cmd/"),
			"github.com/hashicorp/consul/", "github.com/sony/gobreaker", "github.com/go-kit/kit/ratelimit"),
			reason: "HTTP only: instances arrive as host:port strings, and breakers, limiters and balancing are the client's"},
		{pkg: "transport/http1", never: append(ours("service", "transport", "transport/endpoints", "client", "discovery", "discovery/", "internal/telemetry", "cmd/"),
			"github.com/go-kit/", "github.com/hashicorp/", "github.com/prometheus/", "github.com/sony/", "go.opentelemetry.io/", "golang.org/x/", "google.golang.org/"),
			reason: "a general HTTP/1.1 client, for any peer"},
		{pkg: "transport/limit", never: append(ours("service", "transport", "transport/endpoints", "transport/http1", "client", "discovery", "discovery/", "internal/", "cmd/"),
			"github.com/", "go.opentelemetry.io/", "golang.org/x/", "google.golang.org/", "net/http"),
			reason: "a concurrency-limit algorithm: no HTTP, no metrics library, the clock injected"},
		{pkg: "client", never: append(ours("cmd/", "internal/member", "internal/telemetry", "internal/devconsul"), "github.com/prometheus/"),
			reason: "a library for Go programs: no main, no test Consul, no metrics registry of its own"},
		{pkg: "internal/member", never: ours("cmd/"),
			reason: "the member's assembly, which cmd wires; nothing below main imports main"},
		{pkg: "internal/telemetry", never: append(ours("client", "discovery", "discovery/", "internal/member", "cmd/"), "github.com/hashicorp/consul/"),
			reason: "metrics and traces know nothing of Consul or of the wiring"},
		{pkg: "discovery", never: ours("discovery/lb", "client", "transport", "transport/", "service", "internal/kitprom", "cmd/"),
			reason: "Consul membership only; balancing is discovery/lb"},
		{pkg: "discovery/lb", never: append(ours("discovery", "client", "transport", "transport/", "service", "cmd/"), "github.com/hashicorp/consul/"),
			reason: "balancing learns of instances only through an sd.Instancer"},
		{pkg: "discovery/consultest", never: ours("discovery", "discovery/lb", "transport", "service", "cmd/"),
			reason: "test helpers for discovery must not depend on it"},
		stdlibOnly("internal/poll"),
		stdlibOnly("internal/probe"),
		stdlibOnly("internal/baseline"),
		{pkg: "internal/logsink", never: ours("service", "transport", "discovery", "discovery/", "cmd/"),
			reason: "a general logging library"},
		stdlibOnly("internal/syncbuf"),
		stdlibOnly("internal/clip"),
		stdlibOnly("internal/load"),
		{pkg: "internal/devconsul", never: append(ours("service", "transport", "discovery", "discovery/", "cmd/"), "testing", "github.com/go-kit/", "github.com/hashicorp/"),
			reason: "the one Consul starter, shared by tests and the benchmark, so no package testing"},
		{pkg: "internal/kitprom", never: ours("service", "transport", "discovery", "discovery/", "cmd/"),
			reason: "a general metrics adapter"},
		{pkg: "internal/metricstest", never: ours("service", "transport", "discovery", "discovery/", "cmd/"),
			reason: "a general test recorder"},
		{pkg: "internal/clustertest", never: ours("cmd/"),
			reason: "it runs the member as a built binary, as users do, so that both modules' tests can share it"},
	}
}

// deps returns every package pkg depends on, itself excluded.
func deps(t *testing.T, pkg string) []string {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", pkg).CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps %s: %v\n%s", pkg, err, out)
	}
	var list []string
	for _, d := range strings.Fields(string(out)) {
		if d != pkg {
			list = append(list, d)
		}
	}
	return list
}

func forbidden(dep, never string) bool {
	if strings.HasSuffix(never, "/") {
		return strings.HasPrefix(dep, never)
	}
	return dep == never
}

func TestImportRules(t *testing.T) {
	for _, r := range rules() {
		pkg := module + "/" + r.pkg
		for _, d := range deps(t, pkg) {
			for _, never := range r.never {
				if forbidden(d, never) {
					t.Errorf("%s depends on %s; it must not (%s)", r.pkg, d, r.reason)
				}
			}
		}
	}
}

// TestNoServerModule keeps the Consul server's module, and with it the
// BSL-licensed releases after v1.14.11, out of the service's build: only
// the MPL-2.0 client library github.com/hashicorp/consul/api may be used.
func TestNoServerModule(t *testing.T) {
	for _, d := range deps(t, module+"/...") {
		if strings.HasPrefix(d, "github.com/hashicorp/consul/") && !strings.HasPrefix(d, "github.com/hashicorp/consul/api") {
			t.Errorf("the service depends on %s; only github.com/hashicorp/consul/api is allowed", d)
		}
	}
}

// testTools are what only the end-to-end module (internal/e2e) may
// require: chromedp drives the browser test, gonum/plot draws the bench's
// charts, yaml parses the deployment files. As packages, nothing of the
// service, its tests included, may depend on them.
var testTools = []string{"github.com/chromedp/", "gonum.org/", "go.yaml.in/yaml/v3"}

// testToolModules are the modules of testTools that the service's go.mod
// must not bring into its build list. gonum.org/v1/gonum and the yaml
// module are not here: the go.mod files of grpc, Prometheus and
// OpenTelemetry require them, so they are listed, though no package of
// them is built.
var testToolModules = []string{"github.com/chromedp/", "gonum.org/v1/plot"}

// depsWithTests is deps with the packages' tests and their imports.
func depsWithTests(t *testing.T, pkg string) []string {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps", "-test", "-f", "{{.ImportPath}}", pkg).CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps -test %s: %v\n%s", pkg, err, out)
	}
	return strings.Split(strings.TrimSpace(string(out)), "\n")
}

// modules returns the root module's build list, `go list -m all`.
func modules(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Path}}", "all").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -m all: %v\n%s", err, out)
	}
	return strings.Fields(string(out))
}

// TestNoTestToolsInTheService keeps the service's module free of the
// browser, chart and YAML libraries of the end-to-end tests and the bench,
// which have a module of their own in internal/e2e for that reason.
func TestNoTestToolsInTheService(t *testing.T) {
	for _, d := range depsWithTests(t, module+"/...") {
		for _, never := range testTools {
			if strings.HasPrefix(d, never) {
				t.Errorf("the service's module depends on %s; only internal/e2e may", d)
			}
		}
	}
	for _, m := range modules(t) {
		for _, never := range testToolModules {
			if strings.HasPrefix(m, never) {
				t.Errorf("the service's go.mod brings in module %s; only internal/e2e may require it", m)
			}
		}
	}
}

// TestTheRulesCanFail checks the checker on a dependency every member has:
// cmd/stringsvc imports transport, so a rule against it must report it;
// and the lists the test-tool check reads must name what the service has.
func TestTheRulesCanFail(t *testing.T) {
	var hit bool
	for _, d := range deps(t, module+"/cmd/stringsvc") {
		if forbidden(d, module+"/transport") {
			hit = true
		}
	}
	if !hit {
		t.Error("want cmd/stringsvc to be seen depending on transport; the checker sees nothing")
	}
	has := func(list []string, want string) bool {
		for _, x := range list {
			if strings.HasPrefix(x, want) {
				return true
			}
		}
		return false
	}
	if !has(depsWithTests(t, module+"/cmd/stringsvc"), module+"/internal/clustertest") {
		t.Error("want the tests of cmd/stringsvc to be seen depending on internal/clustertest; the checker sees no test imports")
	}
	if !has(modules(t), "github.com/hashicorp/consul/api") {
		t.Error("want the build list to name github.com/hashicorp/consul/api; the checker sees no modules")
	}
}
