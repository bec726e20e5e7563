package discovery

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	stdlog "log"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/kitmesh/stringsvc/internal/metricstest"
	"github.com/kitmesh/stringsvc/internal/poll"
)

// testCA is a Connect CA of our own making: no Consul needed.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

var serial = big.NewInt(100)

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial.Add(serial, big.NewInt(1))
	tmpl := &x509.Certificate{
		SerialNumber: new(big.Int).Set(serial), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &testCA{cert: c, key: key}
}

// leaf issues a leaf naming uri, valid from notBefore to notAfter.
func (ca *testCA) leaf(t *testing.T, uri string, notBefore, notAfter time.Time) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(uri)
	serial.Add(serial, big.NewInt(1))
	tmpl := &x509.Certificate{
		SerialNumber: new(big.Int).Set(serial), URIs: []*url.URL{u},
		NotBefore: notBefore, NotAfter: notAfter,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	x, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: x}
}

func (ca *testCA) valid(t *testing.T, uri string) tls.Certificate {
	return ca.leaf(t, uri, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
}

// snapshot is an identity state of service api in dc1 of td.consul that
// trusts roots.
func snapshot(leaf *tls.Certificate, roots ...*testCA) *identityState {
	s := &identityState{trustDomain: "td.consul", id: spiffeID{trustDomain: "td.consul", namespace: "default", dc: "dc1", service: "api"}}
	if leaf != nil {
		s.cert, s.leaf = leaf, leaf.Leaf
	}
	if roots != nil {
		s.roots, s.rootCerts = x509.NewCertPool(), map[string]*x509.Certificate{}
		for _, r := range roots {
			s.roots.AddCert(r.cert)
			s.rootCerts[r.cert.Subject.CommonName] = r.cert
		}
	}
	return s
}

const (
	webURI = "spiffe://td.consul/ns/default/dc/dc1/svc/web"
	apiURI = "spiffe://td.consul/ns/default/dc/dc1/svc/api"
)

// TestIdentityCheck is the check of a peer's chain, as a pure function of
// a snapshot and a time.
func TestIdentityCheck(t *testing.T) {
	a, b := newTestCA(t, "root-a"), newTestCA(t, "root-b")
	now := time.Now()
	chain := func(c tls.Certificate) []*x509.Certificate { return []*x509.Certificate{c.Leaf} }
	for _, tc := range []struct {
		name   string
		state  *identityState
		peers  []*x509.Certificate
		want   string // the service a client wants; "" on the server side
		at     time.Time
		reason string // "" passes
	}{
		{name: "a leaf of any service, as a server sees it", state: snapshot(nil, a), peers: chain(a.valid(t, webURI)), reason: ""},
		{name: "the service a client wants", state: snapshot(nil, a), peers: chain(a.valid(t, apiURI)), want: "api", reason: ""},
		{name: "signed by either of two current roots", state: snapshot(nil, a, b), peers: chain(b.valid(t, webURI)), reason: ""},
		{name: "expired", state: snapshot(nil, a), peers: chain(a.leaf(t, webURI, now.Add(-2*time.Hour), now.Add(-time.Minute))), reason: "expired"},
		{name: "valid until a moment ago, checked now", state: snapshot(nil, a), peers: chain(a.valid(t, webURI)), at: now.Add(2 * time.Hour), reason: "expired"},
		{name: "not yet valid", state: snapshot(nil, a), peers: chain(a.leaf(t, webURI, now.Add(time.Minute), now.Add(time.Hour))), reason: "expired"},
		{name: "a foreign trust domain", state: snapshot(nil, a), peers: chain(a.valid(t, "spiffe://other.consul/ns/default/dc/dc1/svc/web")), reason: "not_a_service"},
		{name: "no service identity", state: snapshot(nil, a), peers: chain(a.valid(t, "spiffe://td.consul/agent/client/dc/dc1/id/n1")), reason: "not_a_service"},
		{name: "the wrong datacenter", state: snapshot(nil, a), peers: chain(a.valid(t, "spiffe://td.consul/ns/default/dc/dc2/svc/api")), want: "api", reason: "wrong_service"},
		{name: "the wrong namespace", state: snapshot(nil, a), peers: chain(a.valid(t, "spiffe://td.consul/ns/other/dc/dc1/svc/api")), want: "api", reason: "wrong_service"},
		{name: "the wrong service", state: snapshot(nil, a), peers: chain(a.valid(t, webURI)), want: "api", reason: "wrong_service"},
		{name: "the wrong partition", state: snapshot(nil, a), peers: chain(a.valid(t, "spiffe://td.consul/ap/other/ns/default/dc/dc1/svc/api")), want: "api", reason: "wrong_service"},
		{name: "the default partition named", state: snapshot(nil, a), peers: chain(a.valid(t, "spiffe://td.consul/ap/default/ns/default/dc/dc1/svc/api")), want: "api", reason: ""},
		{name: "no certificate", state: snapshot(nil, a), peers: nil, reason: "no_certificate"},
		{name: "no roots yet", state: snapshot(nil), peers: chain(a.valid(t, webURI)), reason: "untrusted"},
		{name: "a root removed", state: snapshot(nil, b), peers: chain(a.valid(t, webURI)), reason: "untrusted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			at := tc.at
			if at.IsZero() {
				at = now
			}
			reason, err := tc.state.check(tc.peers, tc.want, at)
			if reason != tc.reason || (err == nil) != (tc.reason == "") {
				t.Errorf("want reason %q, have %q (%v)", tc.reason, reason, err)
			}
		})
	}
}

// setState replaces the identity's certificates, as the watches do.
func setState(id *Identity, s *identityState) {
	id.update("roots", func(old *identityState) bool { *old = *s; return true })
}

// meshServer serves 200 on a mesh listener of id until the test ends.
func meshServer(t *testing.T, id *Identity) string {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}), ErrorLog: stdlog.New(io.Discard, "", 0)}
	go srv.Serve(id.Listener(inner))
	t.Cleanup(func() { srv.Close() })
	return inner.Addr().String()
}

// keptAlive is a client with one kept-alive connection, which reports
// each new connection it dials.
func keptAlive(conf *tls.Config, dialed chan<- struct{}) *http.Client {
	d := &net.Dialer{}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: conf, MaxIdleConnsPerHost: 1,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dialed <- struct{}{}
			return d.DialContext(ctx, network, addr)
		},
	}}
}

// A kept-alive connection of a client whose root leaves the bundle, or
// whose leaf expires, is closed by the server within seconds.
func TestMeshListenerClosesConnectionsWhoseClientStopsBeingValid(t *testing.T) {
	a, b := newTestCA(t, "root-a"), newTestCA(t, "root-b")
	serverLeaf := b.valid(t, apiURI)
	for _, tc := range []struct {
		name   string
		client tls.Certificate
		change func(id *Identity) // nil: let the leaf expire
		reason string
	}{
		{name: "its root removed", client: a.valid(t, webURI), change: func(id *Identity) { setState(id, snapshot(&serverLeaf, b)) }, reason: "untrusted"},
		// x509 validity has second precision: 2s from now.
		{name: "its leaf expired", client: a.leaf(t, webURI, time.Now().Add(-time.Hour), time.Now().Add(2*time.Second)), reason: "expired"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			refused := metricstest.NewRecorder()
			id := newIdentity(nil, "api", IdentityOptions{Refused: refused})
			defer id.Close()
			setState(id, snapshot(&serverLeaf, a, b))
			addr := meshServer(t, id)
			dialed := make(chan struct{}, 10)
			client := keptAlive(&tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{tc.client}}, dialed)
			for i := 0; i < 3; i++ {
				if err := getURL(client, "https://"+addr+"/"); err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
			}
			if len(dialed) != 1 || id.Conns() != 1 {
				t.Fatalf("want 3 requests on one watched connection, have %d dialed, %d watched", len(dialed), id.Conns())
			}
			start := time.Now()
			if tc.change != nil {
				tc.change(id)
			}
			if err := poll.Until(10*time.Second, 10*time.Millisecond, func() error {
				if n := id.Conns(); n != 0 {
					return fmt.Errorf("%d connections still watched", n)
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			t.Logf("closed %v after the change", time.Since(start).Round(time.Millisecond))
			if err := getURL(client, "https://"+addr+"/"); err == nil {
				t.Error("after the change: want the client refused, have served")
			}
			if have := refused.Sum("side", "server", "reason", tc.reason); have < 1 {
				t.Errorf("want the closing counted as %s, have %v", tc.reason, have)
			}
		})
	}
}

func getURL(c *http.Client, url string) error {
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	return resp.Body.Close()
}

// On the client side too: a connection to a server whose root leaves the
// bundle, or whose leaf expires, is closed within seconds.
func TestClientConnectionsCloseWhenTheServerStopsBeingValid(t *testing.T) {
	a, b := newTestCA(t, "root-a"), newTestCA(t, "root-b")
	clientLeaf := b.valid(t, webURI)
	for _, tc := range []struct {
		name   string
		server tls.Certificate
		change func(id *Identity)
		reason string
	}{
		{name: "its root removed", server: a.valid(t, apiURI), change: func(id *Identity) { setState(id, snapshot(&clientLeaf, b)) }, reason: "untrusted"},
		{name: "its leaf expired", server: a.leaf(t, apiURI, time.Now().Add(-time.Hour), time.Now().Add(2*time.Second)), reason: "expired"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{tc.server}, ClientAuth: tls.RequireAnyClientCert})
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			go func() {
				c, err := ln.Accept()
				if err == nil {
					c.(*tls.Conn).Handshake()
					io.Copy(io.Discard, c) // until the client closes
					c.Close()
				}
			}()
			refused := metricstest.NewRecorder()
			id := newIdentity(nil, "web", IdentityOptions{Refused: refused})
			defer id.Close()
			setState(id, snapshot(&clientLeaf, a, b))
			raw, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			conn := tls.Client(raw, id.ClientTLS("api"))
			if err := conn.Handshake(); err != nil {
				t.Fatal(err)
			}
			untrack := id.TrackClient("api")(raw, conn.ConnectionState())
			defer untrack()
			start := time.Now()
			if tc.change != nil {
				tc.change(id)
			}
			conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, err = conn.Read(make([]byte, 1))
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatalf("the connection is still open 10s later")
			}
			t.Logf("closed %v after the change (%v)", time.Since(start).Round(time.Millisecond), err)
			if id.Conns() != 0 {
				t.Errorf("still watched: %d", id.Conns())
			}
			if have := refused.Sum("side", "client", "reason", tc.reason); have < 1 {
				t.Errorf("want the closing counted as %s, have %v", tc.reason, have)
			}
		})
	}
}
