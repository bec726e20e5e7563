package main

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/kitmesh/stringsvc/discovery/consultest"
	"github.com/kitmesh/stringsvc/internal/clustertest"
	"github.com/kitmesh/stringsvc/internal/devconsul"
	"github.com/kitmesh/stringsvc/internal/load"
)

// rootToken is the management token of the test's ACL agent.
const rootToken = "3f1e2c8a-0000-4000-8000-5ec2e7acc001"

// aclAgent starts a real agent with ACLs on and default deny, and returns
// a management client.
func aclAgent(t *testing.T) (*consultest.Agent, *api.Client) {
	t.Helper()
	agent := consultest.StartWith(t, devconsul.Options{HCL: `acl {
		enabled = true
		default_policy = "deny"
		enable_token_persistence = false
		tokens {
			initial_management = "` + rootToken + `"
			agent = "` + rootToken + `"
		}
	}`})
	conf := api.DefaultConfig()
	conf.Address, conf.Token = agent.Addr, rootToken
	root, err := api.NewClient(conf)
	if err != nil {
		t.Fatal(err)
	}
	return agent, root
}

// memberPolicy creates the shipped member policy, for the test's service
// name, as an operator does for another -service.name.
func memberPolicy(t *testing.T, root *api.Client) string {
	t.Helper()
	rules, err := os.ReadFile("../../deploy/consul/member-policy.hcl")
	if err != nil {
		t.Fatal(err)
	}
	var policy *api.ACLPolicy
	consultest.Eventually(t, 10*time.Second, func() error { // the ACL system starts just after the leader
		policy, _, err = root.ACL().PolicyCreate(&api.ACLPolicy{
			Name:  "stringsvc-e2e-member",
			Rules: strings.ReplaceAll(string(rules), `"stringsvc"`, `"stringsvc-e2e"`),
		}, nil)
		return err
	})
	return policy.ID
}

// memberToken creates a token with the policy and returns its secret.
func memberToken(t *testing.T, root *api.Client, policyID string) string {
	t.Helper()
	token, _, err := root.ACL().TokenCreate(&api.ACLToken{Policies: []*api.ACLTokenPolicyLink{{ID: policyID}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return token.SecretID
}

// ids returns the IDs of the test service's instances, as the root sees.
func ids(t *testing.T, root *api.Client, passingOnly bool) []string {
	t.Helper()
	entries, _, err := root.Health().Service("stringsvc-e2e", "", passingOnly, nil)
	if err != nil {
		t.Fatalf("health query: %v", err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Service.ID)
	}
	return out
}

func writeToken(t *testing.T, path, secret string) {
	t.Helper()
	// As a Vault agent does: write aside, then rename over.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func TestACLs(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	agent, root := aclAgent(t)
	policy := memberPolicy(t, root)
	dir := t.TempDir()
	var secrets []string
	var nodes []*clustertest.Node
	for _, name := range []string{"A", "B"} {
		file := filepath.Join(dir, name)
		secret := memberToken(t, root, policy)
		secrets = append(secrets, secret)
		writeToken(t, file, secret)
		// Round robin, so that B's share of A's requests does not hang on
		// p2c's preference for A's own in-process instance: this test is
		// about what the tokens allow, not about balancing.
		nodes = append(nodes, clustertest.StartNode(t, name, agent.Addr, "-consul.token-file", file, "-proxy.balancer", "roundrobin"))
	}
	a, b := nodes[0], nodes[1]

	t.Run("members with the shipped policy register, discover and forward", func(t *testing.T) {
		consultest.Eventually(t, 20*time.Second, func() error {
			if have := ids(t, root, true); len(have) != 2 {
				return fmt.Errorf("passing: want A and B, have %v", have)
			}
			return nil
		})
		waitUpstreams(t, 2, a, b)
		if res := load.Run(t.Context(), clustertest.UpperLoad(a, 200, 0, nil)); res.Failed != 0 {
			t.Fatalf("want 200 answered, have %s", res)
		}
		if served := b.Metric(clustertest.ServedUppercase); served == 0 {
			t.Error("B served none of the requests sent to A")
		}
	})

	cFile := filepath.Join(dir, "C")
	c := clustertest.StartNode(t, "C", agent.Addr, "-consul.token-file", cFile) // no file yet

	t.Run("a member without a token serves locally and says why", func(t *testing.T) {
		if code, body := clustertest.Request(t, "POST", c.Addr, "/uppercase", `{"s":"alone"}`); code != 200 || body != `{"v":"ALONE"}`+"\n" {
			t.Errorf("C without a token: want 200 ALONE, have %d %s", code, body)
		}
		consultest.Eventually(t, 10*time.Second, func() error {
			if n := c.Metric(`stringsvc_consul_failures_total{kind="denied",op="register"}`); n < 3 {
				return fmt.Errorf("%v denials counted so far", n)
			}
			return nil
		})
		log := c.Log()
		if n := strings.Count(log, "ACL token lacks service:write on stringsvc-e2e (Consul answered 403 to register)"); n != 1 {
			t.Errorf("want the denial logged once, naming the permission and the operation, have %d times:\n%s", n, clustertest.LastLines(log, 20))
		}
		if n := strings.Count(log, "op=discover"); n != 1 || !strings.Contains(log, "lacks service:read on stringsvc-e2e") {
			t.Errorf("want the discovery query's denial logged once, have %d lines:\n%s", n, clustertest.LastLines(log, 20))
		}
		if r := c.Metric("stringsvc_registered "); r != 0 {
			t.Errorf("stringsvc_registered: want 0, have %v", r)
		}
		if _, body := clustertest.Request(t, "GET", c.Addr, "/debug/mesh", ""); !strings.Contains(body, "lacks service:write") || !strings.Contains(body, `"discovery_error": "ACL token lacks service:read`) {
			t.Errorf("/debug/mesh: want the missing permission shown, have %s", body)
		}
		for _, id := range ids(t, root, false) {
			if id == c.ID() {
				t.Errorf("C is in the catalog without a token")
			}
		}
	})

	t.Run("a rewritten token file registers it without a restart", func(t *testing.T) {
		writeToken(t, cFile, memberToken(t, root, policy))
		fixed := time.Now()
		consultest.Eventually(t, 15*time.Second, func() error {
			for _, id := range ids(t, root, false) {
				if id == c.ID() {
					return nil
				}
			}
			return fmt.Errorf("C not in the catalog yet")
		})
		t.Logf("C registered %v after its token file was written", time.Since(fixed).Round(time.Millisecond))
		if r := c.Metric("stringsvc_registered "); r != 1 {
			t.Errorf("stringsvc_registered: want 1, have %v", r)
		}
	})

	t.Run("SIGTERM deregisters at once", func(t *testing.T) {
		a.Kill(syscall.SIGTERM)
		termed := time.Now()
		consultest.Eventually(t, clustertest.CheckInterval/2, func() error {
			for _, id := range ids(t, root, false) {
				if id == a.ID() {
					return fmt.Errorf("A still in the catalog")
				}
			}
			return nil
		})
		t.Logf("A left the catalog %v after SIGTERM", time.Since(termed).Round(time.Millisecond))
		if err := a.Wait(15 * time.Second); err != nil {
			t.Errorf("A's exit: %v", err)
		}
	})

	t.Run("no token ever reaches a log, a metric or /debug/mesh", func(t *testing.T) {
		for _, n := range []*clustertest.Node{a, b, c} {
			text := n.Log()
			if n != a {
				_, metrics := clustertest.Request(t, "GET", n.Addr, "/metrics", "")
				_, mesh := clustertest.Request(t, "GET", n.Addr, "/debug/mesh", "")
				text += metrics + mesh
			}
			for _, s := range append(secrets, rootToken) {
				for _, part := range []string{s, s[:8], s[len(s)-12:]} {
					if strings.Contains(text, part) {
						t.Errorf("%s shows (part of) a token", n.Name)
					}
				}
			}
		}
	})
}

// TestACLsEdgeChecksItsOwnIntention: under default-deny ACLs an edge with
// the shipped edge policy can tell whether it may serve a request itself
// (service:read on its upstream is enough), so a deny is a 403, an allow
// serves, and neither costs a question to the agent per request.
func TestACLsEdgeChecksItsOwnIntention(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	agent, root := aclAgent(t)
	rules, err := os.ReadFile("../../deploy/consul/edge-policy.hcl")
	if err != nil {
		t.Fatal(err)
	}
	rules = []byte(strings.NewReplacer(`"stringsvc-edge"`, `"stringsvc-lonely"`, `"stringsvc"`, `"stringsvc-void"`).Replace(string(rules)))
	var policy *api.ACLPolicy
	consultest.Eventually(t, 10*time.Second, func() error {
		policy, _, err = root.ACL().PolicyCreate(&api.ACLPolicy{Name: "lonely-edge", Rules: string(rules)}, nil)
		return err
	})
	file := filepath.Join(t.TempDir(), "edge")
	writeToken(t, file, memberToken(t, root, policy.ID))
	edge := startConnectNode(t, "lonely", agent.Addr, "-consul.token-file", file, "-service.name", "stringsvc-lonely", "-proxy.service", "stringsvc-void")

	// Default deny, no intention: refused, not served, not a 503.
	asked := func() float64 { return edge.Metric("stringsvc_mesh_authorize_calls_total") }
	before := asked()
	if codes := clustertest.SendUppercase(t, edge, 50); codes[http.StatusForbidden] != 50 {
		t.Errorf("edge under default deny with no upstream: want 50 answers 403, have %v", codes)
	}
	if n := asked() - before; n > 3 {
		t.Errorf("50 requests asked the agent %v times; want one per cache period", n)
	}
	// Allowed: served locally, the documented choice.
	intention(t, root, "stringsvc-lonely", "stringsvc-void", "allow")
	consultest.Eventually(t, 10*authzCache, func() error {
		if code, body := clustertest.Request(t, http.MethodPost, edge.Addr, "/uppercase", `{"s":"alone"}`); code != http.StatusOK || body != `{"v":"ALONE"}`+"\n" {
			return fmt.Errorf("allowed edge with no upstream: have %d %s", code, body)
		}
		return nil
	})
}
