// Package probe is the one HTTP helper of the tests and the benchmark: it
// sends a request and reads the whole answer, and it scrapes one metric from
// a member's /metrics.
//
// It imports only the standard library.
package probe

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Response is a whole answer.
type Response struct {
	Status int
	Header http.Header
	Body   string
}

// timeout bounds every probe: a test must fail, not hang, on a stuck peer.
const timeout = 30 * time.Second

// Do sends method to url with body (and header, which may be nil) and
// reads the whole answer. It follows no redirects and uses no proxy.
func Do(method, url, body string, header http.Header) (Response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if err != nil {
		return Response{}, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if body != "" && req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		return Response{}, fmt.Errorf("%s %s: %w", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return Response{Status: resp.StatusCode, Header: resp.Header, Body: string(b)}, err
}

// Metric sums the samples at addr's /metrics whose line starts with prefix,
// e.g. `stringsvc_requests_total{error="false",method="uppercase"}`, or
// `stringsvc_upstreams ` (with the space) for exactly one unlabelled
// metric. No matching line sums to 0.
func Metric(addr, prefix string) (float64, error) {
	resp, err := Do(http.MethodGet, "http://"+addr+"/metrics", "", nil)
	if err != nil {
		return 0, err
	}
	if resp.Status != http.StatusOK {
		return 0, fmt.Errorf("metrics of %s: status %d", addr, resp.Status)
	}
	var sum float64
	sc := bufio.NewScanner(strings.NewReader(resp.Body))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, prefix) {
			f := strings.Fields(line)
			v, err := strconv.ParseFloat(f[len(f)-1], 64)
			if err != nil {
				return 0, fmt.Errorf("metrics of %s: %q: %w", addr, line, err)
			}
			sum += v
		}
	}
	return sum, sc.Err()
}
