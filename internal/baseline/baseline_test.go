package baseline

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestHandler(t *testing.T) {
	for _, tc := range []struct {
		body, want string
		code       int
	}{
		{body: `{"s":"hello, world"}`, want: `{"v":12}` + "\n", code: 200},
		{body: `{"s":`, want: `{"error":"bad request"}` + "\n", code: 400},
	} {
		w := httptest.NewRecorder()
		Handler().ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/count", strings.NewReader(tc.body)))
		if w.Code != tc.code || w.Body.String() != tc.want {
			t.Errorf("%s: want %d %q, have %d %q", tc.body, tc.code, tc.want, w.Code, w.Body.String())
		}
	}
}
