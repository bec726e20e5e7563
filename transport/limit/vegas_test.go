package limit

import (
	"testing"
	"time"
)

func TestVegas(t *testing.T) {
	// jitter 0.75: probes every 22.5 × limit samples, the same on every run.
	testAdaptive(t, func(o Options) Algorithm { return newVegas(o, func() float64 { return 0.5 }) })
}

func TestVegasStep(t *testing.T) {
	const us = time.Microsecond
	for _, tc := range []struct {
		name     string
		rtt      time.Duration
		inflight int
		dropped  bool
		want     int
	}{
		// limit 100, rtt_noload 1ms: log10 2, alpha 6, beta 12
		{"no queue grows by beta", 1000 * us, 100, false, 112},
		{"small queue grows by log10", 1040 * us, 100, false, 102},
		{"sweet spot holds", 1100 * us, 100, false, 100},
		{"large queue shrinks by log10", 2000 * us, 100, false, 98},
		{"drop shrinks by log10", 1000 * us, 100, true, 98},
		{"app limited", 2000 * us, 49, false, 100},
		{"new minimum holds", 500 * us, 100, false, 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := newVegas(Options{Initial: 100}, func() float64 { return 0.99 })
			v.Update(time.Time{}, 1000*us, 100, false)
			if have := v.Update(time.Time{}, tc.rtt, tc.inflight, tc.dropped); have != tc.want {
				t.Fatalf("want %d, have %d", tc.want, have)
			}
		})
	}
}

func TestVegasProbe(t *testing.T) {
	// jitter 0.5: a probe every 0.5 * 30 * 20 = 300 samples at limit 20.
	v := newVegas(Options{Initial: 20}, func() float64 { return 0 })
	v.Update(time.Time{}, time.Millisecond, 1, false)
	for i := 2; i < 300; i++ {
		v.Update(time.Time{}, 5*time.Millisecond, 1, false) // app limited: the limit holds
		if v.noLoad != time.Millisecond {
			t.Fatalf("sample %d: rtt_noload: want 1ms, have %v", i, v.noLoad)
		}
	}
	v.Update(time.Time{}, 5*time.Millisecond, 1, false)
	if v.noLoad != 5*time.Millisecond {
		t.Fatalf("at the probe: rtt_noload: want 5ms, have %v", v.noLoad)
	}
	if v.probes != 0 {
		t.Fatalf("after the probe: samples counted: want 0, have %d", v.probes)
	}
}

func TestVegasLog(t *testing.T) {
	for _, tc := range []struct{ limit, want float64 }{
		{1, 1}, {9.9, 1}, {10, 1}, {99.9, 1}, {100, 2}, {999, 2}, {1000, 3}, {5000, 3},
	} {
		if have := vegasLog(tc.limit); have != tc.want {
			t.Errorf("%v: want %v, have %v", tc.limit, tc.want, have)
		}
	}
}
