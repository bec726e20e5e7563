package transport

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/kitmesh/stringsvc/internal/metricstest"
	"github.com/kitmesh/stringsvc/service"
	"github.com/kitmesh/stringsvc/transport/endpoints"
	"github.com/kitmesh/stringsvc/transport/limit"
)

// recordingAlgorithm is a limit.Algorithm that keeps its samples.
type recordingAlgorithm struct {
	limit   int
	dropped []bool
}

func (a *recordingAlgorithm) Update(_ time.Time, _ time.Duration, _ int, dropped bool) int {
	a.dropped = append(a.dropped, dropped)
	return a.limit
}
func (a *recordingAlgorithm) Limit() int   { return a.limit }
func (a *recordingAlgorithm) Name() string { return "recording" }

// The limiter learns from each answer what it says about this member's
// load: its latency; an overload answer (which a client can provoke with
// its own deadline) or a client that left says nothing.
func TestLimiterLearnsFromTheOutcome(t *testing.T) {
	tests := []struct {
		code      int
		cancelled bool
		want      []bool // the samples: nil for none
	}{
		{code: 200, want: []bool{false}},
		{code: 400, want: []bool{false}},
		{code: 500, want: []bool{false}},
		{code: 503, want: nil},
		{code: 504, want: nil},
		{code: 200, cancelled: true, want: nil},
	}
	for _, tt := range tests {
		alg := &recordingAlgorithm{limit: 10}
		l := limit.New(alg, 10, nil)
		h := trackResponse(limitConcurrency(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(tt.code)
		}), l, time.Second, nil), nil, "/x")
		r := httptest.NewRequest("POST", "/x", nil)
		if tt.cancelled {
			ctx, cancel := context.WithCancel(r.Context())
			cancel()
			r = r.WithContext(ctx)
		}
		h.ServeHTTP(httptest.NewRecorder(), r)
		if len(alg.dropped) != len(tt.want) || len(tt.want) == 1 && alg.dropped[0] != tt.want[0] {
			t.Errorf("%d (cancelled %v): want samples %v, have %v", tt.code, tt.cancelled, tt.want, alg.dropped)
		}
		if l.InFlight() != 0 {
			t.Errorf("%d: want nothing in flight after the answer, have %d", tt.code, l.InFlight())
		}
	}
}

// A shed request gets its 503 fast and keeps its connection.
func TestShedKeepsTheConnection(t *testing.T) {
	l := limit.New(limit.NewFixed(limit.Options{Max: 1}), 1, nil)
	tok, ok := l.Acquire() // the only slot, taken
	if !ok {
		t.Fatal("want the first slot")
	}
	defer tok.Release(limit.Ignore)
	h := trackResponse(limitConcurrency(http.NotFoundHandler(), l, time.Second, nil), nil, "/x")
	w := httptest.NewRecorder()
	r := httptest.NewRequest("POST", "/x", nil)
	r.ContentLength = 9
	h.ServeHTTP(w, r)
	if w.Code != 503 || w.Header().Get("Retry-After") != "1" || w.Header().Get("Connection") != "" {
		t.Errorf("want 503, Retry-After 1 and no Connection: close, have %d %v", w.Code, w.Header())
	}
}

// A handler that panics still frees its slot.
func TestLimiterSlotSurvivesAPanic(t *testing.T) {
	l := limit.New(limit.NewFixed(limit.Options{Max: 1}), 1, nil)
	h := limitConcurrency(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic(http.ErrAbortHandler) }), l, time.Second, nil)
	func() {
		defer func() { recover() }()
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("POST", "/x", nil))
	}()
	if l.InFlight() != 0 {
		t.Fatalf("want the slot freed after a panic, have %d in flight", l.InFlight())
	}
}

// An expired request is dropped before it takes a slot: with every slot
// taken it gets 504, not the 503 of a full member.
func TestExpiredRequestTakesNoSlot(t *testing.T) {
	l := limit.New(limit.NewFixed(limit.Options{Max: 1}), 1, nil)
	held, _ := l.Acquire()
	defer held.Release(limit.Ignore)
	h := NewHTTPHandler(endpoints.New(service.NewBasicService()), HandlerOptions{Limiter: l, MaxWait: time.Millisecond})
	r := httptest.NewRequest("POST", "/count", strings.NewReader(`{"s":"a"}`))
	r.Header.Set(TimeoutHeader, "0")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != 504 {
		t.Fatalf("want 504 for an expired request at a full member, have %d", w.Code)
	}
}

// A request whose own deadline ends its wait for a slot gets 504, not the
// 503 of an overloaded member: the caller's impatience is no load signal.
func TestWaitEndedByTheDeadlineIs504(t *testing.T) {
	l := limit.New(limit.NewFixed(limit.Options{Max: 1}), 1, nil)
	l.SetQueue(10)
	held, _ := l.Acquire()
	defer held.Release(limit.Ignore)
	shed := metricstest.NewRecorder()
	h := NewHTTPHandler(endpoints.New(service.NewBasicService()), HandlerOptions{Limiter: l, MaxWait: time.Minute, Shed: shed})
	r := httptest.NewRequest("POST", "/count", strings.NewReader(`{"s":"a"}`))
	r.Header.Set(TimeoutHeader, "20")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != 504 || w.Header().Get("Retry-After") != "" || shed.Sum() != 0 {
		t.Fatalf("want 504 without Retry-After, not counted as shed; have %d %v, %v shed", w.Code, w.Header(), shed.Sum())
	}
}
