package limit

import (
	"testing"
	"time"
)

func TestAIMD(t *testing.T) { testAdaptive(t, NewAIMD) }

func TestAIMDThreshold(t *testing.T) {
	const ms = time.Millisecond
	for _, tc := range []struct {
		name     string
		min, rtt time.Duration
		inflight int
		want     int
	}{
		{"fast grows", 10 * ms, 15 * ms, 50, 101},
		{"twice the minimum is not slow", 10 * ms, 20 * ms, 50, 101},
		{"over twice the minimum cuts", 10 * ms, 21 * ms, 50, 90},
		{"slow cuts even app limited", 10 * ms, 21 * ms, 1, 90},
		{"fast app limited holds", 10 * ms, 15 * ms, 49, 100},
		{"sub-ms: 1ms of slack", 100 * time.Microsecond, 1100 * time.Microsecond, 50, 101},
		{"sub-ms: past the slack cuts", 100 * time.Microsecond, 1200 * time.Microsecond, 50, 90},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := NewAIMD(Options{Initial: 100})
			a.Update(time.Time{}, tc.min, 1, false)
			if have := a.Update(time.Time{}, tc.rtt, tc.inflight, false); have != tc.want {
				t.Fatalf("want %d, have %d", tc.want, have)
			}
		})
	}
}

func TestAIMDRelearnsMinimum(t *testing.T) {
	const ms = time.Millisecond
	t0 := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name  string
		after time.Duration
		want  int
	}{
		{"same window: 3ms is slow", aimdMinWindow / 2, 90},
		{"next window: the last one's minimum holds", aimdMinWindow * 3 / 2, 90},
		{"two windows on: 3ms is the new normal", aimdMinWindow * 5 / 2, 101},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := NewAIMD(Options{Initial: 100})
			a.Update(t0, ms, 1, false)
			if have := a.Update(t0.Add(tc.after), 3*ms, 100, false); have != tc.want {
				t.Fatalf("want %d, have %d", tc.want, have)
			}
		})
	}
}

func TestAIMDSmallLimits(t *testing.T) {
	for _, tc := range []struct{ limit, min, want int }{
		{10, 1, 9}, {5, 1, 4}, {2, 1, 1}, {1, 1, 1}, {5, 5, 5},
	} {
		a := NewAIMD(Options{Initial: tc.limit, Min: tc.min})
		if have := a.Update(time.Time{}, time.Millisecond, tc.limit, true); have != tc.want {
			t.Errorf("drop at %d (min %d): want %d, have %d", tc.limit, tc.min, tc.want, have)
		}
	}
}
