package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-kit/log"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kitmesh/stringsvc/internal/clustertest"
	"github.com/kitmesh/stringsvc/internal/logsink"
	"github.com/kitmesh/stringsvc/internal/member"
	"github.com/kitmesh/stringsvc/internal/poll"
	"github.com/kitmesh/stringsvc/internal/probe"
	"github.com/kitmesh/stringsvc/internal/syncbuf"
	"github.com/kitmesh/stringsvc/transport"
)

// The hostile-peer suite: a raw-TCP upstream (hostilepeer_test.go)
// misbehaves at the byte level in a member's -proxy list, beside an
// honest member, while clients that each send a string of their own
// count what comes back. Whatever the peer sends, no client gets another
// request's answer, none waits past its deadline, the member keeps
// serving, and its goroutines and log lines stay bounded.

// misbehaviour is one way a peer breaks the rules, or keeps them in a way
// that a careless client gets wrong.
type misbehaviour struct {
	name  string
	early bool // the peer answers before reading the body
	serve func(p *hostilePeer, r *peerReq) bool
	// big sends bodies this large instead of short strings, and requests
	// as many requests; 0 means the default load.
	big, requests int
	// args are flags of the member in front of the peer, beside the
	// suite's own.
	args []string
	// timeout is the member's -proxy.timeout, the requests' deadline;
	// 0 means its default, 1 s.
	timeout time.Duration
	// want checks what only this misbehaviour promises.
	want func(t *testing.T, res hostileResult)
}

// hostileResult is what one misbehaviour's load counted.
type hostileResult struct {
	sent, ok, leaked, failed, late    int64
	statuses                          map[int]int64
	peerRequests, peerTwice           int64
	opened, fallbacks, attemptsFailed float64
	maxLogLine, logBytes              int
}

func (r hostileResult) String() string {
	return fmt.Sprintf("sent=%d ok=%d leaked=%d failed=%d late=%d statuses=%v peer_requests=%d peer_twice=%d attempts_failed=%v breaker_opened=%v fallbacks=%v max_log_line=%d log_bytes=%d",
		r.sent, r.ok, r.leaked, r.failed, r.late, r.statuses, r.peerRequests, r.peerTwice, r.attemptsFailed, r.opened, r.fallbacks, r.maxLogLine, r.logBytes)
}

// Bounds of the suite's load and of what it accepts.
const (
	hostileClients  = 8
	hostileRequests = 320 // per misbehaviour, over hostileClients
	// hostileMargin is what a request may take past its deadline (the
	// member's -proxy.timeout) on a loaded machine under -race, for the
	// local fallback after it.
	hostileMargin = time.Second
	// maxLogLine bounds one log line: a client's string is cut to 256
	// bytes, and so is every upstream error text.
	maxLogLine = 4 << 10
)

// valid is the expectation of answers that HTTP/1.1 allows: the peer
// serves, and its breaker never opens.
func valid(t *testing.T, res hostileResult) {
	t.Helper()
	if res.opened != 0 {
		t.Errorf("a valid answer opened the peer's breaker %v times", res.opened)
	}
	if res.peerRequests < res.sent/4 {
		t.Errorf("want the peer to take its share (a quarter at least) of %d, have %d", res.sent, res.peerRequests)
	}
}

// ejected is the expectation of a peer that fails every request.
func ejected(t *testing.T, res hostileResult) {
	t.Helper()
	if res.opened == 0 {
		t.Error("want the peer's breaker opened, have it never opened")
	}
}

// ejectedAtOnce is the expectation of a peer that drops the connection:
// its members run with -proxy.breaker-failures 1000 (see lostConnection),
// so that only an immediate ejection opens the breaker.
func ejectedAtOnce(t *testing.T, res hostileResult) {
	t.Helper()
	if res.opened == 0 {
		t.Error("a lost connection: want the peer ejected at once, have its breaker never opened")
	}
}

// lostConnection are the flags of ejectedAtOnce.
var lostConnection = []string{"-proxy.breaker-failures", "1000"}

// fewFailures is the expectation of a peer whose stray bytes the pool's
// checks must catch before they break a request: at most two failed
// attempts per client (a race with the idle check on each of its
// connections to the peer), before the peer's quarantine.
func fewFailures(t *testing.T, res hostileResult) {
	t.Helper()
	if res.attemptsFailed > 2*hostileClients {
		t.Errorf("want at most %d failed attempts, have %v", 2*hostileClients, res.attemptsFailed)
	}
}

// allAnswered is the expectation where every client must get 200.
func allAnswered(t *testing.T, res hostileResult) {
	t.Helper()
	if res.ok != res.sent {
		t.Errorf("want all %d answered 200, have %s", res.sent, res)
	}
}

func both(checks ...func(*testing.T, hostileResult)) func(*testing.T, hostileResult) {
	return func(t *testing.T, res hostileResult) {
		t.Helper()
		for _, c := range checks {
			c(t, res)
		}
	}
}

var misbehaviours = []misbehaviour{
	// Framing: bytes past an answer's end.
	{name: "extra answer in the same write", serve: func(_ *hostilePeer, r *peerReq) bool {
		return r.write(r.ok() + r.dup(true))
	}},
	{name: "extra answer in the same write, no echo", serve: func(_ *hostilePeer, r *peerReq) bool {
		return r.write(r.okBare() + r.dup(false))
	}},
	{name: "extra answer 0.5 ms later", serve: func(p *hostilePeer, r *peerReq) bool {
		return r.write(r.ok()) && p.pause(500*time.Microsecond) && r.write(r.dup(true))
	}},
	{name: "extra answer 0.5 ms later, no echo", serve: func(p *hostilePeer, r *peerReq) bool {
		return r.write(r.okBare()) && p.pause(500*time.Microsecond) && r.write(r.dup(false))
	}},
	{name: "Content-Length and chunked, an answer outside the chunks", serve: func(_ *hostilePeer, r *peerReq) bool {
		v := r.value()
		return r.write(fmt.Sprintf("HTTP/1.1 200 OK\r\n%s: %s\r\nContent-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n%s",
			seqHeader, r.seq, len(v), len(v), v, r.dup(true)))
	}, want: ejected},
	{name: "chunked, then an extra answer", serve: func(_ *hostilePeer, r *peerReq) bool {
		v := r.value()
		return r.write(fmt.Sprintf("HTTP/1.1 200 OK\r\n%s: %s\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n%s", seqHeader, r.seq, len(v), v, r.dup(true)))
	}},
	{name: "304 with a body", serve: func(_ *hostilePeer, r *peerReq) bool {
		return r.write(r.answer("304 Not Modified", "", true) + r.dup(true))
	}, want: ejected},
	{name: "204 with a body", serve: func(_ *hostilePeer, r *peerReq) bool {
		return r.write("HTTP/1.1 204 No Content\r\n" + seqHeader + ": " + r.seq + "\r\n\r\n" + r.dup(true))
	}, want: ejected},
	{name: "Content-Length past the body, over the next answer", serve: func(_ *hostilePeer, r *peerReq) bool {
		v, d := r.value(), r.dup(true)
		return r.write(fmt.Sprintf("HTTP/1.1 200 OK\r\n%s: %s\r\nContent-Length: %d\r\n\r\n%s%s", seqHeader, r.seq, len(v)+len(d), v, d))
	}, want: ejected},
	{name: "two different Content-Lengths", serve: func(_ *hostilePeer, r *peerReq) bool {
		v := r.value()
		return r.write(fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\nContent-Length: 2\r\n\r\n%s", len(v), v))
	}, want: ejected},
	{name: "negative Content-Length", serve: func(_ *hostilePeer, r *peerReq) bool {
		return r.write("HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n" + r.value())
	}, want: ejected},
	{name: "unknown transfer coding", serve: func(_ *hostilePeer, r *peerReq) bool {
		return r.write("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n" + r.value())
	}, want: ejected},
	{name: "a leftover CRLF after each answer", serve: func(_ *hostilePeer, r *peerReq) bool {
		return r.write(r.ok() + "\r\n")
	}, want: func(t *testing.T, res hostileResult) {
		if res.peerTwice != 0 {
			t.Errorf("want no request sent twice to the peer, have %d", res.peerTwice)
		}
	}},
	// A replay: the previous request's answer, under its number.
	{name: "the previous answer again, with its number", serve: func(_ *hostilePeer, r *peerReq) bool {
		if r.n == 1 {
			return r.write(r.ok())
		}
		n, _ := strconv.Atoi(r.seq)
		return r.write(strings.Replace(r.answer("200 OK", `{"v":"`+strings.ToUpper(r.prev)+`"}`, true), seqHeader+": "+r.seq, seqHeader+": "+strconv.Itoa(n-1), 1))
	}},

	// Garbage and sizes.
	{name: "garbage instead of a status line", serve: func(_ *hostilePeer, r *peerReq) bool {
		return r.write("SSH-2.0-OpenSSH_9.6\r\n\r\n")
	}, want: ejected},
	{name: "a 15 KiB status line", serve: func(_ *hostilePeer, r *peerReq) bool {
		return r.write("HTTP/1.1 " + strings.Repeat("2", 15<<10) + " OK\r\n\r\n")
	}, want: ejected},
	{name: "a 64 KiB header", serve: func(_ *hostilePeer, r *peerReq) bool {
		return r.write("HTTP/1.1 200 OK\r\nX-Big: " + strings.Repeat("b", 64<<10) + "\r\n" + r.ok()[len("HTTP/1.1 200 OK\r\n"):])
	}, want: ejected},
	{name: "a 500 with a 1 MiB message", serve: func(_ *hostilePeer, r *peerReq) bool {
		return r.write(r.answer("500 Internal Server Error", `{"error":"`+strings.Repeat("e", 1<<20)+`"}`, true))
	}, want: ejected},
	{name: "ErrEmpty for a non-empty string", serve: func(_ *hostilePeer, r *peerReq) bool {
		return r.write(r.answer("200 OK", `{"v":"","err":"empty string"}`, true))
	}, want: both(ejected, allAnswered)},

	// Timing.
	{name: "a header trickled a byte at a time", serve: func(p *hostilePeer, r *peerReq) bool {
		for i := 0; i < 2000 && r.write("X") && p.pause(5*time.Millisecond); i++ {
		}
		return false
	}, want: ejected},
	{name: "100 MB declared, trickled", serve: func(p *hostilePeer, r *peerReq) bool {
		if !r.write("HTTP/1.1 200 OK\r\n" + seqHeader + ": " + r.seq + "\r\nContent-Length: 100000000\r\n\r\n{\"v\":\"") {
			return false
		}
		for i := 0; i < 2000 && r.write("A") && p.pause(5*time.Millisecond); i++ {
		}
		return false
	}, want: ejected},
	{name: "junk after the answer", serve: func(_ *hostilePeer, r *peerReq) bool {
		return r.write(r.ok() + "junk")
	}, want: fewFailures},
	{name: "junk while idle", serve: func(p *hostilePeer, r *peerReq) bool {
		return r.write(r.ok()) && p.pause(time.Millisecond) && r.write("junk")
	}, want: fewFailures},
	{name: "408 on an idle connection, then close", serve: func(p *hostilePeer, r *peerReq) bool {
		if !r.write(r.ok()) || !p.pause(2*time.Millisecond) {
			return false
		}
		r.write("HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
		return false
	}, want: both(allAnswered, func(t *testing.T, res hostileResult) {
		if res.statuses[http.StatusRequestTimeout] != 0 {
			t.Errorf("want no 408 to a client, have %d", res.statuses[http.StatusRequestTimeout])
		}
	})},
	{name: "408 as every answer", serve: func(_ *hostilePeer, r *peerReq) bool {
		r.write("HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
		return false
	}, want: both(allAnswered, ejected)},

	// Connection management.
	{name: "close before the answer", args: lostConnection, serve: func(_ *hostilePeer, r *peerReq) bool {
		return false
	}, want: ejectedAtOnce},
	{name: "reset before the answer", args: lostConnection, serve: func(_ *hostilePeer, r *peerReq) bool {
		r.reset()
		return false
	}, want: ejectedAtOnce},
	{name: "close in the middle of the body", args: lostConnection, serve: func(_ *hostilePeer, r *peerReq) bool {
		r.write("HTTP/1.1 200 OK\r\n" + seqHeader + ": " + r.seq + "\r\nContent-Length: 100\r\n\r\n{\"v\":\"")
		return false
	}, want: ejectedAtOnce},
	{name: "reset in the middle of the body", args: lostConnection, serve: func(_ *hostilePeer, r *peerReq) bool {
		r.write("HTTP/1.1 200 OK\r\n" + seqHeader + ": " + r.seq + "\r\nContent-Length: 100\r\n\r\n{\"v\":\"")
		r.reset()
		return false
	}, want: ejectedAtOnce},
	{name: "HTTP/1.0, the body until close", serve: func(_ *hostilePeer, r *peerReq) bool {
		r.write("HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n" + r.value())
		return false
	}, want: both(valid, allAnswered)},
	{name: "Connection: close, then an extra answer", serve: func(_ *hostilePeer, r *peerReq) bool {
		return r.write(r.answer("200 OK", r.value(), true, "Connection: close") + r.dup(true))
	}},

	// Interim answers.
	{name: "100 Continue first", serve: func(_ *hostilePeer, r *peerReq) bool {
		return r.write("HTTP/1.1 100 Continue\r\n\r\n" + r.ok())
	}, want: both(valid, allAnswered)},
	{name: "103 Early Hints first", serve: func(_ *hostilePeer, r *peerReq) bool {
		return r.write("HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n" + r.ok())
	}, want: both(valid, allAnswered)},
	{name: "101 Switching Protocols", serve: func(_ *hostilePeer, r *peerReq) bool {
		return r.write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n" + r.ok())
	}, want: ejected},
	{name: "ten interim answers", serve: func(_ *hostilePeer, r *peerReq) bool {
		return r.write(strings.Repeat("HTTP/1.1 100 Continue\r\n\r\n", 10) + r.ok())
	}, want: ejected},

	// An early answer: 413 before the body was read, then close.
	// (A peer whose -http.max-body is 1 MiB, below its caller's.)
	// The deadline is long because the work is: under -race, 16 bodies of
	// 2 MiB decoded, re-encoded and upper-cased keep both cores busy for
	// several seconds (a 3 s deadline failed on a slower day, at commits
	// that had passed before). A hang still shows: nothing else ends it.
	{name: "413 before the body, then close", early: true, big: 2 << 20, requests: 16, timeout: 8 * time.Second, args: []string{"-proxy.attempt-timeout", "8s"}, serve: func(_ *hostilePeer, r *peerReq) bool {
		if r.length <= 1<<20 {
			return r.write(r.ok())
		}
		r.write(r.answer("413 Request Entity Too Large", `{"error":"request body too large"}`, true, "Connection: close"))
		return false
	}, want: func(t *testing.T, res hostileResult) {
		if res.opened != 0 {
			t.Errorf("a 413 is the request's fault: want the peer's breaker closed, have it opened %v times", res.opened)
		}
		if res.statuses[http.StatusRequestEntityTooLarge] == 0 {
			t.Errorf("want the peer's 413 passed on to its clients, have %v", res.statuses)
		}
	}},
}

func TestHostilePeers(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	if len(misbehaviours) < 25 {
		t.Fatalf("the suite covers %d misbehaviours, fewer than 25", len(misbehaviours))
	}
	for _, mb := range misbehaviours {
		t.Run(mb.name, func(t *testing.T) {
			res := runHostile(t, mb)
			t.Logf("result %q: %s", mb.name, res)
			if res.leaked != 0 {
				t.Errorf("want 0 answers that belong to another request, have %d", res.leaked)
			}
			if res.late != 0 {
				t.Errorf("want 0 requests past their deadline, have %d", res.late)
			}
			if res.maxLogLine > maxLogLine {
				t.Errorf("want log lines of at most %d bytes, have one of %d", maxLogLine, res.maxLogLine)
			}
			if limit := int(res.sent) * 2 << 10; res.logBytes > limit {
				t.Errorf("want at most 2 KiB of log per request (%d), have %d", limit, res.logBytes)
			}
			if mb.want != nil {
				mb.want(t, res)
			}
		})
	}
}

// runHostile puts one misbehaving peer and one honest member behind a
// fresh member, sends it the load and counts.
func runHostile(t *testing.T, mb misbehaviour) hostileResult {
	t.Helper()
	goroutines := runtime.NumGoroutine()
	honest, _ := testMember(t, "-consul.addr", "none", "-http.max-body", "16777216")
	peer := startHostilePeer(t, mb.early, mb.serve)
	timeout := time.Second
	if mb.timeout > 0 {
		timeout = mb.timeout
	}
	late := timeout + hostileMargin
	var logs syncbuf.Buffer
	entry, closeEntry := hostileEntry(t, &logs, append([]string{"-proxy", peer.addr() + "," + honest,
		// Round robin keeps sending the peer its share, where p2c would
		// soon avoid it and hide what it does.
		"-proxy.balancer", "roundrobin", "-proxy.breaker-timeout", "50ms", "-http.max-body", "16777216",
		"-proxy.timeout", timeout.String()}, mb.args...)...)

	res := hostileResult{statuses: map[int]int64{}}
	requests := hostileRequests
	if mb.requests > 0 {
		requests = mb.requests
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: hostileClients}}
	var (
		mu   sync.Mutex
		next atomic.Int64
		wg   sync.WaitGroup
	)
	for c := 0; c < hostileClients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > int64(requests) {
					return
				}
				s := fmt.Sprintf("req-%d-%s", i, strings.Repeat("x", int(i%7)))
				if mb.big > 0 {
					s += strings.Repeat("y", mb.big)
				}
				status, v, elapsed, err := hostileCall(client, entry, s)
				mu.Lock()
				res.sent++
				res.statuses[status]++
				switch {
				case err != nil:
					res.failed++
				case status == http.StatusOK && v == strings.ToUpper(s):
					res.ok++
				case status == http.StatusOK:
					res.leaked++
				default:
					res.failed++
				}
				if elapsed > late {
					res.late++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	client.CloseIdleConnections()

	res.peerRequests, res.peerTwice = peer.requests.Load(), peer.twice.Load()
	res.fallbacks, _ = probe.Metric(entry, `stringsvc_fallbacks_total`)
	res.attemptsFailed, _ = probe.Metric(entry, `stringsvc_proxy_attempts_total{outcome="failure"}`)

	// The member is alive and answers an honest question.
	if status, v, _, err := hostileCall(http.DefaultClient, entry, "still-there"); err != nil || status != http.StatusOK || v != "STILL-THERE" {
		t.Errorf("after the load: want 200 STILL-THERE, have %d %q %v", status, v, err)
	}
	peer.close()
	closeEntry()
	for _, line := range strings.Split(logs.String(), "\n") {
		res.maxLogLine = max(res.maxLogLine, len(line))
	}
	res.logBytes = len(logs.String())
	res.opened = float64(strings.Count(logs.String(), "upstream="+peer.addr()+" breaker=open "))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the member's log:\n%s", clustertest.LastLines(logs.String(), 30))
		}
	})
	// Nothing the peer did leaves goroutines behind once it is gone.
	if err := poll.Until(10*time.Second, 10*time.Millisecond, func() error {
		if n := runtime.NumGoroutine(); n > goroutines+20 {
			return fmt.Errorf("%d goroutines, %d before", n, goroutines)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	return res
}

// hostileEntry is testMember with its logs, operational and per request,
// written to logs as run() writes them. close ends it before the test
// does, so that its goroutines can be counted.
func hostileEntry(t *testing.T, logs io.Writer, args ...string) (addr string, close func()) {
	t.Helper()
	cfg, err := parseConfig(args, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	logger := logsink.Sanitize(log.NewLogfmtLogger(logs))
	mb, err := member.New(cfg, member.Bound{HTTP: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}}, member.Loggers{Ops: logger, Requests: requestLogger(logs)}, prometheus.NewRegistry(), transport.Tracing{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(mb.Handler)
	var once sync.Once
	close = func() { once.Do(func() { srv.Close(); mb.Close() }) }
	t.Cleanup(close)
	return strings.TrimPrefix(srv.URL, "http://"), close
}

// hostileCall sends s to addr's /uppercase with a deadline past every
// request's own, and returns the status, the value and how long it took.
func hostileCall(client *http.Client, addr, s string) (status int, v string, elapsed time.Duration, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	body, _ := json.Marshal(map[string]string{"s": s})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/uppercase", bytes.NewReader(body))
	if err != nil {
		return 0, "", 0, err
	}
	begin := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", time.Since(begin), err
	}
	defer resp.Body.Close()
	var w struct{ V string }
	b, err := io.ReadAll(resp.Body)
	elapsed = time.Since(begin)
	if err == nil && resp.StatusCode == http.StatusOK {
		err = json.Unmarshal(b, &w)
	}
	return resp.StatusCode, w.V, elapsed, err
}
