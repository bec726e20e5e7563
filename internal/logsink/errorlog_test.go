package logsink

import (
	"strings"
	"testing"

	"github.com/go-kit/log"

	"github.com/kitmesh/stringsvc/internal/syncbuf"
)

func TestErrorLogIsBoundedAndStructured(t *testing.T) {
	var out syncbuf.Buffer
	l := NewErrorLog(log.NewLogfmtLogger(&out), 3)
	for i := 0; i < 100; i++ {
		l.Printf("http: superfluous response.WriteHeader call from somewhere")
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) < 3 || len(lines) > 5 {
		t.Errorf("100 lines in a burst of 3: want 3 to 5 written, have %d", len(lines))
	}
	for _, line := range lines {
		if !strings.HasPrefix(line, `msg="http: superfluous`) {
			t.Errorf("want logfmt with msg=, have %q", line)
		}
	}
}
