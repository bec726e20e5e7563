package discovery_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-kit/kit/sd"
	"github.com/go-kit/log"
	"github.com/hashicorp/consul/api"

	"github.com/kitmesh/stringsvc/discovery"
	"github.com/kitmesh/stringsvc/discovery/consultest"
)

// countingTransport counts requests to Consul, and those still in flight.
type countingTransport struct {
	inFlight, total atomic.Int64
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.total.Add(1)
	c.inFlight.Add(1)
	resp, err := http.DefaultTransport.RoundTrip(r)
	if err != nil {
		c.inFlight.Add(-1)
		return nil, err
	}
	resp.Body = &countedBody{resp.Body, c, false}
	return resp, nil
}

type countedBody struct {
	io.ReadCloser
	c      *countingTransport
	closed bool
}

func (b *countedBody) Close() error {
	if !b.closed {
		b.closed = true
		b.c.inFlight.Add(-1)
	}
	return b.ReadCloser.Close()
}

func newClient(t *testing.T, addr string, rt http.RoundTripper) *api.Client {
	t.Helper()
	conf := api.DefaultConfig()
	conf.Address = addr
	if rt != nil {
		conf.HttpClient = &http.Client{Transport: rt}
	}
	c, err := api.NewClient(conf)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// healthServer is a real HTTP server answering /health, on loopback.
func healthServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("ok"))
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func registration(addr string) discovery.Registration {
	return discovery.Registration{
		Name: "stringsvc-test", Advertise: addr, Version: "test",
		CheckInterval: time.Second, CheckTimeout: 500 * time.Millisecond, DeregisterAfter: time.Minute,
	}
}

func startRegistrar(t *testing.T, client *api.Client, addr string) *discovery.Registrar {
	t.Helper()
	r, err := discovery.NewRegistrar(client, registration(addr), discovery.NewReachability(log.NewNopLogger()), nil, log.NewNopLogger())
	if err != nil {
		t.Fatal(err)
	}
	go r.Run()
	t.Cleanup(r.Stop)
	return r
}

func passing(t *testing.T, client *api.Client, name string) []string {
	t.Helper()
	entries, _, err := client.Health().Service(name, "", true, nil)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range entries {
		out = append(out, fmt.Sprintf("%s %s:%d", e.Service.ID, e.Service.Address, e.Service.Port))
	}
	sort.Strings(out)
	return out
}

func TestRegistrarRegistersAndHeals(t *testing.T) {
	agent := consultest.Start(t)
	client := newClient(t, agent.Addr, nil)
	addr := healthServer(t)
	r := startRegistrar(t, client, addr)

	host, port, _ := net.SplitHostPort(addr)
	want := fmt.Sprintf("stringsvc-test-%s-%s %s:%s", host, port, host, port)
	waitPassing := func(why string) {
		t.Helper()
		consultest.Eventually(t, 10*time.Second, func() error {
			if have := passing(t, client, "stringsvc-test"); len(have) != 1 || have[0] != want {
				return fmt.Errorf("%s: want [%s] passing, have %v", why, want, have)
			}
			return nil
		})
	}
	waitPassing("first registration")
	if !r.Registered() {
		t.Error("Registered: want true")
	}

	// The agent loses the registration behind our back.
	if err := client.Agent().ServiceDeregister(r.ID()); err != nil {
		t.Fatal(err)
	}
	waitPassing("after the agent lost it")

	// A dev agent restarted on the same ports has lost everything.
	agent.Restart()
	waitPassing("after a Consul restart")

	// Deregister is immediate, not a wait for the check to fail.
	r.Stop()
	if err := r.Deregister(context.Background()); err != nil {
		t.Fatal(err)
	}
	if have := passing(t, client, "stringsvc-test"); len(have) != 0 {
		t.Errorf("after Deregister: want none, have %v", have)
	}
}

func TestRegistrarWaitsForConsul(t *testing.T) {
	agent := consultest.Start(t)
	agent.Stop()
	rt := &countingTransport{}
	client := newClient(t, agent.Addr, rt)
	addr := healthServer(t)
	r := startRegistrar(t, client, addr)
	// Wait until it has tried and failed a few times.
	consultest.Eventually(t, 10*time.Second, func() error {
		if n := rt.total.Load(); n < 3 {
			return fmt.Errorf("%d attempts so far", n)
		}
		return nil
	})
	if r.Registered() {
		t.Fatal("registered while Consul is down")
	}
	agent.Start()
	began := time.Now()
	consultest.Eventually(t, 10*time.Second, func() error {
		if have := passing(t, client, "stringsvc-test"); len(have) != 1 {
			return fmt.Errorf("want 1 passing, have %v", have)
		}
		return nil
	})
	t.Logf("registered %v after Consul answered", time.Since(began))
}

// TestInstancer watches real registrations come and go, including the empty
// set, through Go kit's Endpointer.
func TestInstancer(t *testing.T) {
	agent := consultest.Start(t)
	rt := &countingTransport{}
	client := newClient(t, agent.Addr, rt)
	inst := discovery.NewInstancer(client, discovery.NewReachability(log.NewNopLogger()), log.NewNopLogger(), "stringsvc-test", nil)

	events := make(chan sd.Event, 100)
	inst.Register(events)
	waitFor := func(want int) {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for {
			select {
			case ev := <-events:
				if ev.Err == nil && len(ev.Instances) == want {
					return
				}
			case <-deadline:
				t.Fatalf("no event with %d instances", want)
			}
		}
	}
	waitFor(0)
	regClient := newClient(t, agent.Addr, nil)
	a, b := healthServer(t), healthServer(t)
	ra := startRegistrar(t, regClient, a)
	startRegistrar(t, regClient, b)
	waitFor(2)
	ra.Stop()
	ra.Deregister(context.Background())
	waitFor(1)

	// Stop must cancel the blocking query in flight, not leave it waiting
	// for minutes.
	consultest.Eventually(t, 5*time.Second, func() error {
		if rt.inFlight.Load() == 0 {
			return errors.New("no blocking query in flight yet")
		}
		return nil
	})
	inst.Stop()
	consultest.Eventually(t, 3*time.Second, func() error {
		if n := rt.inFlight.Load(); n != 0 {
			return fmt.Errorf("want 0 queries in flight after Stop, have %d", n)
		}
		return nil
	})
}

func TestAdvertiseAddr(t *testing.T) {
	any4 := &net.TCPAddr{IP: net.IPv4zero, Port: 8080}
	for _, tc := range []struct {
		override, consul string
		listener         net.Addr
		want             string
		wantErr          bool
	}{
		{"10.1.2.3:9000", "127.0.0.1:8500", any4, "10.1.2.3:9000", false},
		{"::1:9000", "", any4, "", true},
		{"[::1]:9000", "", any4, "[::1]:9000", false},
		{":9000", "", any4, "", true},
		{"", "127.0.0.1:8500", any4, "127.0.0.1:8080", false},
		{"", "127.0.0.1:8500", &net.TCPAddr{IP: net.ParseIP("127.0.0.7"), Port: 81}, "127.0.0.7:81", false},
		{"", "[::1]:8500", &net.TCPAddr{IP: net.IPv6unspecified, Port: 81}, "[::1]:81", false},
	} {
		have, err := discovery.AdvertiseAddr(tc.override, tc.consul, tc.listener)
		if (err != nil) != tc.wantErr || have != tc.want {
			if strings.Contains(fmt.Sprint(err), "network is unreachable") {
				continue // no IPv6 on this host
			}
			t.Errorf("AdvertiseAddr(%q, %q, %v): want %q (err %v), have %q, %v", tc.override, tc.consul, tc.listener, tc.want, tc.wantErr, have, err)
		}
	}
}
