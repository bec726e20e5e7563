package discovery

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/go-kit/log"
	"github.com/hashicorp/consul/api"
)

func TestReachabilityLogsOncePerChange(t *testing.T) {
	var lines []string
	r := NewReachability(log.LoggerFunc(func(kv ...interface{}) error {
		lines = append(lines, kv[1].(string))
		return nil
	}))
	clock := time.Unix(0, 0)
	r.now = func() time.Time { return clock }
	down := errors.New("connection refused")

	r.Observe(down) // a blip during shutdown...
	clock = clock.Add(10 * time.Millisecond)
	r.Observe(nil) // ...and a late success: no lines
	r.Observe(api.StatusError{Code: 404})
	for i := 0; i < 50; i++ { // a real outage, retried every 100ms
		r.Observe(down)
		clock = clock.Add(100 * time.Millisecond)
	}
	r.Observe(context.Canceled)
	if !r.Down() {
		t.Error("Down: want true during the outage")
	}
	r.Observe(nil)
	r.Observe(nil)
	if have := strings.Join(lines, ","); have != "unreachable,reachable" {
		t.Errorf("want unreachable,reachable; have %q", have)
	}
}
