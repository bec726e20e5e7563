package logsink

import (
	"errors"
	"strings"
	"testing"

	"github.com/go-kit/log"

	"github.com/kitmesh/stringsvc/internal/syncbuf"
)

func TestSanitize(t *testing.T) {
	var out syncbuf.Buffer
	logger := Sanitize(log.NewLogfmtLogger(&out))
	logger.Log("input", "a\u0085b\u2028c\u2029d\u202Ee\u2066f", "err", errors.New("x\u202Ey"), "n", 5, "plain", "héllo")
	line := out.String()
	for _, r := range []string{"\u0085", "\u2028", "\u2029", "\u202E", "\u2066"} {
		if strings.Contains(line, r) {
			t.Errorf("the line carries %U raw: %q", []rune(r)[0], line)
		}
	}
	for _, want := range []string{`\u0085`, `\u2028`, `\u202E`, "n=5", "plain=héllo"} {
		if !strings.Contains(line, want) {
			t.Errorf("want %s in %q", want, line)
		}
	}
	if strings.Count(line, "\n") != 1 {
		t.Errorf("want one line, have %q", line)
	}
}
