package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kitmesh/stringsvc/discovery/consultest"
	"github.com/kitmesh/stringsvc/internal/clustertest"
	"github.com/kitmesh/stringsvc/internal/load"
	"github.com/kitmesh/stringsvc/internal/probe"
)

// TestComposeSecure runs docker-compose.yml with the deploy/compose/secure.yml
// overlay: ACLs on with default deny, tokens made by the acl-init container.
func TestComposeSecure(t *testing.T) {
	needDocker(t)
	c := newCompose(t, composeCLIs(t)[0], "deploy/compose/secure.yml") // v2 (as the README writes it) where present
	c.profiles = append(c.profiles, "edge")
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

	t.Run("the edge's init writes its intention with its own scoped token", func(t *testing.T) {
		consultest.Eventually(t, 60*time.Second, func() error {
			if s := c.inspect("edge-init", "{{.State.Status}} {{.State.ExitCode}}"); s != "exited 0" {
				return fmt.Errorf("edge-init is %s", s)
			}
			return nil
		})
		resp, err := probe.Do("GET", "http://"+consulAddr+"/v1/config/service-intentions/stringsvc-edge", "", asRoot)
		var entry struct {
			Sources []struct{ Name, Action string }
		}
		if err == nil {
			err = json.Unmarshal([]byte(resp.Body), &entry)
		}
		if err != nil || resp.Status != 200 || len(entry.Sources) != 1 || entry.Sources[0].Name != "*" || entry.Sources[0].Action != "deny" {
			t.Errorf("want the deny-all intention of stringsvc-edge, have %v %d %.300s", err, resp.Status, resp.Body)
		}
		if strings.Contains(c.must("logs", "edge-init"), management) {
			t.Error("edge-init printed the management token")
		}
		// The init's container has no way to the management token.
		if out, err := c.cmd("run", "--rm", "-T", "--no-deps", "--entrypoint", "cat", "edge-init", "/secrets/management"); err == nil || strings.Contains(out, management) {
			t.Errorf("edge-init's container can read the management token (%v)", err)
		}
		// Its own token is config-init's, and no member's volume has it.
		out, err := c.cmd("run", "--rm", "-T", "--no-deps", "--entrypoint", "consul", "edge-init", "acl", "token", "read", "-self", "-format=json")
		if err != nil || !strings.Contains(out, `"config-init"`) {
			t.Errorf("edge-init's token: want the config-init policy, have %v %.300s", err, out)
		}
	})

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

	// The members' operator's pages, on their admin listeners: their
	// client ports listen on loopback only.
	members := []*clustertest.Node{c.dnode("node1", "NODE1_ADMIN_PORT"), c.dnode("node2", "NODE2_ADMIN_PORT"), c.dnode("node3", "NODE3_ADMIN_PORT")}
	edge := c.dnode("edge", "EDGE_PORT")

	t.Run("clients enter through the edge; requests spread over the members", func(t *testing.T) {
		consultest.Eventually(t, 60*time.Second, func() error {
			if u := edge.Upstreams(); u != 3 {
				return fmt.Errorf("the edge sees %d upstreams", u)
			}
			return nil
		})
		if res := load.Run(context.Background(), clustertest.UpperLoad(edge, 600, 0, nil)); res.Failed != 0 || res.Succeeded != 600 {
			t.Fatalf("want 600 succeeded, have %s", res)
		}
		for _, m := range members {
			if served := m.Metric(clustertest.ServedUppercase); served == 0 {
				t.Errorf("%s served none", m.Name)
			}
		}
		if f := edge.Metric("stringsvc_fallbacks_total"); f != 0 {
			t.Errorf("the edge served %v requests itself", f)
		}
	})

	t.Run("with the edge denied, no port of any member answers it", func(t *testing.T) {
		deny := `{"Kind":"service-intentions","Name":"stringsvc","Sources":[{"Name":"stringsvc","Action":"allow"},{"Name":"stringsvc-edge","Action":"deny"}]}`
		if resp, err := probe.Do("PUT", "http://"+consulAddr+"/v1/config", deny, asRoot); err != nil || resp.Status != 200 {
			t.Fatalf("write the deny: %v %+v", err, resp)
		}
		// The edge's own forwards: 403 within the cache time.
		consultest.Eventually(t, 10*time.Second, func() error {
			if code, body := clustertest.Request(t, "POST", edge.Addr, "/uppercase", `{"s":"denied"}`); code != 403 {
				return fmt.Errorf("edge after the deny: have %d %s", code, body)
			}
			return nil
		})
		// From inside the edge's container, on the members' network, with
		// the edge's identity denied: every port of every member, in plain
		// HTTP. The client port is loopback only; the mesh port wants a
		// Connect leaf; the admin port serves no request of the service.
		tried := 0
		for _, member := range []string{"node1", "node2", "node3"} {
			for _, port := range []string{"8080", "8443", "9100"} {
				tried++
				out, err := c.cmd("exec", "-T", "edge", "/stringsvc", "call", "-addr", member+":"+port, "uppercase", "side door")
				if err == nil || strings.Contains(out, "SIDE DOOR") {
					t.Errorf("%s:%s answered /uppercase from the edge's container: %v %.200s", member, port, err, out)
				}
			}
		}
		// And from the host, the base file's published client ports.
		for _, port := range []string{"NODE1_PORT", "NODE2_PORT", "NODE3_PORT"} {
			if resp, err := probe.Do("POST", "http://"+c.addr(port)+"/uppercase", `{"s":"side door"}`, nil); err == nil && strings.Contains(resp.Body, "SIDE DOOR") {
				t.Errorf("%s answered /uppercase: %d %s", port, resp.Status, resp.Body)
			}
		}
		var denials float64
		for _, m := range members {
			denials += m.Metric(`stringsvc_mesh_denied_total{side="server",source="stringsvc-edge"}`)
		}
		if denials < 1 {
			t.Error("the members counted no denial of the edge: its 403 came from somewhere else")
		}
		t.Logf("%d member ports tried from the edge's container: none answered", tried)
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
