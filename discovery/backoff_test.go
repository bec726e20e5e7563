package discovery

import (
	"testing"
	"time"
)

func TestJitter(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		r    float64
		want time.Duration
	}{
		{d: minBackoff, r: 0, want: 150 * time.Millisecond},
		{d: minBackoff, r: 0.5, want: 200 * time.Millisecond},
		{d: minBackoff, r: 0.999999, want: 249_999_900 * time.Nanosecond},
		{d: time.Second, r: 0.5, want: maxBackoff},
		{d: maxBackoff, r: 0, want: 1500 * time.Millisecond},
		{d: time.Hour, r: 0.999999, want: 2_499_999_000 * time.Nanosecond},
	} {
		if have := jitter(tc.d, tc.r); have.Round(100) != tc.want.Round(100) {
			t.Errorf("jitter(%v, %v): want %v, have %v", tc.d, tc.r, tc.want, have)
		}
	}
	// From the first retry to the cap and beyond, never out of bounds.
	d := minBackoff
	for i := 0; i < 50; i++ {
		d = nextBackoff(d)
		if d < 3*minBackoff/4 || d > 5*maxBackoff/4 {
			t.Fatalf("step %d: %v is out of [%v, %v]", i, d, 3*minBackoff/4, 5*maxBackoff/4)
		}
	}
}
