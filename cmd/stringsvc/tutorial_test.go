package main

import (
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/kitmesh/stringsvc/discovery/consultest"
	"github.com/kitmesh/stringsvc/internal/clustertest"
)

// TestTutorialSession runs the session that ends Go kit's stringsvc3
// tutorial, flag for flag, with free ports in place of 8001-8003 and 8080:
//
//	stringsvc -listen=:8001 &
//	stringsvc -listen=:8002 &
//	stringsvc -listen=:8003 &
//	stringsvc -listen=:8080 -proxy=localhost:8001,localhost:8002,localhost:8003
//	for s in foo bar baz ; do curl -d"{\"s\":\"$s\"}" localhost:8080/uppercase ; done
func TestTutorialSession(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	var upstreams []*clustertest.Node
	var proxy string
	for i := 1; i <= 3; i++ {
		port := strconv.Itoa(consultest.FreePort(t))
		upstreams = append(upstreams, clustertest.StartProcess(t, "upstream"+strconv.Itoa(i), "localhost:"+port, "-listen=:"+port))
		if proxy != "" {
			proxy += ","
		}
		proxy += "localhost:" + port
	}
	port := strconv.Itoa(consultest.FreePort(t))
	edge := clustertest.StartProcess(t, "proxy", "localhost:"+port, "-listen=:"+port, "-proxy="+proxy)

	for _, s := range []string{"foo", "bar", "baz"} {
		code, body := clustertest.Request(t, "POST", edge.Addr, "/uppercase", fmt.Sprintf(`{"s":"%s"}`, s))
		if want := fmt.Sprintf(`{"v":"%s"}`+"\n", map[string]string{"foo": "FOO", "bar": "BAR", "baz": "BAZ"}[s]); code != 200 || body != want {
			t.Errorf("%s: want 200 %s, have %d %s", s, want, code, body)
		}
	}

	var served float64
	for _, u := range upstreams {
		served += u.Metric(clustertest.ServedUppercase)
	}
	if served != 3 {
		t.Errorf("served by the upstreams: want all 3, have %v", served)
	}
	if local := edge.Metric(clustertest.ServedUppercase); local != 0 {
		t.Errorf("served by the proxy itself: want 0, have %v", local)
	}
	if fallbacks := edge.Metric("stringsvc_fallbacks_total"); fallbacks != 0 {
		t.Errorf("proxy fallbacks: want 0, have %v", fallbacks)
	}
	if log := edge.Log(); !containsOnce(log, "not using Consul") {
		t.Errorf("proxy log: want one line saying it does not use Consul, have:\n%s", log)
	}
}

// containsOnce reports whether sub occurs in s exactly once.
func containsOnce(s, sub string) bool { return strings.Count(s, sub) == 1 }
