package transport

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/kitmesh/stringsvc/internal/probe"
	"github.com/kitmesh/stringsvc/service"
	"github.com/kitmesh/stringsvc/transport/endpoints"
)

func newTestServer(t *testing.T, svc service.StringService) *httptest.Server {
	t.Helper()
	h := NewHTTPHandler(endpoints.New(svc), HandlerOptions{MaxBodyBytes: 1024})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

func do(t *testing.T, method, url, body string, header http.Header) (int, http.Header, string) {
	t.Helper()
	resp, err := probe.Do(method, url, body, header)
	if err != nil {
		t.Fatal(err)
	}
	return resp.Status, resp.Header, resp.Body
}

func TestHTTPAnswers(t *testing.T) {
	srv := newTestServer(t, service.NewBasicService())
	for _, tc := range []struct {
		method, path, body string
		wantCode           int
		wantBody           string // exact, when set
		wantErr            string // substring of "error", when set
	}{
		{method: "POST", path: "/uppercase", body: `{"s":"hello, world"}`, wantCode: 200, wantBody: `{"v":"HELLO, WORLD"}` + "\n"},
		{method: "GET", path: "/uppercase", body: `{"s":"hello, world"}`, wantCode: 200, wantBody: `{"v":"HELLO, WORLD"}` + "\n"},
		{method: "POST", path: "/count", body: `{"s":"hello, world"}`, wantCode: 200, wantBody: `{"v":12}` + "\n"},
		{method: "GET", path: "/count", body: `{"s":"hello, world"}`, wantCode: 200, wantBody: `{"v":12}` + "\n"},
		{method: "POST", path: "/uppercase", body: `{"s":""}`, wantCode: 400, wantBody: `{"v":"","err":"empty string"}` + "\n"},
		{method: "POST", path: "/count", body: `{}`, wantCode: 200, wantBody: `{"v":0}` + "\n"},
		{method: "POST", path: "/uppercase", body: `{"s":"a","other":1}`, wantCode: 200, wantBody: `{"v":"A"}` + "\n"},
		{method: "POST", path: "/uppercase", body: `{"s":`, wantCode: 400, wantErr: "malformed JSON"},
		{method: "POST", path: "/uppercase", body: `{"s" "a"}`, wantCode: 400, wantErr: "malformed JSON at byte"},
		{method: "POST", path: "/uppercase", body: "{\"s\":\"\xff\xfe\"}", wantCode: 400, wantErr: "not valid UTF-8"},
		{method: "POST", path: "/count", body: "{\"s\":\"ok\", \"x\":\"\xc3\"}", wantCode: 400, wantErr: "not valid UTF-8"},
		{method: "POST", path: "/count", body: `[1,2]`, wantCode: 400, wantErr: "must be a JSON object, not array"},
		{method: "POST", path: "/count", body: `"a"`, wantCode: 400, wantErr: "must be a JSON object, not string"},
		{method: "POST", path: "/count", body: `null`, wantCode: 400, wantErr: "must be a JSON object, not null"},
		{method: "POST", path: "/count", body: `{"s":5}`, wantCode: 400, wantErr: `field "s" must be a string, not number`},
		{method: "POST", path: "/count", body: `{"s":{"x":1}}`, wantCode: 400, wantErr: `field "s" must be a string, not object`},
		{method: "POST", path: "/count", body: `{"s":"a"}{"s":"b"}`, wantCode: 400, wantErr: "unexpected data after the JSON object"},
		{method: "POST", path: "/count", body: `{"s":"a"} garbage`, wantCode: 400, wantErr: "unexpected data after the JSON object"},
		{method: "POST", path: "/count", body: ``, wantCode: 400, wantErr: "request body is empty"},
		{method: "POST", path: "/count", body: `{"s":"` + strings.Repeat("a", 2000) + `"}`, wantCode: 413, wantErr: "larger than 1024 bytes"},
		{method: "POST", path: "/count", body: `{"s":"a"}` + strings.Repeat(" ", 2000), wantCode: 413, wantErr: "larger than 1024 bytes"},
		{method: "PUT", path: "/count", body: `{"s":"a"}`, wantCode: 405, wantErr: "method PUT not allowed"},
		{method: "DELETE", path: "/uppercase", body: ``, wantCode: 405, wantErr: "method DELETE not allowed"},
		{method: "POST", path: "/health", body: ``, wantCode: 405, wantErr: "method POST not allowed"},
		{method: "GET", path: "/nope", body: ``, wantCode: 404, wantErr: `no such path "/nope"`},
		{method: "GET", path: "/health", body: ``, wantCode: 200, wantBody: healthBody},
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
		{fmt.Errorf("%w: cannot tell", service.ErrUnavailable), 503},
		{errors.New("boom"), 500},
	} {
		if have := err2code(tc.err); have != tc.want {
			t.Errorf("err2code(%v): want %d, have %d", tc.err, tc.want, have)
		}
	}
}
