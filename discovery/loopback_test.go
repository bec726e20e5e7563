package discovery

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/go-kit/kit/sd"
	"github.com/go-kit/log"

	"github.com/kitmesh/stringsvc/discovery/consultest"
	"github.com/kitmesh/stringsvc/internal/syncbuf"
)

func TestWarnLoopback(t *testing.T) {
	for _, tc := range []struct {
		name, self string
		instances  []string
		warn       bool
	}{
		{name: "loopback among routable peers", self: "127.0.0.1:8080", instances: []string{"10.0.0.2:8080", "127.0.0.1:8080"}, warn: true},
		{name: "all on loopback (one host)", self: "127.0.0.1:8080", instances: []string{"127.0.0.1:8080", "127.0.0.1:8081"}},
		{name: "routable", self: "10.0.0.1:8080", instances: []string{"10.0.0.2:8080", "10.0.0.1:8080"}},
		{name: "IPv6 loopback", self: "[::1]:8080", instances: []string{"[fe80::1]:8080"}, warn: true},
	} {
		var lines syncbuf.Buffer
		stop := WarnLoopback(sd.FixedInstancer(tc.instances), func() string { return tc.self }, log.NewLogfmtLogger(&lines))
		if tc.warn {
			consultest.Eventually(t, 5*time.Second, func() error {
				if !strings.Contains(lines.String(), "level=warn") {
					return errors.New("no warning yet")
				}
				return nil
			})
		}
		stop()
		if have := strings.Count(lines.String(), "level=warn"); have != map[bool]int{true: 1, false: 0}[tc.warn] {
			t.Errorf("%s: want warn=%v, have %d lines:\n%s", tc.name, tc.warn, have, lines.String())
		}
	}
}
