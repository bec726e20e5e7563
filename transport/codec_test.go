package transport

import (
	"bytes"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode/utf8"
)

var plainSeeds = []string{
	`{"v":"HELLO, WORLD"}` + "\n", `{"v":"HELLO"}`, `{"v":""}`, `{"v":"ÄÖÜ 日本"}`, `{"s":"hello"}`,
	`{"v":"A\"B"}`, `{"v":"A\\B"}`, `{"v":"\u00e9"}`, "{\"v\":\"\xff\"}", "{\"v\":\"a\tb\"}",
	`{"v":"x","err":"y"}`, `{"V":"x"}`, `{"v":"x"} `, `{"v":"x"}` + "\n\n", `{"v":1}`, `{"v":"x"`, `"}`,
	`{"v":"a"}"}`, ` {"v":"x"}`, `{"s":null}`, `{"ss":"x"}`, `{"v":" "}`,
}

// FuzzPlainObject holds plainObject to encoding/json: whenever it takes a
// body, encoding/json must read the same string from it, for answers and
// for requests (decodeStringRequest's own slow path, with its checks).
// `go test` runs the seeds; `go test -fuzz FuzzPlainObject ./transport`
// searches further.
func FuzzPlainObject(f *testing.F) {
	for _, seed := range plainSeeds {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if v, ok := plainObject(b, "v"); ok {
			var w wireResponse[string]
			if err := json.Unmarshal(b, &w); err != nil {
				t.Fatalf("plainObject took %q as %q; encoding/json refuses it: %v", b, v, err)
			}
			if w.V != v || w.Err != "" || w.Error != "" {
				t.Fatalf("plainObject took %q as %q; encoding/json reads %+v", b, v, w)
			}
		}
		if s, ok := plainObject(b, "s"); ok {
			var req *wireRequest
			if err := json.Unmarshal(b, &req); err != nil || req == nil || req.S != s {
				t.Fatalf("plainObject took request %q as %q; encoding/json reads %+v (%v)", b, s, req, err)
			}
		}
	})
}

// TestPlainObjectTakesTheUsualBodies checks that the fast path is taken at
// all: FuzzPlainObject alone would pass if plainObject refused everything.
func TestPlainObjectTakesTheUsualBodies(t *testing.T) {
	for _, c := range []struct{ body, key, want string }{
		{`{"v":"HELLO, WORLD"}` + "\n", "v", "HELLO, WORLD"},
		{`{"v":""}`, "v", ""},
		{`{"v":"ÄÖÜ 日本"}` + "\n", "v", "ÄÖÜ 日本"},
		{`{"s":"hello, world"}`, "s", "hello, world"},
	} {
		if v, ok := plainObject([]byte(c.body), c.key); !ok || v != c.want {
			t.Errorf("plainObject(%q, %q): want %q, true; have %q, %v", c.body, c.key, c.want, v, ok)
		}
	}
	for _, body := range []string{`{"v":"A\"B"}`, "{\"v\":\"\xff\"}", `{"v":"x","err":"y"}`, `{"v":"a"}"}`, `{"s":"x"}`, `{"v":"x"} `} {
		if v, ok := plainObject([]byte(body), "v"); ok {
			t.Errorf("plainObject(%q): want it left to encoding/json, have %q", body, v)
		}
	}
}

// FuzzWriteV holds writeV to writeJSON, which it stands in for: whenever
// it writes, it writes the same bytes and headers.
func FuzzWriteV(f *testing.F) {
	for _, seed := range []string{strings.Repeat("<LONG>", 2000), strings.Repeat("X", maxPooledAnswer+1), "HELLO, WORLD", "", "<A&B>", "A\"B", "A\\B", "É", "\u2028", "\x7f", "\t"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		fast := httptest.NewRecorder()
		ok, err := writeV(fast, s)
		if !ok {
			if fast.Body.Len() != 0 || len(fast.Header()) != 0 {
				t.Fatalf("writeV(%q) declined but wrote %q", s, fast.Body)
			}
			return
		}
		slow := httptest.NewRecorder()
		writeJSON(slow, 200, struct {
			V string `json:"v"`
		}{s})
		if err != nil || fast.Body.String() != slow.Body.String() || fast.Code != slow.Code ||
			fast.Header().Get("Content-Type") != slow.Header().Get("Content-Type") {
			t.Fatalf("writeV(%q): %d %q %q (%v); writeJSON: %d %q %q", s,
				fast.Code, fast.Header(), fast.Body, err, slow.Code, slow.Header(), slow.Body)
		}
	})
}

// TestWriteVTakesPlainText checks that the fast path is taken at all.
func TestWriteVTakesPlainText(t *testing.T) {
	for s, want := range map[string]bool{"HELLO, WORLD": true, "<A&B>": true, "": true, "É": false, "A\"B": false} {
		if ok, _ := writeV(httptest.NewRecorder(), s); ok != want {
			t.Errorf("writeV(%q): want %v, have %v", s, want, ok)
		}
	}
}

// appendString writes what encoding/json reads back as s, and never more
// bytes than encoding/json writes.
func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "hello", `a"b\c`, "\x00\x1f\b\f\n\r\t", "<&>\u2028é", "\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b := appendString(nil, s)
		var have string
		if err := json.Unmarshal(b, &have); err != nil {
			t.Fatalf("%q: encoding/json cannot read %q: %v", s, b, err)
		}
		if !utf8.ValidString(s) {
			return // encoding/json replaces the invalid bytes, as a peer does
		}
		if have != s {
			t.Fatalf("want %q read back, have %q", s, have)
		}
		var std bytes.Buffer
		enc := json.NewEncoder(&std)
		enc.SetEscapeHTML(false)
		enc.Encode(s)
		if len(b) > std.Len()-1 {
			t.Errorf("%q: %d bytes, encoding/json %d", s, len(b), std.Len()-1)
		}
	})
}
