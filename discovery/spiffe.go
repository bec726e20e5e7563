package discovery

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"strings"
)

// spiffeID is the identity in a Connect service certificate's URI SAN:
// spiffe://<trust domain>/ns/<namespace>/dc/<dc>/svc/<service> (Consul
// Enterprise puts /ap/<partition> before /ns).
type spiffeID struct {
	trustDomain, partition, namespace, dc, service string
}

func (s spiffeID) String() string {
	if s.partition != "" {
		return fmt.Sprintf("spiffe://%s/ap/%s/ns/%s/dc/%s/svc/%s", s.trustDomain, s.partition, s.namespace, s.dc, s.service)
	}
	return fmt.Sprintf("spiffe://%s/ns/%s/dc/%s/svc/%s", s.trustDomain, s.namespace, s.dc, s.service)
}

// serviceID returns the service identity in c's URI SANs, if it has one.
func serviceID(c *x509.Certificate) (spiffeID, bool) {
	for _, u := range c.URIs {
		if u.Scheme != "spiffe" || u.Host == "" {
			continue
		}
		parts := strings.Split(strings.TrimPrefix(u.Path, "/"), "/")
		if len(parts)%2 != 0 {
			continue
		}
		id := spiffeID{trustDomain: u.Host}
		for i := 0; i < len(parts); i += 2 {
			switch parts[i] {
			case "ap":
				id.partition = parts[i+1]
			case "ns":
				id.namespace = parts[i+1]
			case "dc":
				id.dc = parts[i+1]
			case "svc":
				id.service = parts[i+1]
			}
		}
		if id.namespace != "" && id.dc != "" && id.service != "" {
			return id, true
		}
	}
	return spiffeID{}, false
}

// parsePEMCert parses the first certificate of a PEM text.
func parsePEMCert(text string) (*x509.Certificate, error) {
	block, _ := pem.Decode([]byte(text))
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM certificate")
	}
	return x509.ParseCertificate(block.Bytes)
}

// serialHex formats a certificate serial as Consul does:
// colon-separated lower-case hex bytes.
func serialHex(n *big.Int) string {
	b := n.Bytes()
	parts := make([]string, len(b))
	for i, c := range b {
		parts[i] = fmt.Sprintf("%02x", c)
	}
	return strings.Join(parts, ":")
}
