package client_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/kitmesh/stringsvc/client"
	"github.com/kitmesh/stringsvc/discovery/consultest"
	"github.com/kitmesh/stringsvc/service"
	"github.com/kitmesh/stringsvc/transport"
	"github.com/kitmesh/stringsvc/transport/endpoints"
)

// instance is one real StringService over HTTP on loopback, counting the
// requests it served.
type instance struct {
	*httptest.Server
	served atomic.Int64
}

func startInstance(t *testing.T, svc service.StringService) *instance {
	t.Helper()
	in := &instance{}
	h := transport.NewHTTPHandler(endpoints.New(svc), transport.HandlerOptions{})
	in.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/health" {
			in.served.Add(1)
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(in.Close)
	return in
}

func (in *instance) hostPort() string { return in.Listener.Addr().String() }

// register lists in in Consul as an instance of stringsvc, with an HTTP
// check of its /health.
func register(t *testing.T, consul *api.Client, in *instance) {
	t.Helper()
	host, port, _ := net.SplitHostPort(in.hostPort())
	p, _ := strconv.Atoi(port)
	err := consul.Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID: "stringsvc@" + in.hostPort(), Name: "stringsvc", Address: host, Port: p,
		Check: &api.AgentServiceCheck{HTTP: in.URL + "/health", Interval: "200ms", Timeout: "1s"},
	})
	if err != nil {
		t.Fatal(err)
	}
}

// failing is a StringService whose every call fails as an instance's own
// failure: a 500 for Uppercase, and a panic-free 500 for Count too.
type failing struct{}

func (failing) Uppercase(context.Context, string) (string, error) {
	return "", errors.New("broken on purpose")
}
func (failing) Count(context.Context, string) int { panic("unreachable: see failingHandler") }

// TestNewBalancesOverConsul calls two real instances that Consul lists,
// through New: both serve, every answer is right, and an instance that
// joins later gets calls too.
func TestNewBalancesOverConsul(t *testing.T) {
	agent := consultest.Start(t)
	consul, err := api.NewClient(&api.Config{Address: agent.Addr})
	if err != nil {
		t.Fatal(err)
	}
	a, b, c := startInstance(t, service.NewBasicService()), startInstance(t, service.NewBasicService()), startInstance(t, service.NewBasicService())
	register(t, consul, a)
	register(t, consul, b)
	consultest.Eventually(t, 10*time.Second, func() error { return passing(consul, 2) })

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	svc, err := client.New(ctx, agent.Addr, client.WithBalancer("roundrobin"))
	if err != nil {
		t.Fatal(err)
	}
	const calls = 40
	for i := 0; i < calls; i++ {
		v, err := svc.Uppercase(ctx, "hello")
		if err != nil || v != "HELLO" {
			t.Fatalf("call %d: want HELLO, have %q, %v", i, v, err)
		}
	}
	if sa, sb := a.served.Load(), b.served.Load(); sa+sb != calls || sa == 0 || sb == 0 {
		t.Errorf("want %d calls spread over both instances, have %d and %d", calls, sa, sb)
	}
	if _, err := svc.Uppercase(ctx, ""); !errors.Is(err, service.ErrEmpty) {
		t.Errorf("want ErrEmpty for \"\", have %v", err)
	}
	if n := svc.Count(ctx, "hello"); n != 5 {
		t.Errorf("Count: want 5, have %d", n)
	}

	register(t, consul, c)
	consultest.Eventually(t, 10*time.Second, func() error {
		if _, err := svc.Uppercase(ctx, "x"); err != nil {
			return err
		}
		if c.served.Load() == 0 {
			return errors.New("the third instance has served nothing yet")
		}
		return nil
	})
}

// TestEndpointsCountReportsErrors: the Set's Count returns the error that
// StringService.Count has no room for, once every attempt failed.
func TestEndpointsCountReportsErrors(t *testing.T) {
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
		w.Write([]byte(`{"error":"broken on purpose"}`))
	}))
	defer broken.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	eps, err := client.NewFixedEndpoints(ctx, []string{broken.Listener.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	n, err := eps.Count(ctx, "hello")
	var ue *transport.UpstreamError
	if !errors.As(err, &ue) || ue.Status != 500 {
		t.Errorf("want the instance's 500 as an UpstreamError, have %d, %v", n, err)
	}
	if n := eps.Service().Count(ctx, "hello"); n != 0 {
		t.Errorf("StringService.Count of a failed call: want 0, have %d", n)
	}
}

// TestNewFixedRetriesElsewhere: with one broken and one working instance,
// every call succeeds, each on the working one at the latest.
func TestNewFixedRetriesElsewhere(t *testing.T) {
	good := startInstance(t, service.NewBasicService())
	bad := startInstance(t, failing{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	svc, err := client.NewFixed(ctx, []string{bad.hostPort(), good.hostPort()}, client.WithBalancer("roundrobin"))
	if err != nil {
		t.Fatal(err)
	}
	var failed int
	const calls = 20
	for i := 0; i < calls; i++ {
		if v, err := svc.Uppercase(ctx, "a"); err != nil || v != "A" {
			failed++
		}
	}
	if failed != 0 || good.served.Load() != calls {
		t.Errorf("want %d calls answered by the good instance and 0 failed, have %d served and %d failed", calls, good.served.Load(), failed)
	}
}

func TestNewFixedRefusesNonsense(t *testing.T) {
	ctx := context.Background()
	for name, tc := range map[string]struct {
		instances []string
		opts      []client.Option
	}{
		"no instances":           {nil, nil},
		"Connect without Consul": {[]string{"127.0.0.1:1"}, []client.Option{client.WithConnect("caller")}},
		"unknown balancer":       {[]string{"127.0.0.1:1"}, []client.Option{client.WithBalancer("fastest")}},
	} {
		if _, err := client.NewFixed(ctx, tc.instances, tc.opts...); err == nil {
			t.Errorf("%s: want an error, have none", name)
		}
	}
}

// passing says whether Consul lists want passing instances of stringsvc.
func passing(consul *api.Client, want int) error {
	entries, _, err := consul.Health().Service("stringsvc", "", true, nil)
	if err != nil {
		return err
	}
	if len(entries) != want {
		return errors.New("want " + strconv.Itoa(want) + " passing, have " + strconv.Itoa(len(entries)))
	}
	return nil
}

// A client whose Consul does not answer says so, rather than only that it
// found no instance; a closed client refuses calls; a Connect client with
// no certificate gives up within its timeout.
func TestClientSaysWhy(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	dead := "127.0.0.1:" + strconv.Itoa(consultest.FreePort(t))
	svc, err := client.New(ctx, dead)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Uppercase(ctx, "a"); err == nil || !strings.Contains(err.Error(), "does not answer") {
		t.Errorf("with Consul away: want an error that says it does not answer, have %v", err)
	}
	cancel()
	if _, err := svc.Uppercase(context.Background(), "a"); !errors.Is(err, client.ErrClosed) {
		t.Errorf("after the client's context: want ErrClosed, have %v", err)
	}

	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	tls, err := client.New(ctx2, dead, client.WithConnect("caller"), client.WithRetries(1, 200*time.Millisecond, 200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := tls.Uppercase(context.Background(), "a"); done <- err }()
	select {
	case err := <-done:
		if !errors.Is(err, client.ErrNoCertificate) {
			t.Errorf("without a certificate: want ErrNoCertificate, have %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a Connect call without a certificate hangs past its timeout")
	}
}
