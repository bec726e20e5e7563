package discovery

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-kit/log"
	"github.com/hashicorp/consul/api"

	"github.com/kitmesh/stringsvc/internal/poll"
)

// An agent that refuses the zone lookup (a token without agent:read, or
// one still being written) is asked again, rarely, and the zone it names
// once it answers is taken.
func TestLocalZoneAsksAgainAfterADenial(t *testing.T) {
	old := deniedRecheck
	deniedRecheck = 10 * time.Millisecond
	defer func() { deniedRecheck = old }()
	var asked atomic.Int64
	agent := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/agent/self" {
			http.NotFound(w, r)
			return
		}
		if asked.Add(1) <= 2 {
			http.Error(w, "Permission denied: token lacks agent:read", http.StatusForbidden)
			return
		}
		w.Write([]byte(`{"Meta":{"zone":"a"}}`))
	}))
	defer agent.Close()
	client, err := api.NewClient(&api.Config{Address: agent.Listener.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	z := NewLocalZone(client, "", log.NewNopLogger())
	defer z.Stop()
	if err := poll.Until(10*time.Second, 5*time.Millisecond, func() error {
		if have := z.Get(); have != "a" {
			return fmt.Errorf("want zone a once the agent answers, have %q after %d questions", have, asked.Load())
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if n := asked.Load(); n != 3 {
		t.Errorf("want 3 questions (2 refused, 1 answered), have %d", n)
	}
}
