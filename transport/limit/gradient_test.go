package limit

import (
	"math"
	"testing"
	"time"
)

func TestGradient(t *testing.T) { testAdaptive(t, NewGradient) }

func TestGradientLongRtt(t *testing.T) {
	ms := float64(time.Millisecond)
	g := NewGradient(Options{}).(*gradient)
	for i := 1; i <= gradientWarmup; i++ {
		g.Update(time.Time{}, time.Duration(i)*time.Millisecond, 20, false)
	}
	if want := 5.5 * ms; math.Abs(g.longRtt-want) > 1 {
		t.Fatalf("after warm-up: want the plain average %v, have %v", want, g.longRtt)
	}

	for range 5000 {
		g.Update(time.Time{}, 10*time.Millisecond, 1, false)
	}
	before := g.longRtt
	g.Update(time.Time{}, time.Millisecond, 1, false)
	f := 2.0 / (gradientLongWindow + 1)
	if want := (before*(1-f) + ms*f) * gradientDriftDecay; math.Abs(g.longRtt-want) > 1 {
		t.Fatalf("after a fast sample once load passed: want decayed %v, have %v", want, g.longRtt)
	}

	before = g.longRtt
	g.Update(time.Time{}, time.Hour, 20, true)
	if g.longRtt != before {
		t.Fatalf("after a drop: want the baseline unchanged at %v, have %v", before, g.longRtt)
	}
}

func TestGradientStep(t *testing.T) {
	const ms = time.Millisecond
	for _, tc := range []struct {
		name     string
		rtt      time.Duration
		inflight int
		dropped  bool
		want     float64
	}{
		// limit 100, baseline 10ms (a little more once rtt is averaged in):
		// 100*0.8 + 0.2*(100*gradient + 4)
		{"within tolerance grows by queue", 14 * ms, 100, false, 100.8},
		{"gradient 1.5*10.03/20", 20 * ms, 100, false, 95.85},
		{"gradient floors at 0.5", 60 * ms, 100, false, 90.8},
		{"drop halves without queue", 10 * ms, 100, true, 90},
		{"app limited slow", 60 * ms, 49, false, 100},
		{"half in flight is not app limited", 60 * ms, 50, false, 90.8},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewGradient(Options{Initial: 100}).(*gradient)
			for range gradientWarmup {
				g.Update(time.Time{}, 10*ms, 1, false) // app limited: the limit holds
			}
			g.Update(time.Time{}, tc.rtt, tc.inflight, tc.dropped)
			if math.Abs(g.limit-tc.want) > 0.01 {
				t.Fatalf("want %v, have %v", tc.want, g.limit)
			}
		})
	}
}
