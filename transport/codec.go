package transport

import (
	"bytes"
	"io"
	"net/http"
	"sync"
	"unicode/utf8"
)

// The usual request and answer have one shape each, {"s":"..."} and
// {"v":"..."}, with a string that needs no escaping. encoding/json costs
// each of them about ten allocations for reflection and buffers; the
// functions here handle exactly that shape and leave everything else,
// every error message included, to encoding/json. Fuzz tests hold them to
// encoding/json's reading and writing.

// plainObject returns the string of b when b is exactly {"<key>":"..."},
// with or without the encoder's final newline, and the string has no
// escapes, no control characters and is valid UTF-8. Otherwise it returns
// false, and b is for encoding/json.
func plainObject(b []byte, key string) (string, bool) {
	b = bytes.TrimSuffix(b, []byte("\n"))
	// {"key":"  and  "}
	head := len(key) + 5
	if len(b) < head+2 || b[0] != '{' || b[1] != '"' || string(b[2:2+len(key)]) != key ||
		string(b[2+len(key):head]) != `":"` || string(b[len(b)-2:]) != `"}` {
		return "", false
	}
	v := b[head : len(b)-2]
	ascii := true
	for _, c := range v {
		switch {
		case c < 0x20 || c == '"' || c == '\\':
			return "", false
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	if !ascii && !utf8.Valid(v) {
		return "", false // encoding/json replaces invalid bytes
	}
	return string(v), true
}

// plainASCII reports whether encoding/json, without HTML escaping, writes
// s as it is: printable ASCII without quote or backslash. (It escapes
// U+2028 and U+2029, so other text is left to it.)
func plainASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// appendString appends s to b as a JSON string with the fewest escapes:
// only the quote, the backslash and control characters, the short forms
// where JSON has them. Everything else, HTML and U+2028 included, is
// written as it is, so that no valid JSON string holding s is shorter.
func appendString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		case '\b':
			b = append(b, '\\', 'b')
		case '\f':
			b = append(b, '\\', 'f')
		default:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		}
		start = i + 1
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// jsonUTF8 is the Content-Type of every answer, shared: the server copies
// the header when it writes it, and nobody writes into a value slice.
var jsonUTF8 = []string{"application/json; charset=utf-8"}

// writeV writes the 200 answer {"v":"..."} as encoding/json would, and
// reports false, having written nothing, when s needs escaping.
func writeV(w http.ResponseWriter, s string) (bool, error) {
	if !plainASCII(s) {
		return false, nil
	}
	w.Header()["Content-Type"] = jsonUTF8
	w.WriteHeader(http.StatusOK)
	if len(s) > maxPooledAnswer {
		// A large answer is written in place, not copied once more.
		for _, part := range [...]string{`{"v":"`, s, "\"}\n"} {
			if _, err := io.WriteString(w, part); err != nil {
				return true, err
			}
		}
		return true, nil
	}
	buf := getBuffer()
	defer putBuffer(buf)
	b := append((*buf)[:0], `{"v":"`...)
	b = append(b, s...)
	b = append(b, "\"}\n"...)
	*buf = b
	_, err := w.Write(b)
	return true, err
}

// maxPooledAnswer is the largest answer writeV copies into a pooled
// buffer, written with one Write (so that net/http can set its
// Content-Length).
const maxPooledAnswer = 4 << 10

// bufferPool holds the buffers that answers are read into and written from.
var bufferPool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

func getBuffer() *[]byte { return bufferPool.Get().(*[]byte) }

// putBuffer returns a buffer to the pool, unless one large answer made it
// large: the pool must not pin megabytes.
func putBuffer(b *[]byte) {
	if cap(*b) <= 64<<10 {
		bufferPool.Put(b)
	}
}
