package discovery_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/kitmesh/stringsvc/discovery"
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
	r, err := discovery.NewRegistrar(client, registration(addr), discovery.RegistrarOptions{})
	if err != nil {
		t.Fatal(err)
	}
	go r.Run()
	t.Cleanup(r.Stop)
	return r
}

// passing returns "<id> <addr>:<port>" of every passing instance of name,
// sorted. A failed query fails the test: "none passing" must never be an
// error in disguise.
func passing(t *testing.T, client *api.Client, name string) []string {
	t.Helper()
	entries, _, err := client.Health().Service(name, "", true, nil)
	if err != nil {
		t.Fatalf("health query for %s: %v", name, err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, fmt.Sprintf("%s %s:%d", e.Service.ID, e.Service.Address, e.Service.Port))
	}
	sort.Strings(out)
	return out
}
