package consultest

import (
	"crypto/tls"
	"testing"

	"github.com/hashicorp/consul/api"
)

// Leaf returns a Connect leaf certificate of service, issued by the
// agent's CA, as a member gets its own.
func Leaf(t testing.TB, client *api.Client, service string) tls.Certificate {
	t.Helper()
	leaf, _, err := client.Agent().ConnectCALeaf(service, nil)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair([]byte(leaf.CertPEM), []byte(leaf.PrivateKeyPEM))
	if err != nil {
		t.Fatal(err)
	}
	return cert
}
