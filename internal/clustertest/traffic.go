package clustertest

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/kitmesh/stringsvc/internal/load"
)

// Defaults of -check.interval and -check.timeout, which these tests keep:
// how long a dead member may stay passing depends on them.
const (
	CheckInterval = 2 * time.Second
	CheckTimeout  = time.Second
)

// IntentionSlack is the slack given to the agent to see an intention write
// before the cache time counts: the agent watches intentions itself.
const IntentionSlack = time.Second

// ServedUppercase is the metric of the /uppercase requests a member served
// itself, without error.
const ServedUppercase = `stringsvc_requests_total{error="false",method="uppercase"}`

// UpperLoad is a load of /uppercase on n, 8 workers, at most requests
// requests in a minute, each paced by pace, that accepts only the right
// answer.
func UpperLoad(n *Node, requests int64, pace time.Duration, progress *load.Progress) load.Options {
	return load.Options{
		Targets:     []string{"http://" + n.Addr + "/uppercase"},
		Body:        []byte(`{"s":"hello, world"}`),
		Concurrency: 8,
		Requests:    requests,
		Duration:    60 * time.Second,
		Pace:        pace,
		Progress:    progress,
		Check: func(code int, body []byte) error {
			if code != 200 || string(body) != `{"v":"HELLO, WORLD"}`+"\n" {
				return fmt.Errorf("status %d body %q", code, body)
			}
			return nil
		},
	}
}

// SendUppercase sends k requests to n and counts the answers by status.
func SendUppercase(t *testing.T, n *Node, k int) map[int]int {
	t.Helper()
	codes := map[int]int{}
	for i := 0; i < k; i++ {
		code, body := Request(t, http.MethodPost, n.Addr, "/uppercase", fmt.Sprintf(`{"s":"hop %d"}`, i))
		codes[code]++
		if code == http.StatusOK && body != fmt.Sprintf(`{"v":"HOP %d"}`+"\n", i) {
			t.Errorf("%s answered %q", n.Name, body)
		}
	}
	return codes
}

// Served returns what each node has served of /uppercase (ServedUppercase).
func Served(ns ...*Node) []float64 {
	out := make([]float64, len(ns))
	for i, n := range ns {
		out[i] = n.Metric(ServedUppercase)
	}
	return out
}
