package discovery_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-kit/log"
	"github.com/hashicorp/consul/api"

	"github.com/kitmesh/stringsvc/discovery"
	"github.com/kitmesh/stringsvc/discovery/consultest"
	"github.com/kitmesh/stringsvc/internal/metricstest"
	"github.com/kitmesh/stringsvc/internal/syncbuf"
)

func TestRegistrarRegistersAndHeals(t *testing.T) {
	agent := consultest.Start(t)
	client := newClient(t, agent.Addr, nil)
	addr := healthServer(t)
	r := startRegistrar(t, client, addr)

	want := fmt.Sprintf("stringsvc-test@%s %s", addr, addr)
	waitPassing := func(why string) {
		t.Helper()
		consultest.Eventually(t, 10*time.Second, func() error {
			if have := passing(t, client, "stringsvc-test"); len(have) != 1 || have[0] != want {
				return fmt.Errorf("%s: want [%s] passing, have %v", why, want, have)
			}
			return nil
		})
	}
	waitPassing("first registration")
	if !r.Registered() {
		t.Error("Registered: want true")
	}

	// The agent loses the registration behind our back.
	if err := client.Agent().ServiceDeregister(r.ID()); err != nil {
		t.Fatal(err)
	}
	waitPassing("after the agent lost it")

	// A dev agent restarted on the same ports has lost everything.
	agent.Restart()
	waitPassing("after a Consul restart")

	// Deregister is immediate, not a wait for the check to fail.
	r.Stop()
	if err := r.Deregister(context.Background()); err != nil {
		t.Fatal(err)
	}
	if have := passing(t, client, "stringsvc-test"); len(have) != 0 {
		t.Errorf("after Deregister: want none, have %v", have)
	}
}

func TestRegistrarWaitsForConsul(t *testing.T) {
	agent := consultest.Start(t)
	agent.Stop()
	rt := &countingTransport{}
	client := newClient(t, agent.Addr, rt)
	addr := healthServer(t)
	r := startRegistrar(t, client, addr)
	// Wait until it has tried and failed a few times.
	consultest.Eventually(t, 10*time.Second, func() error {
		if n := rt.total.Load(); n < 3 {
			return fmt.Errorf("%d attempts so far", n)
		}
		return nil
	})
	if r.Registered() {
		t.Fatal("registered while Consul is down")
	}
	agent.Start()
	began := time.Now()
	consultest.Eventually(t, 10*time.Second, func() error {
		if have := passing(t, client, "stringsvc-test"); len(have) != 1 {
			return fmt.Errorf("want 1 passing, have %v", have)
		}
		return nil
	})
	t.Logf("registered %v after Consul answered", time.Since(began))
}

// Regression tests of the hardening issue.

func TestServiceIDsAreUnambiguous(t *testing.T) {
	a := discovery.Registration{Name: "stringsvc", Advertise: "edge-a:1"}
	b := discovery.Registration{Name: "stringsvc-edge", Advertise: "a:1"}
	if a.ServiceID() == b.ServiceID() {
		t.Errorf("%q on edge-a and %q on a: want different IDs, both have %q", a.Name, b.Name, a.ServiceID())
	}
	for _, name := range []string{"stringsvc", "edge-2"} {
		if err := discovery.ValidServiceName(name); err != nil {
			t.Errorf("%q: want valid, have %v", name, err)
		}
	}
	for _, name := range []string{"", "a@b", "a.b", "a b", strings.Repeat("a", 64)} {
		if discovery.ValidServiceName(name) == nil {
			t.Errorf("%q: want an error", name)
		}
	}
}

// fakeClient is an API client for consultest.Fake.
func fakeClient(t *testing.T, fake *consultest.Fake) *api.Client {
	t.Helper()
	return newClient(t, fake.Addr, nil)
}

func countRequests(fake *consultest.Fake, path string) int {
	var n int
	for _, r := range fake.Requests() {
		if r.Path == path {
			n++
		}
	}
	return n
}

// A refused registration is logged once per reason, with the permission it
// lacks, counted, and shown; once the agent accepts, it registers.
func TestRegistrarSaysWhyItCannotRegister(t *testing.T) {
	fake := consultest.NewFake(t)
	fake.FailPath("/v1/agent/service/register", 403, `Permission denied: token with AccessorID '0e4f' lacks permission 'service:write' on "stringsvc-test"`)
	var lines syncbuf.Buffer
	failures := metricstest.NewRecorder()
	r, err := discovery.NewRegistrar(fakeClient(t, fake), registration("127.0.0.1:8080"), discovery.RegistrarOptions{
		Failures: failures, Logger: log.NewLogfmtLogger(&lines),
	})
	if err != nil {
		t.Fatal(err)
	}
	go r.Run()
	defer r.Stop()
	// Wait on the count of failures the registrar has handled, not on the
	// fake's requests: the fake records a request when it arrives, before
	// the registrar has seen its answer.
	consultest.Eventually(t, 10*time.Second, func() error {
		if n := failures.Sum("op", "register", "kind", "denied"); n < 3 {
			return fmt.Errorf("%v denied registrations handled so far", n)
		}
		return nil
	})
	if n := countRequests(fake, "/v1/agent/service/register"); n < 3 {
		t.Errorf("registration attempts at the agent: want at least 3, have %d", n)
	}
	if n := strings.Count(lines.String(), "lacks service:write on stringsvc-test"); n != 1 {
		t.Errorf("want one line naming the missing permission, have %d in:\n%s", n, lines.String())
	}
	if strings.Contains(lines.String(), "0e4f") {
		t.Errorf("the log quotes Consul's 403 text, accessor included:\n%s", lines.String())
	}
	if !strings.Contains(r.LastError(), "service:write") || r.Registered() {
		t.Errorf("want unregistered with the reason shown, have registered=%v %q", r.Registered(), r.LastError())
	}

	fake.FailPath("/v1/agent/service/register", 0, "")
	consultest.Eventually(t, 10*time.Second, func() error {
		if !r.Registered() {
			return fmt.Errorf("not registered yet")
		}
		return nil
	})
	if r.LastError() != "" || !strings.Contains(lines.String(), "registered=true") {
		t.Errorf("after the fix: want registered=true logged and no error, have %q\n%s", r.LastError(), lines.String())
	}
}

// With the agent on loopback, the member registers the address the agent
// advertises, not loopback; a dev agent on loopback keeps loopback.
func TestRegistrarAdvertisesTheAgentsAddress(t *testing.T) {
	for _, tc := range []struct {
		agentIP, want string
	}{
		{agentIP: "10.1.2.3", want: "10.1.2.3:8080"},
		{agentIP: "127.0.0.1", want: "127.0.0.1:8080"},
	} {
		fake := consultest.NewFake(t)
		fake.SetAgentAddr(tc.agentIP)
		reg := registration("127.0.0.1:8080")
		reg.AskAgent = true
		r, err := discovery.NewRegistrar(fakeClient(t, fake), reg, discovery.RegistrarOptions{})
		if err != nil {
			t.Fatal(err)
		}
		go r.Run()
		consultest.Eventually(t, 10*time.Second, func() error {
			if !r.Registered() {
				return fmt.Errorf("not registered yet")
			}
			return nil
		})
		r.Stop()
		got := fake.Registered(r.ID())
		if got == nil || r.Advertise() != tc.want || net.JoinHostPort(got.Address, fmt.Sprint(got.Port)) != tc.want || got.Check.HTTP != "http://"+tc.want+"/health" {
			t.Errorf("agent at %s: want %s registered and checked, have %s (%+v)", tc.agentIP, tc.want, r.Advertise(), got)
		}
	}
}

// The registration watch re-registers when the agent holds another entry
// under our ID, not only when it holds none.
func TestRegistrarReclaimsItsEntry(t *testing.T) {
	agent := consultest.Start(t)
	client := newClient(t, agent.Addr, nil)
	addr := healthServer(t)
	r := startRegistrar(t, client, addr)
	consultest.Eventually(t, 10*time.Second, func() error {
		if !r.Registered() {
			return fmt.Errorf("not registered yet")
		}
		return nil
	})
	if err := client.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: r.ID(), Name: "stringsvc-test", Address: "10.9.9.9", Port: 1}); err != nil {
		t.Fatal(err)
	}
	consultest.Eventually(t, 10*time.Second, func() error {
		svc, _, err := client.Agent().Service(r.ID(), nil)
		if err != nil {
			return err
		}
		if have := net.JoinHostPort(svc.Address, fmt.Sprint(svc.Port)); have != addr {
			return fmt.Errorf("the agent holds %s under our ID, want %s", have, addr)
		}
		return nil
	})
}

func TestCheckURLOfAZonedAddress(t *testing.T) {
	fake := consultest.NewFake(t)
	r, err := discovery.NewRegistrar(fakeClient(t, fake), registration("[fe80::1%eth0]:8080"), discovery.RegistrarOptions{})
	if err != nil {
		t.Fatal(err)
	}
	go r.Run()
	defer r.Stop()
	consultest.Eventually(t, 10*time.Second, func() error {
		if !r.Registered() {
			return fmt.Errorf("not registered yet")
		}
		return nil
	})
	if got := fake.Registered(r.ID()); got == nil || got.Check.HTTP != "http://[fe80::1%25eth0]:8080/health" || got.Address != "fe80::1%eth0" {
		t.Errorf("want the check at http://[fe80::1%%25eth0]:8080/health, have %+v", got)
	}
}

// A stale entry under the member's ID on another node, as an agent that
// lost its data dir leaves behind, is said once: in the log and by
// Elsewhere. A member with no such entry says nothing.
func TestRegistrarSeesItsIDOnAnotherNode(t *testing.T) {
	agent := consultest.Start(t)
	client := newClient(t, agent.Addr, nil)
	addr := healthServer(t)
	host, port, _ := net.SplitHostPort(addr)
	p := 0
	fmt.Sscan(port, &p)
	reg := registration(addr)
	if _, err := client.Catalog().Register(&api.CatalogRegistration{
		Node: "ghost-node", Address: "10.9.9.9",
		Service: &api.AgentService{ID: reg.ServiceID(), Service: reg.Name, Address: host, Port: p},
	}, nil); err != nil {
		t.Fatal(err)
	}
	var logs syncbuf.Buffer
	r, err := discovery.NewRegistrar(client, reg, discovery.RegistrarOptions{Logger: log.NewLogfmtLogger(&logs)})
	if err != nil {
		t.Fatal(err)
	}
	go r.Run()
	t.Cleanup(r.Stop)
	consultest.Eventually(t, 10*time.Second, func() error {
		if !strings.Contains(r.Elsewhere(), "ghost-node") {
			return fmt.Errorf("Elsewhere: want ghost-node named, have %q", r.Elsewhere())
		}
		return nil
	})
	if n := strings.Count(logs.String(), "ghost-node"); n != 1 {
		t.Errorf("want one log line naming ghost-node, have %d:\n%s", n, logs.String())
	}
	if _, err := client.Catalog().Deregister(&api.CatalogDeregistration{Node: "ghost-node"}, nil); err != nil {
		t.Fatal(err)
	}
	consultest.Eventually(t, 30*time.Second, func() error {
		if e := r.Elsewhere(); e != "" {
			return fmt.Errorf("after the stale node went: still %q", e)
		}
		return nil
	})

	clean := startRegistrar(t, client, healthServer(t))
	consultest.Eventually(t, 10*time.Second, func() error {
		if !clean.Registered() {
			return fmt.Errorf("not registered yet")
		}
		return nil
	})
	if e := clean.Elsewhere(); e != "" {
		t.Errorf("a member with no stale entry: want nothing said, have %q", e)
	}
}

// An edge's registration declares the service it calls, so Consul's
// topology draws it as that service's caller (downstream) from the
// registration, not only from what intentions would allow.
func TestRegistrarDeclaresTheEdgesUpstream(t *testing.T) {
	agent := consultest.Start(t)
	client := newClient(t, agent.Addr, nil)
	member := registration(healthServer(t))
	member.MeshPort = consultest.FreePort(t)
	edge := registration(healthServer(t))
	edge.Name, edge.MeshPort, edge.Upstream = "stringsvc-edge", consultest.FreePort(t), member.Name
	member.Upstream = member.Name // a member calls its own service: nothing to declare
	for _, reg := range []discovery.Registration{member, edge} {
		r, err := discovery.NewRegistrar(client, reg, discovery.RegistrarOptions{})
		if err != nil {
			t.Fatal(err)
		}
		go r.Run()
		t.Cleanup(r.Stop)
	}
	type neighbours struct{ Upstreams, Downstreams []string }
	topology := func(service string) (neighbours, error) {
		var body struct {
			Upstreams, Downstreams []struct{ Name, Source string }
		}
		resp, err := http.Get("http://" + agent.Addr + "/v1/internal/ui/service-topology/" + service + "?kind=")
		if err != nil {
			return neighbours{}, err
		}
		defer resp.Body.Close()
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			return neighbours{}, err
		}
		var n neighbours
		for _, u := range body.Upstreams {
			n.Upstreams = append(n.Upstreams, u.Name+" "+u.Source)
		}
		for _, d := range body.Downstreams {
			n.Downstreams = append(n.Downstreams, d.Name+" "+d.Source)
		}
		return n, nil
	}
	consultest.Eventually(t, 10*time.Second, func() error {
		m, err := topology(member.Name)
		if err != nil {
			return err
		}
		e, err := topology(edge.Name)
		if err != nil {
			return err
		}
		if !slices.Contains(m.Downstreams, "stringsvc-edge proxy-registration") || !slices.Contains(e.Upstreams, member.Name+" proxy-registration") {
			return fmt.Errorf("want the edge declared as %s's caller; have %s: %+v, edge: %+v", member.Name, member.Name, m, e)
		}
		if slices.ContainsFunc(m.Upstreams, func(u string) bool { return strings.HasPrefix(u, member.Name+" proxy") }) {
			return fmt.Errorf("the member declared itself as its upstream: %+v", m)
		}
		return nil
	})
}
