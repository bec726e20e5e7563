package load

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Options configures Run.
type Options struct {
	// Targets are full URLs, used in turn.
	Targets []string
	Method  string // default POST
	Body    []byte
	Header  http.Header
	// Concurrency is the number of workers (default 1).
	Concurrency int
	// Requests bounds the number of requests (required).
	Requests int64
	// Duration bounds the run (required).
	Duration time.Duration
	// Pace, if set, is the pause of each worker between two requests.
	Pace time.Duration
	// Check judges an answer; by default any 200 succeeds.
	Check func(code int, body []byte) error
	// Client defaults to keep-alive connections sized for Concurrency.
	Client *http.Client
	// Progress, if set, is updated live.
	Progress *Progress
}

// Progress is updated while a run goes on.
type Progress struct {
	Sent, Succeeded, Failed atomic.Int64
}

// Result is what one run did.
type Result struct {
	Sent, Succeeded, Failed int64
	Errors                  map[string]int64
	Elapsed                 time.Duration
	latencies               []time.Duration // of successful requests, sorted
}

// Throughput is successful requests per second.
func (r Result) Throughput() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Succeeded) / r.Elapsed.Seconds()
}

// Quantile returns the q-quantile (0..1) latency of successful requests.
func (r Result) Quantile(q float64) time.Duration {
	if len(r.latencies) == 0 {
		return 0
	}
	i := int(q * float64(len(r.latencies)))
	if i >= len(r.latencies) {
		i = len(r.latencies) - 1
	}
	return r.latencies[i]
}

// String summarises the counts and the latency quantiles.
func (r Result) String() string {
	return fmt.Sprintf("sent=%d succeeded=%d failed=%d elapsed=%v p50=%v p99=%v errors=%v",
		r.Sent, r.Succeeded, r.Failed, r.Elapsed.Round(time.Millisecond), r.Quantile(0.5), r.Quantile(0.99), r.Errors)
}

// NewClient returns a keep-alive client for n concurrent requests that
// never uses an HTTP proxy.
func NewClient(n int) *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			Proxy:               nil,
			DialContext:         (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
			MaxIdleConns:        4 * n,
			MaxIdleConnsPerHost: n,
		},
	}
}

// Run sends the load and returns what happened.
func Run(ctx context.Context, o Options) Result {
	if o.Concurrency < 1 {
		o.Concurrency = 1
	}
	if o.Method == "" {
		o.Method = http.MethodPost
	}
	if o.Client == nil {
		o.Client = NewClient(o.Concurrency)
	}
	if o.Check == nil {
		o.Check = func(code int, _ []byte) error {
			if code != http.StatusOK {
				return fmt.Errorf("status %d", code)
			}
			return nil
		}
	}
	if o.Progress == nil {
		o.Progress = &Progress{}
	}
	ctx, cancel := context.WithTimeout(ctx, o.Duration)
	defer cancel()

	var (
		tickets atomic.Int64
		mu      sync.Mutex
		res     = Result{Errors: map[string]int64{}}
		wg      sync.WaitGroup
	)
	begin := time.Now()
	for w := 0; w < o.Concurrency; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			var lat []time.Duration
			errs := map[string]int64{}
			buf := make([]byte, 0, 512)
			for ctx.Err() == nil {
				n := tickets.Add(1)
				if n > o.Requests {
					break
				}
				target := o.Targets[int(n)%len(o.Targets)]
				o.Progress.Sent.Add(1)
				start := time.Now()
				err := send(ctx, o, target, &buf)
				if err != nil {
					if ctx.Err() != nil {
						// The run's own time bound, not the target, cut it.
						o.Progress.Sent.Add(-1)
						break
					}
					o.Progress.Failed.Add(1)
					errs[errorKind(err)]++
				} else {
					o.Progress.Succeeded.Add(1)
					lat = append(lat, time.Since(start))
				}
				if o.Pace > 0 {
					select {
					case <-time.After(o.Pace):
					case <-ctx.Done():
					}
				}
			}
			mu.Lock()
			res.latencies = append(res.latencies, lat...)
			for k, v := range errs {
				res.Errors[k] += v
			}
			mu.Unlock()
		}(w)
	}
	wg.Wait()
	res.Elapsed = time.Since(begin)
	res.Sent, res.Succeeded, res.Failed = o.Progress.Sent.Load(), o.Progress.Succeeded.Load(), o.Progress.Failed.Load()
	sort.Slice(res.latencies, func(i, j int) bool { return res.latencies[i] < res.latencies[j] })
	return res
}

func send(ctx context.Context, o Options, target string, buf *[]byte) error {
	req, err := http.NewRequestWithContext(ctx, o.Method, target, bytes.NewReader(o.Body))
	if err != nil {
		return err
	}
	for k, v := range o.Header {
		req.Header[k] = v
	}
	resp, err := o.Client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b := bytes.NewBuffer((*buf)[:0])
	_, err = io.Copy(b, resp.Body)
	*buf = b.Bytes()
	if err != nil {
		return err
	}
	return o.Check(resp.StatusCode, b.Bytes())
}

// errorKind shortens an error to a stable key: the same failure on
// different ports counts once.
func errorKind(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 && strings.Contains(s, "dial tcp") {
		s = "dial: " + s[i+2:]
	}
	if len(s) > 80 {
		s = s[:80]
	}
	return s
}

// Merge adds o's counts and latencies to r, for results of the same cell
// measured in several rounds.
func (r *Result) Merge(o Result) {
	r.Sent += o.Sent
	r.Succeeded += o.Succeeded
	r.Failed += o.Failed
	r.Elapsed += o.Elapsed
	if r.Errors == nil {
		r.Errors = map[string]int64{}
	}
	for k, v := range o.Errors {
		r.Errors[k] += v
	}
	r.latencies = append(r.latencies, o.latencies...)
	sort.Slice(r.latencies, func(i, j int) bool { return r.latencies[i] < r.latencies[j] })
}
