package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/kitmesh/stringsvc/discovery/consultest"
	"github.com/kitmesh/stringsvc/internal/clustertest"
	"github.com/kitmesh/stringsvc/internal/load"
	"github.com/kitmesh/stringsvc/internal/probe"
)

// meshView is what the test reads of /debug/mesh's traffic section
// (client.RouterView): the default route's splits and the target pools.
type meshView struct {
	Traffic *struct {
		Plan struct {
			Routes []struct {
				Splits []struct {
					Weight float32
					Target string
				}
			}
			Targets map[string]struct{ Subset string }
		}
		Targets map[string]struct {
			Target    struct{ Subset string }
			Upstreams []json.RawMessage
		} `json:"target_pools"`
	}
}

// The canary profile as the README walks through it: the init's 90/10
// split, then 50/50, 100 and a rollback with `consul config write` and
// `delete`, each taking effect without a restart; and the Consul UI's
// Routing tab showing the splitter and the resolver.
func TestComposeCanary(t *testing.T) {
	needDocker(t)
	cli := composeCLIs(t)[0] // v2, as the README writes it
	c := newCompose(t, cli)
	c.project += "-canary"
	c.profiles = []string{"canary"}
	c.must("up", "-d", "--no-build")

	members := []string{"node1", "node2", "node3", "canary1", "canary2"}
	consultest.Eventually(t, 90*time.Second, func() error {
		for _, m := range members {
			if s := c.inspect(m, "{{.State.Health.Status}}"); s != "healthy" {
				return fmt.Errorf("%s is %s", m, s)
			}
		}
		if s := c.inspect("canary-init", "{{.State.Status}} {{.State.ExitCode}}"); s != "exited 0" {
			return fmt.Errorf("canary-init is %s", s)
		}
		return nil
	})
	n1 := c.dnode("node1", "NODE1_PORT")
	canaries := []*clustertest.Node{c.dnode("canary1", "CANARY1_PORT"), c.dnode("canary2", "CANARY2_PORT")}
	// splits waits until node1 applies weights (by subset) with every
	// target's pool filled.
	splits := func(want map[string]float32) {
		t.Helper()
		consultest.Eventually(t, 30*time.Second, func() error {
			resp, err := probe.Do(http.MethodGet, "http://"+n1.Addr+"/debug/mesh", "", nil)
			if err != nil {
				return err
			}
			var v meshView
			if err := json.Unmarshal([]byte(resp.Body), &v); err != nil {
				return err
			}
			if v.Traffic == nil || len(v.Traffic.Plan.Routes) == 0 {
				return fmt.Errorf("no traffic section: %.300s", resp.Body)
			}
			have := map[string]float32{}
			for _, s := range v.Traffic.Plan.Routes[len(v.Traffic.Plan.Routes)-1].Splits {
				have[v.Traffic.Plan.Targets[s.Target].Subset] += s.Weight
			}
			if fmt.Sprint(have) != fmt.Sprint(want) {
				return fmt.Errorf("splits: want %v, have %v", want, have)
			}
			for id, tv := range v.Traffic.Targets {
				if n := map[string]int{"v1": 3, "v2": 2}[tv.Target.Subset]; len(tv.Upstreams) != n {
					return fmt.Errorf("target %s: want %d instances, have %d", id, n, len(tv.Upstreams))
				}
			}
			return nil
		})
	}
	share := func(subset string) float64 {
		return n1.Metric(`stringsvc_proxy_target_requests_total{datacenter="dc1",service="stringsvc",subset="` + subset + `"}`)
	}
	servedByCanaries := func() float64 {
		return canaries[0].Metric(clustertest.ServedUppercase) + canaries[1].Metric(clustertest.ServedUppercase)
	}
	// send sends n requests to node1 and returns how many each subset got
	// and how many the canaries served.
	send := func(n int) (v1, v2, canary float64) {
		t.Helper()
		a1, a2, c0 := share("v1"), share("v2"), servedByCanaries()
		if res := load.Run(context.Background(), clustertest.UpperLoad(n1, int64(n), 0, nil)); res.Failed != 0 || res.Succeeded != int64(n) {
			t.Fatalf("want %d succeeded, have %s", n, res)
		}
		return share("v1") - a1, share("v2") - a2, servedByCanaries() - c0
	}
	// write is `docker compose exec -T consul consul config write -`,
	// with the repository's file on stdin, as the README has it.
	write := func(file string) {
		t.Helper()
		f, err := os.Open(c.dir + "/deploy/consul/config/" + file)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		argv := c.argv("exec", "-T", "consul", "consul", "config", "write", "-")
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Dir, cmd.Env, cmd.Stdin = c.dir, c.env, f
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("config write %s: %v\n%s", file, err, out)
		}
	}

	splits(map[string]float32{"v1": 90, "v2": 10})
	const n = 2000
	v1, v2, _ := send(n)
	pct := 100 * v2 / (v1 + v2)
	t.Logf("90/10: %d requests to node1: v1 %.0f, v2 %.0f (%.2f%%)", n, v1, v2, pct)
	if v1+v2 != n || pct < 7 || pct > 13 {
		t.Errorf("90/10: want all %d counted and v2 at 10%% ± 3, have %.0f counted, %.2f%%", n, v1+v2, pct)
	}

	t.Run("the Consul UI's Routing tab shows the splitter and the resolver", func(t *testing.T) {
		consulUIPage(t, c.addr("CONSUL_PORT"), "/ui/dc1/services/stringsvc/routing", "consul-ui-routing", func(text string) error {
			// The UI writes its column headings in capitals (CSS).
			for _, want := range []string{"splitters", "resolvers", "v1", "v2"} {
				if !strings.Contains(strings.ToLower(text), want) {
					return fmt.Errorf("no %q on the Routing tab", want)
				}
			}
			return nil
		})
	})

	write("splitter-50-50.hcl")
	splits(map[string]float32{"v1": 50, "v2": 50})
	v1, v2, _ = send(n)
	pct = 100 * v2 / (v1 + v2)
	t.Logf("50/50: v1 %.0f, v2 %.0f (%.2f%%)", v1, v2, pct)
	if v1+v2 != n || pct < 45 || pct > 55 {
		t.Errorf("50/50: want v2 at 50%% ± 5 of %d, have %.0f counted, %.2f%%", n, v1+v2, pct)
	}

	write("splitter-100.hcl")
	splits(map[string]float32{"v2": 100})
	if v1, v2, served := send(200); v1 != 0 || v2 != 200 || served != 200 {
		t.Errorf("100: want all 200 to v2 and served by the canaries, have v1 %.0f, v2 %.0f, served %.0f", v1, v2, served)
	}

	// Rollback: without the splitter, the resolver's default subset.
	c.must("exec", "-T", "consul", "consul", "config", "delete", "-kind", "service-splitter", "-name", "stringsvc")
	splits(map[string]float32{"v1": 100})
	if v1, v2, served := send(200); v1 != 200 || v2 != 0 || served != 0 {
		t.Errorf("rollback: want all 200 to v1 and none served by the canaries, have v1 %.0f, v2 %.0f, served %.0f", v1, v2, served)
	}
	for _, m := range members {
		if restarts := c.inspect(m, "{{.RestartCount}}"); restarts != "0" {
			t.Errorf("%s restarted %s times", m, restarts)
		}
	}
}
