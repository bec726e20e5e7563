package lb

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/sd"
	"github.com/go-kit/log"
)

// changing is an Instancer whose set a test changes, as discovery does.
type changing struct {
	ch chan<- sd.Event
}

func (c *changing) Register(ch chan<- sd.Event) { c.ch = ch; ch <- sd.Event{} }
func (c *changing) Deregister(chan<- sd.Event)  {}
func (c *changing) Stop()                       {}
func (c *changing) set(instances ...string)     { c.ch <- sd.Event{Instances: instances} }

func TestPoolFollowsTheInstancer(t *testing.T) {
	healths := map[string]*fakeHealth{}
	src := &changing{}
	p := NewPool(src, func(instance string) (endpoint.Endpoint, Health, error) {
		h := &fakeHealth{}
		healths[instance] = h
		return (&fakeInstance{}).endpoint, h, nil
	}, log.NewNopLogger())
	defer p.Close()

	src.set("b:1", "a:1")
	waitSize(t, p, 2)
	if first := p.Upstreams()[0].Instance; first != "a:1" {
		t.Errorf("want the set sorted, have %s first", first)
	}

	src.set("a:1")
	waitSize(t, p, 1)
	if !healths["b:1"].closed.Load() {
		t.Error("the instance that left: want its Health closed")
	}
	if healths["a:1"].closed.Load() {
		t.Error("the instance that stayed: want its Health open")
	}

	src.set() // an empty set is delivered as such
	waitSize(t, p, 0)
	for _, name := range BalancerNames() {
		newBalancer, _ := ParseBalancer(name)
		if _, err := newBalancer(p).Pick(nil); !errors.Is(err, ErrNoEndpoints) {
			t.Errorf("%s on an empty set: want ErrNoEndpoints, have %v", name, err)
		}
	}
}

func TestParseBalancer(t *testing.T) {
	for _, tc := range []struct {
		name string
		want Balancer
	}{
		{name: "p2c", want: &PeakEWMA{}},
		{name: "roundrobin", want: &RoundRobin{}},
		{name: "random", want: &Random{}},
		{name: ""},
		{name: "fastest"},
	} {
		f, err := ParseBalancer(tc.name)
		if tc.want == nil {
			if err == nil {
				t.Errorf("ParseBalancer(%q): want an error, have none", tc.name)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseBalancer(%q): want no error, have %v", tc.name, err)
			continue
		}
		if have := f(newPool(log.NewNopLogger())); typeName(have) != typeName(tc.want) {
			t.Errorf("ParseBalancer(%q): want %s, have %s", tc.name, typeName(tc.want), typeName(have))
		}
	}
	if have := BalancerNames()[0]; have != "p2c" {
		t.Errorf("default balancer: want p2c first, have %s", have)
	}
}

func typeName(b Balancer) string {
	switch b.(type) {
	case *PeakEWMA:
		return "PeakEWMA"
	case *RoundRobin:
		return "RoundRobin"
	case *Random:
		return "Random"
	}
	return "unknown"
}

func TestCandidatesSkipUnavailable(t *testing.T) {
	healths := []*fakeHealth{{}, {}, {}}
	src := &changing{}
	var i int
	p := NewPool(src, func(string) (endpoint.Endpoint, Health, error) {
		h := healths[i]
		i++
		return (&fakeInstance{}).endpoint, h, nil
	}, log.NewNopLogger())
	defer p.Close()
	src.set("a", "b", "c")
	waitSize(t, p, 3)

	healths[1].down.Store(true)
	if c := p.candidates(nil, nil); len(c) != 2 || contains(c, p.Upstreams()[1]) {
		t.Errorf("one open breaker: want the other 2 as candidates, have %d", len(c))
	}
	healths[0].down.Store(true)
	healths[2].down.Store(true)
	if c := p.candidates(nil, nil); len(c) != 3 {
		t.Errorf("every breaker open: want all 3 returned for their breakers to answer, have %d", len(c))
	}
	if have := p.Snapshot()[1].State; have != "open" {
		t.Errorf("Snapshot state: want open, have %s", have)
	}
}

func TestPickNeverReturnsExcluded(t *testing.T) {
	p := testPool(t, nil, &fakeInstance{}, &fakeInstance{}, &fakeInstance{})
	for _, name := range BalancerNames() {
		newBalancer, _ := ParseBalancer(name)
		b := newBalancer(p)
		for i := 0; i < 100; i++ {
			ex := []*Upstream{p.Upstreams()[i%3], p.Upstreams()[(i+1)%3]}
			u, err := b.Pick(ex)
			if err != nil || contains(ex, u) {
				t.Fatalf("%s: picked %v (err %v) with %v excluded", name, u, err, ex)
			}
		}
		if _, err := b.Pick(p.Upstreams()); !errors.Is(err, ErrNoEndpoints) {
			t.Errorf("%s with all excluded: want ErrNoEndpoints, have %v", name, err)
		}
	}
}

// Go kit's endpoint cache calls the factory again for a repeated instance
// but keeps only the last closer. The pool must hold each instance once,
// and drop it when it goes.
func TestPoolIgnoresDuplicateInstances(t *testing.T) {
	var made, closed int
	var mu sync.Mutex
	src := &changing{}
	p := NewPool(src, func(string) (endpoint.Endpoint, Health, error) {
		mu.Lock()
		made++
		mu.Unlock()
		return (&fakeInstance{}).endpoint, closeCounter(func() { mu.Lock(); closed++; mu.Unlock() }), nil
	}, log.NewNopLogger())
	defer p.Close()
	src.set("a:1", "a:1", "b:1")
	waitSize(t, p, 2)
	src.set("b:1", "a:1", "b:1", "b:1")
	src.set("b:1")
	waitSize(t, p, 1)
	mu.Lock()
	defer mu.Unlock()
	if made-closed != 1 {
		t.Errorf("endpoints made %d, closed %d: want exactly one left open", made, closed)
	}
	if have := fmt.Sprint(instances(p)); have != "[b:1]" {
		t.Errorf("want [b:1], have %s", have)
	}
}

type closeCounter func()

func (c closeCounter) Close() error    { c(); return nil }
func (c closeCounter) Available() bool { return true }
func (c closeCounter) State() string   { return "closed" }

func instances(p *Pool) []string {
	var out []string
	for _, u := range p.Upstreams() {
		out = append(out, u.Instance)
	}
	return out
}

// An instancer that sends its set on Register, as Go kit's do, has that
// set in the pool when NewPool returns: the first call finds it.
func TestPoolHoldsTheFirstSetAtOnce(t *testing.T) {
	for i := 0; i < 50; i++ {
		p := NewPool(sd.FixedInstancer{"a:1", "b:1", "a:1"}, func(string) (endpoint.Endpoint, Health, error) {
			return (&fakeInstance{}).endpoint, nil, nil
		}, log.NewNopLogger())
		if n := len(p.Upstreams()); n != 2 {
			t.Fatalf("round %d: want 2 instances at once, have %d", i, n)
		}
		p.Close()
	}
}

// twice is an instancer that sends two events from Register itself.
type twice struct{ sd.FixedInstancer }

func (t twice) Register(ch chan<- sd.Event) {
	ch <- sd.Event{Instances: t.FixedInstancer}
	ch <- sd.Event{Instances: t.FixedInstancer[:1]}
}

func (twice) Deregister(chan<- sd.Event) {}

// An instancer that sends more than once from Register does not hang
// NewPool, and a factory that fails is called once for the first set.
func TestPoolFirstSetEdgeCases(t *testing.T) {
	done := make(chan *Pool)
	go func() {
		done <- NewPool(twice{sd.FixedInstancer{"a:1", "b:1"}}, func(string) (endpoint.Endpoint, Health, error) {
			return (&fakeInstance{}).endpoint, nil, nil
		}, log.NewNopLogger())
	}()
	select {
	case p := <-done:
		waitSize(t, p, 1) // the second event, applied after
		p.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("NewPool hangs on an instancer that sends twice from Register")
	}

	var calls atomic.Int64
	p := NewPool(sd.FixedInstancer{"bad:1"}, func(string) (endpoint.Endpoint, Health, error) {
		calls.Add(1)
		return nil, nil, errors.New("refused on purpose")
	}, log.NewNopLogger())
	defer p.Close()
	if n := calls.Load(); n != 1 {
		t.Errorf("a failing factory for the first set: want 1 call, have %d", n)
	}
}
