package logsink

import (
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/go-kit/log"
)

// Sanitize returns a logger that escapes, in every value, the runes that
// logfmt passes through raw but that log viewers treat as line breaks or
// that reorder the text on screen: C1 controls (U+0080 to U+009F, U+0085
// among them), U+2028 and U+2029, and the bidirectional controls (U+202E
// and kin). A value that contains one is written as text with \uXXXX in
// its place, so a client's input can neither split a log line nor spoof
// one. logfmt itself escapes the C0 controls.
func Sanitize(next log.Logger) log.Logger {
	return log.LoggerFunc(func(keyvals ...interface{}) error {
		for i := 1; i < len(keyvals); i += 2 {
			var s string
			switch v := keyvals[i].(type) {
			case time.Duration, time.Time:
				continue // their text is digits and units; String would allocate it
			case string:
				s = v
			case error:
				s = v.Error()
			case fmt.Stringer:
				s = v.String()
			default:
				continue
			}
			if j := strings.IndexFunc(s, dangerous); j >= 0 {
				keyvals[i] = escape(s, j)
			}
		}
		return next.Log(keyvals...)
	})
}

func dangerous(r rune) bool {
	return r >= 0x80 && r <= 0x9f || r == '\u2028' || r == '\u2029' || unicode.Is(unicode.Bidi_Control, r)
}

// escape rewrites s from index i on, where the first dangerous rune is.
func escape(s string, i int) string {
	var b strings.Builder
	b.Grow(len(s) + 8)
	b.WriteString(s[:i])
	for _, r := range s[i:] {
		if dangerous(r) {
			fmt.Fprintf(&b, `\u%04X`, r)
			continue
		}
		b.WriteRune(r)
	}
	if !utf8.ValidString(b.String()) {
		return strings.ToValidUTF8(b.String(), "\uFFFD")
	}
	return b.String()
}
