package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kitmesh/stringsvc/cmd/internal/load"
	"github.com/kitmesh/stringsvc/discovery/consultest"
	"github.com/kitmesh/stringsvc/internal/probe"
)

// TestComposeSecure runs docker-compose.yml with the deploy/compose/secure.yml
// overlay: ACLs on with default deny, tokens made by the acl-init container.
func TestComposeSecure(t *testing.T) {
	needDocker(t)
	c := newCompose(t, composeCLIs(t)[0], "deploy/compose/secure.yml") // v2 (as the README writes it) where present
	c.must("up", "-d", "--no-build")
	consulAddr := c.addr("CONSUL_PORT")

	// The management token, as the README tells an operator to get it.
	var management string
	consultest.Eventually(t, 90*time.Second, func() error {
		out, err := c.cmd("run", "--rm", "-T", "--entrypoint", "cat", "acl-init", "/secrets/management")
		lines := strings.Fields(out)
		if err != nil || len(lines) == 0 || len(lines[len(lines)-1]) != 36 {
			return fmt.Errorf("no management token yet (%v)", err)
		}
		management = lines[len(lines)-1]
		return nil
	})
	asRoot := http.Header{"X-Consul-Token": {management}}

	t.Run("every member registers with its own token", func(t *testing.T) {
		consultest.Eventually(t, 90*time.Second, func() error {
			resp, err := probe.Do("GET", "http://"+consulAddr+"/v1/health/service/stringsvc?passing=1", "", asRoot)
			if err != nil {
				return err
			}
			var entries []json.RawMessage
			if err := json.Unmarshal([]byte(resp.Body), &entries); err != nil || len(entries) != 3 {
				return fmt.Errorf("passing: want 3, have %d (%v)", len(entries), err)
			}
			return nil
		})
	})

	t.Run("the catalog refuses an anonymous read", func(t *testing.T) {
		resp, err := probe.Do("GET", "http://"+consulAddr+"/v1/catalog/services", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(resp.Body, "stringsvc") || resp.Header.Get("X-Consul-Default-Acl-Policy") != "deny" {
			t.Errorf("anonymous catalog read: want nothing under default deny, have %d %s (policy %q)", resp.Status, resp.Body, resp.Header.Get("X-Consul-Default-Acl-Policy"))
		}
	})

	t.Run("requests spread over the members", func(t *testing.T) {
		n1 := c.dnode("node1", "NODE1_PORT")
		consultest.Eventually(t, 30*time.Second, func() error {
			if u := n1.upstreams(); u != 3 {
				return fmt.Errorf("node1 sees %d upstreams", u)
			}
			return nil
		})
		if res := load.Run(context.Background(), upperLoad(n1, 600, 0, nil)); res.Failed != 0 || res.Succeeded != 600 {
			t.Fatalf("want 600 succeeded, have %s", res)
		}
		for _, m := range []struct{ service, port string }{{"node1", "NODE1_PORT"}, {"node2", "NODE2_PORT"}, {"node3", "NODE3_PORT"}} {
			if served := c.dnode(m.service, m.port).metric(servedUppercase); served == 0 {
				t.Errorf("%s served none", m.service)
			}
		}
	})

	t.Run("Prometheus finds the members with its read-only token", func(t *testing.T) {
		consultest.Eventually(t, 60*time.Second, func() error {
			resp, err := probe.Do("GET", "http://"+c.addr("PROMETHEUS_PORT")+"/api/v1/targets?state=active", "", nil)
			if err != nil {
				return err
			}
			if n := strings.Count(resp.Body, `"health":"up"`); n != 3 {
				return fmt.Errorf("want 3 targets up, have %d", n)
			}
			return nil
		})
	})

	t.Run("no token in the members' logs", func(t *testing.T) {
		out, _ := c.cmd("logs", "--no-color", "node1", "node2", "node3", "acl-init")
		if strings.Contains(out, management) || strings.Contains(out, management[:8]) {
			t.Error("the management token appears in a log")
		}
	})
}
