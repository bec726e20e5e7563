package clip

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestString(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{in: "short", n: 10, want: "short"},
		{in: "abcdef", n: 3, want: "abc...(3 more bytes)"},
		{in: "ééé", n: 3, want: "é...(4 more bytes)"}, // never half of the second é
		{in: "€€", n: 2, want: "...(6 more bytes)"},
	} {
		have := String(tc.in, tc.n)
		if have != tc.want {
			t.Errorf("String(%q, %d): want %q, have %q", tc.in, tc.n, tc.want, have)
		}
		if !utf8.ValidString(have) {
			t.Errorf("String(%q, %d) = %q is not valid UTF-8", tc.in, tc.n, have)
		}
	}
	if have := String(strings.Repeat("é", 1000), 256); len(have) > 256+30 {
		t.Errorf("want about 256 bytes, have %d", len(have))
	}
}
