package transport

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/kitmesh/stringsvc/service"
)

func newTestServer(t *testing.T, svc service.StringService) *httptest.Server {
	t.Helper()
	h := NewHTTPHandler(MakeServerEndpoints(svc), HandlerOptions{MaxBodyBytes: 1024})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

func do(t *testing.T, method, url, body string, header http.Header) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

func TestHTTPAnswers(t *testing.T) {
	srv := newTestServer(t, service.NewBasicService())
	for _, tc := range []struct {
		method, path, body string
		wantCode           int
		wantBody           string // exact, when set
		wantErr            string // substring of "error", when set
	}{
		{"POST", "/uppercase", `{"s":"hello, world"}`, 200, `{"v":"HELLO, WORLD"}` + "\n", ""},
		{"GET", "/uppercase", `{"s":"hello, world"}`, 200, `{"v":"HELLO, WORLD"}` + "\n", ""},
		{"POST", "/count", `{"s":"hello, world"}`, 200, `{"v":12}` + "\n", ""},
		{"GET", "/count", `{"s":"hello, world"}`, 200, `{"v":12}` + "\n", ""},
		{"POST", "/uppercase", `{"s":""}`, 400, `{"v":"","err":"empty string"}` + "\n", ""},
		{"POST", "/count", `{}`, 200, `{"v":0}` + "\n", ""},
		{"POST", "/uppercase", `{"s":"a","other":1}`, 200, `{"v":"A"}` + "\n", ""},
		{"POST", "/uppercase", `{"s":`, 400, "", "malformed JSON"},
		{"POST", "/uppercase", `{"s" "a"}`, 400, "", "malformed JSON at byte"},
		{"POST", "/count", `[1,2]`, 400, "", "must be a JSON object, not array"},
		{"POST", "/count", `"a"`, 400, "", "must be a JSON object, not string"},
		{"POST", "/count", `null`, 400, "", "must be a JSON object, not null"},
		{"POST", "/count", `{"s":5}`, 400, "", `field "s" must be a string, not number`},
		{"POST", "/count", `{"s":{"x":1}}`, 400, "", `field "s" must be a string, not object`},
		{"POST", "/count", `{"s":"a"}{"s":"b"}`, 400, "", "unexpected data after the JSON object"},
		{"POST", "/count", `{"s":"a"} garbage`, 400, "", "unexpected data after the JSON object"},
		{"POST", "/count", ``, 400, "", "request body is empty"},
		{"POST", "/count", `{"s":"` + strings.Repeat("a", 2000) + `"}`, 413, "", "larger than 1024 bytes"},
		{"POST", "/count", `{"s":"a"}` + strings.Repeat(" ", 2000), 413, "", "larger than 1024 bytes"},
		{"PUT", "/count", `{"s":"a"}`, 405, "", "method PUT not allowed"},
		{"DELETE", "/uppercase", ``, 405, "", "method DELETE not allowed"},
		{"POST", "/health", ``, 405, "", "method POST not allowed"},
		{"GET", "/nope", ``, 404, "", `no such path "/nope"`},
		{"GET", "/health", ``, 200, healthBody, ""},
	} {
		t.Run(fmt.Sprintf("%s %s %.20s", tc.method, tc.path, tc.body), func(t *testing.T) {
			code, header, body := do(t, tc.method, srv.URL+tc.path, tc.body, nil)
			if code != tc.wantCode {
				t.Errorf("status: want %d, have %d (%s)", tc.wantCode, code, body)
			}
			if ct := header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Errorf("content type: want JSON, have %q", ct)
			}
			if tc.wantBody != "" && body != tc.wantBody {
				t.Errorf("body: want %q, have %q", tc.wantBody, body)
			}
			if tc.wantErr != "" {
				var e struct{ Error string }
				if err := json.Unmarshal([]byte(body), &e); err != nil || !strings.Contains(e.Error, tc.wantErr) {
					t.Errorf("error: want %q in it, have %q (%v)", tc.wantErr, body, err)
				}
			}
			if code == 405 && header.Get("Allow") == "" {
				t.Error("405 without an Allow header")
			}
		})
	}
	// The server still serves after every bad request above.
	if code, _, body := do(t, "POST", srv.URL+"/uppercase", `{"s":"still here"}`, nil); code != 200 || body != `{"v":"STILL HERE"}`+"\n" {
		t.Errorf("after bad input: want 200 STILL HERE, have %d %s", code, body)
	}
}

func TestHealthBodyIsConstant(t *testing.T) {
	srv := newTestServer(t, service.NewBasicService())
	_, _, first := do(t, "GET", srv.URL+"/health", "", nil)
	for i := 0; i < 5; i++ {
		if _, _, b := do(t, "GET", srv.URL+"/health", "", nil); b != first {
			t.Fatalf("health output changed: want %q, have %q", first, b)
		}
	}
}

// localOnlyProbe answers "LOCAL" when the hop header reached the service.
type localOnlyProbe struct{ service.StringService }

func (p localOnlyProbe) Uppercase(ctx context.Context, s string) (string, error) {
	if service.LocalOnly(ctx) {
		return "LOCAL", nil
	}
	return "FORWARDABLE", nil
}

func TestHopHeaderMarksLocalOnly(t *testing.T) {
	srv := newTestServer(t, localOnlyProbe{service.NewBasicService()})
	for _, tc := range []struct {
		header http.Header
		want   string
	}{
		{nil, `{"v":"FORWARDABLE"}` + "\n"},
		{http.Header{HopHeader: {"1"}}, `{"v":"LOCAL"}` + "\n"},
	} {
		if _, _, body := do(t, "POST", srv.URL+"/uppercase", `{"s":"a"}`, tc.header); body != tc.want {
			t.Errorf("header %v: want %q, have %q", tc.header, tc.want, body)
		}
	}
}

func TestErr2code(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want int
	}{
		{service.ErrEmpty, 400},
		{fmt.Errorf("wrapped: %w", service.ErrEmpty), 400},
		{badRequest("x"), 400},
		{&RequestError{Status: 413, Msg: "big"}, 413},
		{&http.MaxBytesError{Limit: 1}, 413},
		{context.DeadlineExceeded, 504},
		{context.Canceled, 499},
		{errors.New("boom"), 500},
	} {
		if have := err2code(tc.err); have != tc.want {
			t.Errorf("err2code(%v): want %d, have %d", tc.err, tc.want, have)
		}
	}
}
