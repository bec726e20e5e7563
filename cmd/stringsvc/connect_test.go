package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/kitmesh/stringsvc/client"
	"github.com/kitmesh/stringsvc/discovery/consultest"
	"github.com/kitmesh/stringsvc/internal/clustertest"
	"github.com/kitmesh/stringsvc/internal/load"
	"github.com/kitmesh/stringsvc/internal/probe"
	"github.com/kitmesh/stringsvc/service"
	"github.com/kitmesh/stringsvc/transport"
)

// The Connect tests: members with -mesh.tls connect on a real dev Consul,
// whose built-in CA issues the certificates, and real intentions.

// authzCache is the members' -mesh.authz-cache in these tests.
const authzCache = time.Second

// startConnectNode starts a member with -mesh.tls connect on its own mesh
// port, and waits until it holds a certificate.
func startConnectNode(t *testing.T, name, consulAddr string, extra ...string) *clustertest.Node {
	t.Helper()
	mesh := "127.0.0.1:" + strconv.Itoa(consultest.FreePort(t))
	admin := "127.0.0.1:" + strconv.Itoa(consultest.FreePort(t))
	n := clustertest.StartNode(t, name, consulAddr, append([]string{
		"-mesh.tls", "connect", "-mesh.addr", mesh, "-mesh.authz-cache", authzCache.String(), "-admin.addr", admin,
	}, extra...)...)
	n.Mesh, n.Ops = mesh, admin
	consultest.Eventually(t, 20*time.Second, func() error {
		if v := connectViewOf(t, n); !v.Ready {
			return fmt.Errorf("%s holds no Connect certificate yet (%s)", name, v.Error)
		}
		return nil
	})
	return n
}

// connectView is the "connect" part of a node's /debug/mesh.
type connectView struct {
	Ready      bool   `json:"ready"`
	URI        string `json:"uri"`
	LeafSerial string `json:"leaf_serial"`
	LeafRoot   string `json:"leaf_root"`
	ActiveRoot string `json:"active_root"`
	Error      string `json:"error"`
}

// connectViewOf returns the connect part of n's /debug/mesh.
func connectViewOf(t *testing.T, n *clustertest.Node) connectView {
	t.Helper()
	_, body := clustertest.Request(t, http.MethodGet, n.OpsAddr(), "/debug/mesh", "")
	var v struct{ Connect *connectView }
	if err := json.Unmarshal([]byte(body), &v); err != nil || v.Connect == nil {
		t.Fatalf("/debug/mesh of %s has no connect part: %v\n%s", n.Name, err, body)
	}
	return *v.Connect
}

// connectCluster starts Consul and n Connect members, and waits until each
// balances over all of them.
func connectCluster(t *testing.T, n int, extra ...string) (*consultest.Agent, *api.Client, []*clustertest.Node) {
	t.Helper()
	if testing.Short() {
		t.Skip("process-level test")
	}
	agent := consultest.Start(t)
	client, err := api.NewClient(&api.Config{Address: agent.Addr})
	if err != nil {
		t.Fatal(err)
	}
	var nodes []*clustertest.Node
	for i := 0; i < n; i++ {
		nodes = append(nodes, startConnectNode(t, string(rune('A'+i)), agent.Addr, extra...))
	}
	clustertest.WaitPassing(t, agent.Addr, 20*time.Second, nodes...)
	waitUpstreams(t, n, nodes...)
	return agent, client, nodes
}

// intention sets the one intention source -> destination: "allow",
// "deny", or "" to delete it.
func intention(t *testing.T, client *api.Client, source, destination, action string) {
	t.Helper()
	if action == "" {
		if _, err := client.ConfigEntries().Delete(api.ServiceIntentions, destination, nil); err != nil {
			t.Fatal(err)
		}
		return
	}
	entry := &api.ServiceIntentionsConfigEntry{
		Kind: api.ServiceIntentions,
		Name: destination,
		Sources: []*api.SourceIntention{{
			Name: source, Action: api.IntentionAction(action),
		}},
	}
	if _, _, err := client.ConfigEntries().Set(entry, nil); err != nil {
		t.Fatal(err)
	}
}

func TestConnectMesh(t *testing.T) {
	_, client, nodes := connectCluster(t, 3)
	a, b := nodes[0], nodes[1]

	// Registered as Connect native, on the mesh port, with the client
	// port in its meta.
	svcs, err := client.Agent().ServicesWithFilter(`Service == "stringsvc-e2e"`)
	if err != nil {
		t.Fatal(err)
	}
	if len(svcs) != 3 {
		t.Errorf("want 3 instances at the agent, have %d", len(svcs))
	}
	checks, err := client.Agent().Checks()
	if err != nil {
		t.Fatal(err)
	}
	for id, s := range svcs {
		// The client port is loopback only: not in meta, and not what
		// Consul checks. The admin port is both.
		if s.Connect == nil || !s.Connect.Native || s.Meta["http_port"] != "" || s.Meta["admin_port"] == "" || strconv.Itoa(s.Port) == s.Meta["admin_port"] {
			t.Errorf("%s: want Connect native on the mesh port with meta admin_port and no http_port, have connect=%+v port=%d meta=%v", id, s.Connect, s.Port, s.Meta)
		}
		if c := checks[id+"/health"]; c == nil || !strings.Contains(c.Output, ":"+s.Meta["admin_port"]+"/health: 200 OK") {
			t.Errorf("%s: want Consul to check the admin port's /health, have %+v", id, c)
		}
	}
	var view struct {
		Plain struct {
			Addr    string `json:"addr"`
			Public  bool   `json:"public"`
			Callers string `json:"callers"`
		} `json:"plain_listener"`
	}
	_, body := clustertest.Request(t, http.MethodGet, a.OpsAddr(), "/debug/mesh", "")
	if err := json.Unmarshal([]byte(body), &view); err != nil || view.Plain.Public || view.Plain.Addr != a.Addr || !strings.Contains(view.Plain.Callers, "loopback only") {
		t.Errorf("/debug/mesh: want the client listener shown as loopback only, have %+v (%v)", view.Plain, err)
	}
	for _, path := range []string{"/uppercase", "/count"} {
		if code, _ := clustertest.Request(t, http.MethodPost, a.OpsAddr(), path, `{"s":"x"}`); code != http.StatusNotFound {
			t.Errorf("POST %s on the admin port: want 404 (it serves no request of the service), have %d", path, code)
		}
	}

	// One member's requests reach all three, over mutual TLS.
	before := clustertest.Served(nodes...)
	codes := clustertest.SendUppercase(t, a, 60)
	after := clustertest.Served(nodes...)
	if codes[http.StatusOK] != 60 {
		t.Errorf("want 60 answers 200, have %v", codes)
	}
	for i, n := range nodes {
		if after[i] == before[i] {
			t.Errorf("%s served none of 60 requests sent to A", n.Name)
		}
	}
	if f := a.Metric("stringsvc_fallbacks_total"); f != 0 {
		t.Errorf("A fell back %v times", f)
	}
	t.Logf("60 requests to A: %v; served by A, B, C: %v", codes, diff(after, before))

	// Plain HTTP on the mesh port is refused, and so is TLS without a
	// client certificate.
	if resp, err := probe.Do(http.MethodPost, "http://"+b.Mesh+"/uppercase", `{"s":"x"}`, nil); err == nil && resp.Status == http.StatusOK {
		t.Errorf("plain HTTP on the mesh port: want refused, have %d %s", resp.Status, resp.Body)
	}
	noCert := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, Timeout: 5 * time.Second}
	if resp, err := noCert.Post("https://"+b.Mesh+"/uppercase", "application/json", strings.NewReader(`{"s":"x"}`)); err == nil {
		resp.Body.Close()
		t.Errorf("TLS without a client certificate: want a refused handshake, have %s", resp.Status)
	}
	if r := b.Metric(`stringsvc_mesh_tls_refused_total{reason="no_certificate",side="server"}`); r < 1 {
		t.Errorf("B counted %v handshakes refused for no certificate, want at least 1", r)
	}

	// A client with a Connect certificate of another service is served
	// until an intention denies that service, then refused within the
	// cache time, on the same kept-alive connection.
	intruder := connectClient(t, client, "intruder")
	call := func() (int, string) {
		resp, err := intruder.Post("https://"+b.Mesh+"/uppercase", "application/json", strings.NewReader(`{"s":"x"}`))
		if err != nil {
			t.Fatalf("intruder: %v", err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if code, body := call(); code != http.StatusOK {
		t.Fatalf("intruder before the deny: want 200, have %d %s", code, body)
	}
	intention(t, client, "intruder", "stringsvc-e2e", "deny")
	denied := time.Now()
	var took time.Duration
	consultest.Eventually(t, 10*authzCache, func() error {
		code, body := call()
		if code != http.StatusForbidden {
			return fmt.Errorf("intruder after the deny: have %d %s", code, body)
		}
		took = time.Since(denied)
		if !strings.Contains(body, `"error"`) || !strings.Contains(body, "intruder") {
			t.Errorf("want a JSON error naming the intruder, have %s", body)
		}
		return nil
	})
	t.Logf("deny intruder -> stringsvc-e2e took effect after %v (cache %v)", took.Round(time.Millisecond), authzCache)
	if took > authzCache+5*time.Second {
		t.Errorf("the deny took %v, want within the cache time %v and a few seconds", took, authzCache)
	}
	if d := b.Metric(`stringsvc_mesh_denied_total{side="server",source="intruder"}`); d < 1 {
		t.Errorf("B counted %v denials of intruder", d)
	}
	if c := strings.Count(b.Log(), "allowed=false"); c != 1 {
		t.Errorf("B logged the deny %d times, want once per change", c)
	}
}

// connectClient returns an HTTP client holding a Connect leaf certificate
// of service, fetched from the agent as a member does.
func connectClient(t *testing.T, client *api.Client, service string) *http.Client {
	t.Helper()
	cert := consultest.Leaf(t, client, service)
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{Certificates: []tls.Certificate{cert}, InsecureSkipVerify: true},
	}}
}

func diff(after, before []float64) []float64 {
	out := make([]float64, len(after))
	for i := range after {
		out[i] = after[i] - before[i]
	}
	return out
}

func TestConnectIntentions(t *testing.T) {
	// Round robin, so that a member sends half its requests to its peer
	// rather than nearly all to itself, the cheapest instance.
	agent, client, nodes := connectCluster(t, 2, "-proxy.balancer", "roundrobin")
	edge := startConnectNode(t, "edge", agent.Addr, "-service.name", "stringsvc-edge", "-proxy.service", "stringsvc-e2e")
	waitUpstreams(t, 2, edge)

	// Allowed (the dev agent's default): the members serve the edge.
	before := clustertest.Served(nodes...)
	if codes := clustertest.SendUppercase(t, edge, 20); codes[http.StatusOK] != 20 {
		t.Fatalf("edge before the deny: want 20 answers 200, have %v", codes)
	}
	if d := diff(clustertest.Served(nodes...), before); d[0]+d[1] != 20 {
		t.Errorf("members served %v of 20 edge requests, want all", d)
	}

	// deny edge -> stringsvc: within the cache time no request from the
	// edge reaches a member, and the edge answers 403 saying why.
	intention(t, client, "stringsvc-edge", "stringsvc-e2e", "deny")
	denied := time.Now()
	var took time.Duration
	consultest.Eventually(t, 10*authzCache, func() error {
		code, body := clustertest.Request(t, http.MethodPost, edge.Addr, "/uppercase", `{"s":"x"}`)
		if code != http.StatusForbidden {
			return fmt.Errorf("edge after the deny: have %d %s", code, body)
		}
		took = time.Since(denied)
		return nil
	})
	// Every member's cached allow has expired within the cache time of
	// the write (plus the agent's own propagation): from then on, no
	// request of the edge is served.
	time.Sleep(time.Until(denied.Add(authzCache + clustertest.IntentionSlack)))
	before = clustertest.Served(nodes...)
	codes := clustertest.SendUppercase(t, edge, 30)
	_, body := clustertest.Request(t, http.MethodPost, edge.Addr, "/uppercase", `{"s":"x"}`)
	if d := diff(clustertest.Served(nodes...), before); d[0] != 0 || d[1] != 0 {
		t.Errorf("members served %v requests of a denied edge, want 0", d)
	}
	if codes[http.StatusForbidden] != 30 {
		t.Errorf("denied edge: want 30 answers 403, have %v", codes)
	}
	if !strings.Contains(body, `{"error":"denied by the mesh: intention denies stringsvc-edge calling stringsvc-e2e`) {
		t.Errorf("denied edge: want a JSON error that says so, have %s", body)
	}
	if f := edge.Metric("stringsvc_fallbacks_total"); f != 0 {
		t.Errorf("a denied edge served %v requests itself; it must not", f)
	}
	t.Logf("deny edge: took effect after %v; then 30 sent, answers %v, members served 0", took.Round(time.Millisecond), codes)

	// allow: traffic flows again, with no restart, once every member's
	// cached decision has expired.
	intention(t, client, "stringsvc-edge", "stringsvc-e2e", "allow")
	allowed := time.Now()
	consultest.Eventually(t, 10*authzCache, func() error {
		if codes := clustertest.SendUppercase(t, edge, 10); codes[http.StatusOK] != 10 {
			return fmt.Errorf("edge after the allow: have %v", codes)
		}
		return nil
	})
	took = time.Since(allowed)
	time.Sleep(time.Until(allowed.Add(authzCache + clustertest.IntentionSlack)))
	before = clustertest.Served(nodes...)
	if codes := clustertest.SendUppercase(t, edge, 20); codes[http.StatusOK] != 20 {
		t.Errorf("edge after the allow: want 20 answers 200, have %v", codes)
	}
	if d := diff(clustertest.Served(nodes...), before); d[0]+d[1] != 20 {
		t.Errorf("members served %v of 20 edge requests after the allow", d)
	}
	t.Logf("allow edge: took effect after %v", took.Round(time.Millisecond))

	// Sustained load from the edge costs each member about one question to
	// the agent per cache period, never one per request: concurrent
	// requests share one question, and a decision in use is refreshed
	// before it expires.
	asked := func() []float64 {
		return []float64{nodes[0].Metric("stringsvc_mesh_authorize_calls_total"), nodes[1].Metric("stringsvc_mesh_authorize_calls_total")}
	}
	before = asked()
	start := time.Now()
	res := load.Run(t.Context(), clustertest.UpperLoad(edge, 6000, 0, nil))
	elapsed := time.Since(start)
	if res.Failed != 0 {
		t.Errorf("load through the edge: want 0 failed, have %s", res)
	}
	limit := math.Ceil(float64(elapsed)/float64(authzCache)/0.9) + 2
	for i, d := range diff(asked(), before) {
		t.Logf("%s: %v authorize calls during %v of load (%s)", nodes[i].Name, d, elapsed.Round(time.Millisecond), res)
		if d > limit {
			t.Errorf("%s asked the agent %v times in %v; want at most %v", nodes[i].Name, d, elapsed.Round(time.Millisecond), limit)
		}
	}

	// A member denied by its own service's intention serves locally and
	// counts it. (Its calls to itself are in-process, never denied.)
	a := nodes[0]
	intention(t, client, "stringsvc-e2e", "stringsvc-e2e", "deny")
	consultest.Eventually(t, 10*authzCache, func() error {
		codes := clustertest.SendUppercase(t, a, 10)
		if codes[http.StatusOK] != 10 {
			t.Fatalf("a denied member must still answer: %v", codes)
		}
		if f := a.Metric(`stringsvc_fallbacks_total{reason="denied"}`); f < 5 {
			return fmt.Errorf("A fell back for denial %v times", f)
		}
		return nil
	})
	if f := a.Metric(`stringsvc_fallbacks_total{reason="upstreams_failed"}`); f != 0 {
		t.Errorf("A counted %v fallbacks as upstream failures; denials are not", f)
	}
	if o := a.Metric(`stringsvc_upstream_breaker_changes_total{to="open"}`); o != 0 {
		t.Errorf("denials opened %v breakers; they must never count", o)
	}
}

// An edge that no member can take a request from serves it itself only
// while an intention lets it call its upstream service: under a deny it
// answers 403, whether or not a member is reachable.
func TestConnectDeniedEdgeNeverServes(t *testing.T) {
	agent, client, _ := connectCluster(t, 0)
	edge := startConnectNode(t, "lonely", agent.Addr, "-service.name", "stringsvc-lonely", "-proxy.service", "stringsvc-void")
	if code, body := clustertest.Request(t, http.MethodPost, edge.Addr, "/uppercase", `{"s":"alone"}`); code != http.StatusOK || body != `{"v":"ALONE"}`+"\n" {
		t.Fatalf("allowed edge with no upstream: want its documented local answer, have %d %s", code, body)
	}
	intention(t, client, "stringsvc-lonely", "stringsvc-void", "deny")
	denied := time.Now()
	consultest.Eventually(t, 10*authzCache, func() error {
		if code, body := clustertest.Request(t, http.MethodPost, edge.Addr, "/uppercase", `{"s":"alone"}`); code != http.StatusForbidden {
			return fmt.Errorf("denied edge with no upstream: have %d %s", code, body)
		}
		return nil
	})
	t.Logf("deny of an edge with no upstream: 403 after %v", time.Since(denied).Round(time.Millisecond))
	time.Sleep(time.Until(denied.Add(authzCache + clustertest.IntentionSlack)))
	before := edge.Metric("stringsvc_fallbacks_total")
	if codes := clustertest.SendUppercase(t, edge, 20); codes[http.StatusForbidden] != 20 {
		t.Errorf("denied edge with no upstream: want 20 answers 403, have %v", codes)
	}
	if f := edge.Metric("stringsvc_fallbacks_total") - before; f != 0 {
		t.Errorf("a denied edge served %v requests itself", f)
	}
	// A caller's hop header claims the request already crossed the mesh:
	// an edge asks all the same.
	resp, err := probe.Do(http.MethodPost, "http://"+edge.Addr+"/uppercase", `{"s":"side door"}`, http.Header{transport.HopHeader: {"1"}})
	if err != nil || resp.Status != http.StatusForbidden {
		t.Errorf("denied edge, request with a hop header: want 403, have %+v %v", resp, err)
	}
}

// rotateCA makes the dev agent's built-in CA rotate to a root of a key of
// ours, waits until it is active, and returns the roots, that root and its
// key: with them a test can sign leaves the mesh trusts.
func rotateCA(t *testing.T, client *api.Client, oldActive string) (*api.CARootList, *x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	conf, _, err := client.Connect().CAGetConfig(nil)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	conf.Config["PrivateKey"] = string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}))
	delete(conf.Config, "RootCert")
	if _, err := client.Connect().CASetConfig(conf, nil); err != nil {
		t.Fatal(err)
	}
	var roots *api.CARootList
	consultest.Eventually(t, 30*time.Second, func() error {
		roots, _, err = client.Connect().CARoots(nil)
		if err != nil {
			return err
		}
		if roots.ActiveRootID == oldActive {
			return fmt.Errorf("the active root is still %s", oldActive)
		}
		return nil
	})
	for _, r := range roots.Roots {
		if r.ID == roots.ActiveRootID {
			block, _ := pem.Decode([]byte(r.RootCertPEM))
			root, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			return roots, root, key
		}
	}
	t.Fatalf("no active root in %+v", roots)
	return nil, nil, nil
}

func TestConnectCARotation(t *testing.T) {
	_, client, nodes := connectCluster(t, 3)
	old, _, err := client.Connect().CARoots(nil)
	if err != nil {
		t.Fatal(err)
	}
	_, stop := background(t, nodes, 10*time.Millisecond)

	// A new root from a new key (the built-in CA cross-signs it with the
	// old one, and keeps both in the roots until the old one's leaves are
	// gone).
	roots, _, _ := rotateCA(t, client, old.ActiveRootID)
	rotated := time.Now()
	// Every member takes a leaf signed by the new root (the agent
	// staggers renewals over up to 30s).
	consultest.Eventually(t, 90*time.Second, func() error {
		for _, n := range nodes {
			if v := connectViewOf(t, n); v.LeafRoot != roots.ActiveRootID {
				return fmt.Errorf("%s's leaf is signed by %q, want the new root %s", n.Name, v.LeafRoot, roots.ActiveRootID)
			}
		}
		return nil
	})
	took := time.Since(rotated)
	// A little traffic on the new leaves, then the count.
	time.Sleep(2 * time.Second) // load runs meanwhile; not synchronisation
	res := stop()
	t.Logf("CA rotation: every member on the new root after %v; load %s", took.Round(time.Millisecond), res)
	if res.Failed != 0 || res.Succeeded == 0 {
		t.Errorf("want 0 failed requests during the rotation, have %s", res)
	}
	for _, n := range nodes {
		if c := n.Metric(`stringsvc_mesh_certificate_changes_total{what="leaf"}`); c < 2 {
			t.Errorf("%s took %v leaves, want the first and the rotated one", n.Name, c)
		}
		if r := n.Metric(`stringsvc_mesh_tls_refused_total`); r != 0 {
			t.Errorf("%s refused %v handshakes during the rotation", n.Name, r)
		}
	}
}

// TestConnectRefusedCallers sends a battery of callers that must be
// refused to a member's mesh port, each kind many times: every refusal is
// counted, no request is served, and the log grows by a few bounded lines
// whatever the number of attempts. The expired leaf chains to the active
// root: the test rotates the CA to a key of its own and signs it. (A leaf
// of a removed root needs Consul to prune a root, which takes hours; the
// same check refuses it in discovery's TestIdentityCheck and the
// connection-lifetime tests, with a CA of their own.)
func TestConnectRefusedCallers(t *testing.T) {
	_, client, nodes := connectCluster(t, 1)
	a := nodes[0]
	other := consultest.Start(t) // another cluster: another trust domain
	otherClient, err := api.NewClient(&api.Config{Address: other.Addr})
	if err != nil {
		t.Fatal(err)
	}
	intention(t, client, "intruder", "stringsvc-e2e", "deny")
	const attempts = 20
	tlsCall := func(certs ...tls.Certificate) (int, error) {
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true, Certificates: certs}}}
		resp, err := c.Post("https://"+a.Mesh+"/uppercase", "application/json", strings.NewReader(`{"s":"refused"}`))
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if strings.Contains(string(body), "REFUSED") {
			t.Errorf("served: %s", body)
		}
		return resp.StatusCode, nil
	}
	trustDomain := strings.Split(strings.TrimPrefix(connectViewOf(t, a).URI, "spiffe://"), "/")[0]
	foreign := consultest.Leaf(t, otherClient, "stringsvc-e2e")
	forged := selfSignedLeaf(t, "spiffe://"+trustDomain+"/ns/default/dc/dc1/svc/stringsvc-e2e")
	denied := consultest.Leaf(t, client, "intruder")
	// A leaf that chains to the active root but has expired: signed with
	// the root's own key, after a rotation to a key of ours.
	old, _, err := client.Connect().CARoots(nil)
	if err != nil {
		t.Fatal(err)
	}
	_, root, rootKey := rotateCA(t, client, old.ActiveRootID)
	consultest.Eventually(t, 30*time.Second, func() error {
		if v := connectViewOf(t, a); v.ActiveRoot == old.ActiveRootID {
			return errors.New("A does not trust the new root yet")
		}
		return nil
	})
	expired := leafOf(t, root, rootKey, "spiffe://"+trustDomain+"/ns/default/dc/dc1/svc/web", time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour))
	// The control: the same root's valid leaf is served.
	valid := leafOf(t, root, rootKey, "spiffe://"+trustDomain+"/ns/default/dc/dc1/svc/web", time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	vc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{valid}}}}
	if resp, err := vc.Post("https://"+a.Mesh+"/uppercase", "application/json", strings.NewReader(`{"s":"control"}`)); err != nil {
		t.Fatalf("a valid leaf of the new root: %v", err)
	} else if resp.Body.Close(); resp.StatusCode != http.StatusOK {
		t.Fatalf("a valid leaf of the new root: want 200, have %d", resp.StatusCode)
	}
	for _, tc := range []struct {
		name   string
		call   func() (int, error)
		metric string
	}{
		{name: "plain HTTP to the mesh port", metric: `stringsvc_mesh_tls_refused_total{reason="not_tls",side="server"}`, call: func() (int, error) {
			conn, err := net.DialTimeout("tcp", a.Mesh, 5*time.Second)
			if err != nil {
				return 0, err
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			io.WriteString(conn, "POST /uppercase HTTP/1.1\r\nHost: x\r\nContent-Length: 15\r\n\r\n{\"s\":\"refused\"}")
			b, _ := io.ReadAll(conn)
			if strings.Contains(string(b), "REFUSED") {
				t.Errorf("plain HTTP served: %q", b)
			}
			return 0, errors.New("no TLS")
		}},
		{name: "a self-signed certificate", metric: `stringsvc_mesh_tls_refused_total{reason="untrusted",side="server"}`, call: func() (int, error) { return tlsCall(forged) }},
		{name: "a leaf of another trust domain", metric: `stringsvc_mesh_tls_refused_total{reason="untrusted",side="server"}`, call: func() (int, error) { return tlsCall(foreign) }},
		{name: "no certificate", metric: `stringsvc_mesh_tls_refused_total{reason="no_certificate",side="server"}`, call: func() (int, error) { return tlsCall() }},
		{name: "an expired leaf of a trusted root", metric: `stringsvc_mesh_tls_refused_total{reason="expired",side="server"}`, call: func() (int, error) { return tlsCall(expired) }},
		{name: "a valid leaf of a denied service", metric: `stringsvc_mesh_denied_total{side="server",source="intruder"}`, call: func() (int, error) { return tlsCall(denied) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := a.Metric(tc.metric)
			refused := 0
			for range attempts {
				code, err := tc.call()
				if err != nil || code == http.StatusForbidden {
					refused++
				} else {
					t.Errorf("want refused, have %d", code)
				}
			}
			if refused != attempts {
				t.Errorf("want %d of %d refused, have %d", attempts, attempts, refused)
			}
			if n := a.Metric(tc.metric) - before; n < attempts {
				t.Errorf("%s: want every one of %d counted, have %v", tc.metric, attempts, n)
			}
		})
	}
	// Over 100 refusals, a few lines, none long.
	var lines []string
	for _, l := range strings.Split(a.Log(), "\n") {
		if strings.Contains(l, "refused a TLS peer") || strings.Contains(l, "allowed=false") || strings.Contains(l, "TLS handshake error") {
			lines = append(lines, l)
		}
	}
	if len(lines) == 0 || len(lines) > 20 {
		t.Errorf("want a few refusal lines for %d refusals, have %d:\n%s", 6*attempts, len(lines), strings.Join(lines, "\n"))
	}
	for _, l := range lines {
		if len(l) > 1024 {
			t.Errorf("a refusal line of %d bytes: %.200s...", len(l), l)
		}
	}
	t.Logf("%d refusals: %d log lines", 6*attempts, len(lines))
}

// leafOf is a leaf naming uri, signed by root's key (by itself when root
// is nil), valid from notBefore to notAfter.
func leafOf(t *testing.T, root *x509.Certificate, rootKey *ecdsa.PrivateKey, uri string, notBefore, notAfter time.Time) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(uri)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), URIs: []*url.URL{u},
		NotBefore: notBefore, NotAfter: notAfter,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if root == nil {
		root, rootKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, root, &key.PublicKey, rootKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// selfSignedLeaf is a certificate that names uri like a Connect leaf but
// is signed by nobody the mesh trusts.
func selfSignedLeaf(t *testing.T, uri string) tls.Certificate {
	return leafOf(t, nil, nil, uri, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
}

// A Go program is a Connect-native caller through package client: with an
// intention allowing it, its calls reach the members over mutual TLS; with
// one denying it, every call is ErrDenied, and no member served it.
func TestConnectGoClient(t *testing.T) {
	agent, consul, nodes := connectCluster(t, 2)
	intention(t, consul, "go-client", "stringsvc-e2e", "allow")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	svc, err := client.New(ctx, agent.Addr, client.WithService("stringsvc-e2e"), client.WithConnect("go-client"), client.WithBalancer("roundrobin"))
	if err != nil {
		t.Fatal(err)
	}
	call := func(s string) (string, error) {
		cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
		defer ccancel()
		return svc.Uppercase(cctx, s)
	}
	const calls = 20
	for i := 0; i < calls; i++ {
		if v, err := call("mesh"); err != nil || v != "MESH" {
			t.Fatalf("call %d with an allowing intention: want MESH, have %q, %v", i, v, err)
		}
	}
	intention(t, consul, "go-client", "stringsvc-e2e", "deny")
	var denied int
	poll := func() error {
		denied = 0
		for i := 0; i < calls; i++ {
			if _, err := call("mesh"); errors.Is(err, service.ErrDenied) {
				denied++
			}
		}
		if denied != calls {
			return fmt.Errorf("%d of %d calls denied", denied, calls)
		}
		return nil
	}
	consultest.Eventually(t, 10*time.Second, poll) // within the authorization cache's TTL
	before := clustertest.Served(nodes...)
	if err := poll(); err != nil {
		t.Fatal(err)
	}
	if after := clustertest.Served(nodes...); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("denied calls: want none served, have per member %v, then %v", before, after)
	}
	t.Logf("allowed: %d of %d calls answered; denied: %d of %d calls ErrDenied, none served", calls, calls, denied, calls)
}
