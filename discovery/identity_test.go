package discovery

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	stdlog "log"
	"math/big"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/kitmesh/stringsvc/discovery/consultest"
	"github.com/kitmesh/stringsvc/internal/metricstest"
)

func TestServiceID(t *testing.T) {
	for _, tc := range []struct {
		uri  string
		want string // "" for no service ID
	}{
		{"spiffe://td.consul/ns/default/dc/dc1/svc/web", "spiffe://td.consul/ns/default/dc/dc1/svc/web"},
		// The partition is kept: the same service name in another
		// partition is another caller (and another cached decision).
		{"spiffe://td.consul/ap/part/ns/default/dc/dc1/svc/web", "spiffe://td.consul/ap/part/ns/default/dc/dc1/svc/web"},
		{"spiffe://td.consul/agent/client/dc/dc1/id/node", ""},
		{"spiffe://td.consul/ns/default/dc/dc1", ""},
		{"https://td.consul/ns/default/dc/dc1/svc/web", ""},
		{"spiffe:///ns/default/dc/dc1/svc/web", ""},
	} {
		u, _ := url.Parse(tc.uri)
		id, ok := serviceID(&x509.Certificate{URIs: []*url.URL{u}})
		have := ""
		if ok {
			have = id.String()
		}
		if have != tc.want {
			t.Errorf("%s: want %q, have %q", tc.uri, tc.want, have)
		}
	}
}

// selfSigned returns a certificate that names service like a Connect leaf
// but is signed by nobody the mesh trusts.
func selfSigned(t *testing.T, uri string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(uri)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "forged"}, URIs: []*url.URL{u},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// tlsServer serves 200 over TLS with conf until the test ends.
func tlsServer(t *testing.T, conf *tls.Config) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", conf)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}), ErrorLog: stdlog.New(io.Discard, "", 0)}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func get(conf *tls.Config, addr string) error {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: conf}}
	resp, err := c.Get("https://" + addr + "/")
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// TestIdentityChecksBothSides runs real handshakes with certificates from
// a real agent's built-in CA, and forged ones.
func TestIdentityChecksBothSides(t *testing.T) {
	if testing.Short() {
		t.Skip("needs a Consul agent")
	}
	agent := consultest.Start(t)
	client, err := api.NewClient(&api.Config{Address: agent.Addr})
	if err != nil {
		t.Fatal(err)
	}
	refused := metricstest.NewRecorder()
	id := NewIdentity(client, "alpha", IdentityOptions{Refused: refused})
	defer id.Close()
	select {
	case <-id.Ready():
	case <-time.After(20 * time.Second):
		t.Fatalf("no certificate after 20s: %s", id.View().Error)
	}
	v := id.View()
	if !strings.HasSuffix(v.URI, "/ns/default/dc/dc1/svc/alpha") || v.LeafRoot != v.ActiveRoot || v.LeafRoot == "" {
		t.Errorf("view: want alpha's leaf signed by the active root, have %+v", v)
	}

	// As a client of "alpha": an alpha server passes, a beta server and a
	// forged alpha do not.
	alpha := tlsServer(t, &tls.Config{Certificates: []tls.Certificate{consultest.Leaf(t, client, "alpha")}})
	beta := tlsServer(t, &tls.Config{Certificates: []tls.Certificate{consultest.Leaf(t, client, "beta")}})
	forged := tlsServer(t, &tls.Config{Certificates: []tls.Certificate{selfSigned(t, "spiffe://"+strings.Split(strings.TrimPrefix(v.URI, "spiffe://"), "/")[0]+"/ns/default/dc/dc1/svc/alpha")}})
	if err := get(id.ClientTLS("alpha"), alpha); err != nil {
		t.Errorf("alpha server: want served, have %v", err)
	}
	if err := get(id.ClientTLS("alpha"), beta); err == nil || !strings.Contains(err.Error(), "not service alpha") {
		t.Errorf("beta server called as alpha: want refused, have %v", err)
	}
	if err := get(id.ClientTLS("alpha"), forged); err == nil {
		t.Error("forged alpha server: want refused, have served")
	}
	if have := refused.Sum("side", "client", "reason", "wrong_service"); have != 1 {
		t.Errorf("wrong_service refusals: want 1, have %v", have)
	}
	if have := refused.Sum("side", "client", "reason", "untrusted"); have != 1 {
		t.Errorf("untrusted refusals: want 1, have %v", have)
	}

	// As a server: a client with a leaf of any service passes (the
	// intentions decide per request); none, or a forged one, does not.
	server := tlsServer(t, id.ServerTLS())
	trustAny := func(certs ...tls.Certificate) *tls.Config {
		return &tls.Config{InsecureSkipVerify: true, Certificates: certs}
	}
	if err := get(trustAny(consultest.Leaf(t, client, "beta")), server); err != nil {
		t.Errorf("beta client: want served, have %v", err)
	}
	if err := get(trustAny(), server); err == nil {
		t.Error("client without a certificate: want refused, have served")
	}
	if err := get(trustAny(selfSigned(t, "spiffe://x.consul/ns/default/dc/dc1/svc/beta")), server); err == nil {
		t.Error("forged client: want refused, have served")
	}
	for _, reason := range []string{"no_certificate", "untrusted"} {
		if have := refused.Sum("side", "server", "reason", reason); have != 1 {
			t.Errorf("server refusals for %s: want 1, have %v", reason, have)
		}
	}
}

// TestIntentionsCache checks the decision cache with a counted agent and
// a fake clock.
func TestIntentionsCache(t *testing.T) {
	u, _ := url.Parse("spiffe://td.consul/ns/default/dc/dc1/svc/web")
	cs := &tls.ConnectionState{PeerCertificates: []*x509.Certificate{{URIs: []*url.URL{u}, SerialNumber: big.NewInt(0x1a2b)}}}
	var (
		asked   int
		allow   = true
		down    error
		now     = time.Unix(1000, 0)
		serials []string
	)
	denied := metricstest.NewRecorder()
	in := newIntentions("api", 2*time.Second, func(_ context.Context, target, uri, serial string) (bool, string, error) {
		asked++
		serials = append(serials, serial)
		if target != "api" || uri != u.String() {
			t.Errorf("asked about %s -> %s", uri, target)
		}
		return allow, "because", down
	}, func() time.Time { return now }, IntentionsOptions{Denied: denied, Logger: nopLogger{}})
	step := func(d time.Duration) { now = now.Add(d) }

	if err := in.Allow(context.Background(), cs); err != nil || asked != 1 {
		t.Fatalf("first request: want allowed after one question, have %v after %d", err, asked)
	}
	allow = false
	step(time.Second)
	if err := in.Allow(context.Background(), cs); err != nil || asked != 1 {
		t.Errorf("within the TTL: want the cached allow and no question, have %v after %d", err, asked)
	}
	step(time.Second)
	var de *DeniedError
	if err := in.Allow(context.Background(), cs); !errors.As(err, &de) || de.Source != "web" || asked != 2 {
		t.Errorf("after the TTL: want denied after a second question, have %v after %d", err, asked)
	}
	if denied.Sum("source", "web") != 1 {
		t.Errorf("denials counted: %v", denied.Sum("source", "web"))
	}
	// The agent goes away: the last decision holds for a while, then the
	// member cannot tell.
	down = errors.New("connection refused")
	step(3 * time.Second)
	if err := in.Allow(context.Background(), cs); !errors.As(err, &de) {
		t.Errorf("agent down, decision recent: want the cached deny, have %v", err)
	}
	step(2 * staleFor)
	if err := in.Allow(context.Background(), cs); !errors.Is(err, ErrCannotAuthorize) {
		t.Errorf("agent down, decision stale: want ErrCannotAuthorize, have %v", err)
	}
	if serials[0] != "1a:2b" {
		t.Errorf("serial: want Consul's 1a:2b, have %q", serials[0])
	}
	if err := in.Allow(context.Background(), &tls.ConnectionState{}); !errors.As(err, &de) {
		t.Errorf("no certificate: want denied, have %v", err)
	}
}

type nopLogger struct{}

func (nopLogger) Log(...interface{}) error { return nil }

// TestRefusalsAreLoggedBoundedly: a peer alternating what it presents
// gets at most one line a second, whatever the reasons.
func TestRefusalsAreLoggedBoundedly(t *testing.T) {
	var r refusals
	now := time.Unix(1000, 0)
	logged := 0
	for i := 0; i < 100; i++ {
		reason := []string{"untrusted", "no_certificate"}[i%2]
		if r.note(reason, now.Add(time.Duration(i)*5*time.Millisecond)) {
			logged++
		}
	}
	if logged != 1 {
		t.Errorf("100 alternating refusals within half a second: want 1 line, have %d", logged)
	}
	if r.note("no_certificate", now.Add(3*time.Second)) {
		t.Error("the same reason again after a quiet spell: want no line")
	}
	if !r.note("wrong_service", now.Add(3*time.Second)) {
		t.Error("a new reason after a quiet second: want it logged")
	}
}
