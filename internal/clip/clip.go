// Package clip bounds text that came from outside before it is logged or
// passed on: a client's input in a request log line, an upstream's error
// message.
//
// It imports only the standard library.
package clip

import (
	"strconv"
	"unicode/utf8"
)

// String cuts s to at most n bytes, on a rune boundary, and says how much
// was dropped, so that a reader knows the value was longer than shown.
func String(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "...(" + strconv.Itoa(len(s)-cut) + " more bytes)"
}
