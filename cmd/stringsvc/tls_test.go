package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kitmesh/stringsvc/discovery/consultest"
	"github.com/kitmesh/stringsvc/internal/clustertest"
	"github.com/kitmesh/stringsvc/internal/devconsul"
)

// testCA is a certificate authority made for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string // PEM of the CA certificate
}

func newTestCA(t *testing.T, dir, name string) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &testCA{cert: cert, key: key, file: filepath.Join(dir, name+".pem")}
	writePEM(t, ca.file, "CERTIFICATE", der)
	return ca
}

// issue writes a certificate for 127.0.0.1 and localhost signed by the CA,
// and its key, and returns their files.
func (ca *testCA) issue(t *testing.T, dir, name string, usage x509.ExtKeyUsage) (certFile, keyFile string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"localhost", "server.dc1.consul"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	writePEM(t, certFile, "CERTIFICATE", der)
	keyDER, _ := x509.MarshalECPrivateKey(key)
	writePEM(t, keyFile, "EC PRIVATE KEY", keyDER)
	return certFile, keyFile
}

func writePEM(t *testing.T, file, kind string, der []byte) {
	t.Helper()
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestConsulOverTLS runs members against an HTTPS-only agent that verifies
// its clients, with a CA and certificates made here.
func TestConsulOverTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	dir := t.TempDir()
	ca := newTestCA(t, dir, "ca")
	serverCert, serverKey := ca.issue(t, dir, "server", x509.ExtKeyUsageServerAuth)
	clientCert, clientKey := ca.issue(t, dir, "client", x509.ExtKeyUsageClientAuth)

	pair, err := tls.LoadX509KeyPair(clientCert, clientKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	agent := consultest.StartWith(t, devconsul.Options{
		TLS: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}},
		HCL: fmt.Sprintf(`tls {
			defaults {
				ca_file = %q
				cert_file = %q
				key_file = %q
			}
			https { verify_incoming = true }
		}`, ca.file, serverCert, serverKey),
	})
	addr := "https://" + agent.Addr
	env := []string{"CONSUL_CACERT=" + ca.file, "CONSUL_CLIENT_CERT=" + clientCert, "CONSUL_CLIENT_KEY=" + clientKey}

	a := clustertest.StartNodeEnv(t, "A", addr, env)
	b := clustertest.StartNodeEnv(t, "B", addr, env)
	t.Run("members register and discover each other over TLS", func(t *testing.T) {
		waitUpstreams(t, 2, a, b)
		for _, n := range []*clustertest.Node{a, b} {
			if r := n.Metric("stringsvc_registered "); r != 1 {
				t.Errorf("%s: stringsvc_registered want 1, have %v", n.Name, r)
			}
		}
	})

	t.Run("a wrong CA is one clear line, and no tight loop", func(t *testing.T) {
		other := newTestCA(t, dir, "other-ca")
		wrongEnv := []string{"CONSUL_CACERT=" + other.file, "CONSUL_CLIENT_CERT=" + clientCert, "CONSUL_CLIENT_KEY=" + clientKey}
		c := clustertest.StartNodeEnv(t, "C", addr, wrongEnv)
		began := time.Now()
		consultest.Eventually(t, 10*time.Second, func() error {
			if !strings.Contains(c.Log(), "consul=unreachable") {
				return fmt.Errorf("no unreachable line yet")
			}
			return nil
		})
		time.Sleep(time.Until(began.Add(6 * time.Second))) // let the retries run a while
		log := c.Log()
		if n := strings.Count(log, "consul=unreachable"); n != 1 || !strings.Contains(log, "certificate") {
			t.Errorf("want one unreachable line naming the certificate error, have %d:\n%s", n, clustertest.LastLines(log, 10))
		}
		failures := c.Metric(`stringsvc_consul_failures_total{kind="unreachable",op="advertise"}`)
		if failures < 2 || failures > 12 {
			t.Errorf("registration attempts in 6s: want 2 to 12 (backoff to 2s), have %v", failures)
		}
		if code, body := clustertest.Request(t, "POST", c.Addr, "/uppercase", `{"s":"local"}`); code != 200 || body != `{"v":"LOCAL"}`+"\n" {
			t.Errorf("C serves locally: want 200 LOCAL, have %d %s", code, body)
		}
	})
}
