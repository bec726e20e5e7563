package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/kitmesh/stringsvc/discovery/consultest"
	"github.com/kitmesh/stringsvc/discovery/lb"
	"github.com/kitmesh/stringsvc/internal/clustertest"
	"github.com/kitmesh/stringsvc/internal/load"
	"github.com/kitmesh/stringsvc/internal/poll"
	"github.com/kitmesh/stringsvc/internal/probe"
)

// swarm drives one stack of deploy/swarm/stack.yml on this engine.
type swarm struct {
	containers
	stack string
}

func (s *swarm) docker(args ...string) (string, error) {
	return s.run(append([]string{"docker"}, args...)...)
}

func (s *swarm) must(args ...string) string {
	s.t.Helper()
	return s.mustRun(append([]string{"docker"}, args...)...)
}

// enterSwarm puts the engine in swarm mode if it is not, and leaves it
// again at the end only in that case.
func enterSwarm(t *testing.T) {
	t.Helper()
	out, err := exec.Command("docker", "info", "--format", "{{.Swarm.LocalNodeState}}").Output()
	if err != nil {
		t.Fatalf("docker info: %v", err)
	}
	switch state := strings.TrimSpace(string(out)); state {
	case "active":
		return
	case "inactive":
		// swarm init also creates the docker_gwbridge network, which
		// leaving keeps: remove it too unless it was there before.
		hadBridge := exec.Command("docker", "network", "inspect", "docker_gwbridge").Run() == nil
		if out, err := exec.Command("docker", "swarm", "init", "--advertise-addr", "127.0.0.1").CombinedOutput(); err != nil {
			t.Fatalf("docker swarm init: %v\n%s", err, out)
		}
		t.Cleanup(func() {
			if out, err := exec.Command("docker", "swarm", "leave", "--force").CombinedOutput(); err != nil {
				t.Errorf("docker swarm leave: %v\n%s", err, out)
				return
			}
			if !hadBridge {
				if out, err := exec.Command("docker", "network", "rm", "docker_gwbridge").CombinedOutput(); err != nil {
					t.Errorf("docker network rm docker_gwbridge: %v\n%s", err, out)
				}
			}
		})
	default:
		t.Fatalf("swarm state %q: want active or inactive", state)
	}
}

// passingAddrsOf returns the sorted addresses of every instance of service
// in Consul: only the passing ones, or all.
func passingAddrsOf(consulAddr, service string, passingOnly bool) ([]string, error) {
	return clustertest.HealthField(consulAddr, service, "Address", passingOnly)
}

// edgeRequests returns, from the edge's /debug/mesh, the requests it sent
// to each upstream.
func edgeRequests(edge string) (map[string]int64, error) {
	resp, err := probe.Do("GET", "http://"+edge+"/debug/mesh", "", nil)
	if err != nil {
		return nil, err
	}
	var v struct{ Upstreams []lb.Snapshot } // the part of /debug/mesh read here
	if err := json.Unmarshal([]byte(resp.Body), &v); err != nil {
		return nil, err
	}
	out := map[string]int64{}
	for _, u := range v.Upstreams {
		out[u.Instance] = u.Requests
	}
	return out, nil
}

func TestSwarm(t *testing.T) {
	needDocker(t)
	enterSwarm(t)
	s := &swarm{containers: newContainers(t, "CONSUL_PORT", "EDGE_PORT"), stack: fmt.Sprintf("strsvc%d", os.Getpid())}
	s.must("stack", "deploy", "-c", "deploy/swarm/stack.yml", s.stack)
	t.Cleanup(func() { s.remove(t) })
	consul, edge := s.addr("CONSUL_PORT"), s.addr("EDGE_PORT")
	member := s.stack + "_member"

	waitMembers := func(n int, timeout time.Duration) time.Duration {
		t.Helper()
		began := time.Now()
		consultest.Eventually(t, timeout, func() error {
			addrs, err := passingAddrsOf(consul, "stringsvc", true)
			if err != nil {
				return err
			}
			if len(addrs) != n {
				return fmt.Errorf("passing: want %d members, have %v", n, addrs)
			}
			for _, a := range addrs {
				if strings.HasPrefix(a, "127.") || a == "" {
					return fmt.Errorf("a member registered %q, not its overlay address", a)
				}
			}
			return nil
		})
		return time.Since(began)
	}
	edgeLoad := func(requests int64, pace time.Duration, progress *load.Progress) load.Options {
		o := clustertest.UpperLoad(clustertest.At(t, "edge", edge), requests, pace, progress)
		o.Duration = 3 * time.Minute
		return o
	}

	t.Run("3 members pass, with their overlay addresses", func(t *testing.T) {
		waitMembers(3, 120*time.Second)
		consultest.Eventually(t, 30*time.Second, func() error {
			code, body := clustertest.Request(t, "POST", edge, "/uppercase", `{"s":"through the edge"}`)
			if code != 200 || body != `{"v":"THROUGH THE EDGE"}`+"\n" {
				return fmt.Errorf("edge: %d %s", code, body)
			}
			return nil
		})
	})

	t.Run("scale 3 to 8: all pass and the edge reaches each", func(t *testing.T) {
		s.must("service", "scale", "--detach", member+"=8")
		took := waitMembers(8, 120*time.Second)
		t.Logf("scale 3 -> 8: all 8 passing %v after the command", took.Round(time.Millisecond))
		consultest.Eventually(t, 30*time.Second, func() error {
			load.Run(context.Background(), edgeLoad(200, 0, nil))
			sent, err := edgeRequests(edge)
			if err != nil {
				return err
			}
			var reached int
			for _, n := range sent {
				if n > 0 {
					reached++
				}
			}
			if len(sent) != 8 || reached != 8 {
				return fmt.Errorf("the edge sent to %d of %d upstreams: %v", reached, len(sent), sent)
			}
			return nil
		})
	})

	t.Run("rolling update under load loses nothing", func(t *testing.T) {
		var progress load.Progress
		done := make(chan load.Result, 1)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() { done <- load.Run(ctx, edgeLoad(100000, 10*time.Millisecond, &progress)) }()
		consultest.Eventually(t, 30*time.Second, func() error {
			if progress.Succeeded.Load() < 100 {
				return fmt.Errorf("load not started")
			}
			return nil
		})
		began := time.Now()
		s.must("service", "update", "--force", "--detach=false", "--quiet", member)
		t.Logf("rolling update of 8 members took %v", time.Since(began).Round(time.Millisecond))
		waitMembers(8, 60*time.Second)
		cancel()
		res := <-done
		t.Logf("rolling update under load: %s", res)
		if res.Failed != 0 || res.Succeeded == 0 {
			t.Errorf("want 0 failed, have %s", res)
		}
	})

	t.Run("scale 8 to 2: the removed members deregister", func(t *testing.T) {
		before, err := passingAddrsOf(consul, "stringsvc", false)
		if err != nil || len(before) != 8 {
			t.Fatalf("want 8 members before, have %v (%v)", before, err)
		}
		s.must("service", "scale", "--detach=false", member+"=2")
		stopped := time.Now()
		// Deregistered, not failed: a member that failed its check would
		// still be listed (critical) for a minute.
		consultest.Eventually(t, 2*time.Second, func() error {
			all, err := passingAddrsOf(consul, "stringsvc", false)
			if err != nil {
				return err
			}
			if len(all) != 2 {
				return fmt.Errorf("want 2 members listed, have %v", all)
			}
			return nil
		})
		t.Logf("scale 8 -> 2: catalog at 2 members %v after the tasks stopped", time.Since(stopped).Round(time.Millisecond))
	})
}

// remove removes the stack and waits until none of its services,
// containers or networks is left.
func (s *swarm) remove(t *testing.T) {
	if t.Failed() {
		for _, svc := range []string{"edge", "member"} {
			out, _ := s.docker("service", "logs", "--tail", "20", s.stack+"_"+svc)
			t.Logf("%s logs:\n%s", svc, out)
		}
	}
	if out, err := s.docker("stack", "rm", s.stack); err != nil {
		t.Errorf("docker stack rm: %v\n%s", err, out)
		return
	}
	label := "label=com.docker.stack.namespace=" + s.stack
	err := poll.Until(60*time.Second, 200*time.Millisecond, func() error {
		var left []string
		for _, kind := range [][]string{{"service", "ls"}, {"ps", "-a"}, {"network", "ls"}} {
			out, err := s.docker(append(kind, "-q", "--filter", label)...)
			if err != nil {
				return err
			}
			if f := strings.Fields(out); len(f) > 0 {
				left = append(left, kind[0]+": "+strings.Join(f, " "))
			}
		}
		if len(left) > 0 {
			sort.Strings(left)
			return fmt.Errorf("left behind: %v", left)
		}
		return nil
	})
	if err != nil {
		t.Errorf("stack %s: %v", s.stack, err)
	}
}
