package discovery

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"
)

// NewClient returns a Consul API client for the agent at addr, "host:port"
// or an http:// or https:// URL, and an Authorizer that shares its
// connections. It honours Consul's TLS variables (CONSUL_CACERT,
// CONSUL_CAPATH, CONSUL_CLIENT_CERT, CONSUL_CLIENT_KEY,
// CONSUL_TLS_SERVER_NAME, CONSUL_HTTP_SSL_VERIFY) and sends token on every
// request; the client's own token settings are left empty, so that a
// rewritten token file takes effect (see Token).
func NewClient(addr string, token *Token) (*api.Client, Authorizer, error) {
	conf, err := clientConfig(addr, token)
	if err != nil {
		return nil, nil, err
	}
	client, err := api.NewClient(conf)
	if err != nil {
		return nil, nil, fmt.Errorf("consul client: %s", token.redact(err.Error()))
	}
	return client, newAuthorizer(conf), nil
}

func clientConfig(addr string, token *Token) (*api.Config, error) {
	conf := api.DefaultConfig()
	conf.Address = addr
	conf.Token, conf.TokenFile = "", ""
	if scheme, rest, ok := strings.Cut(addr, "://"); ok {
		conf.Scheme, conf.Address = scheme, rest
	}
	tlsConf, err := api.SetupTLSConfig(&conf.TLSConfig)
	if err != nil {
		return nil, fmt.Errorf("consul TLS settings: %w", err)
	}
	transport := &http.Transport{
		Proxy: nil, // the agent is local or on the cluster network
		DialContext: (&net.Dialer{
			Timeout:   5 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		TLSClientConfig:     tlsConf,
		TLSHandshakeTimeout: 10 * time.Second,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     90 * time.Second,
	}
	conf.HttpClient = &http.Client{Transport: token.RoundTripper(transport)}
	return conf, nil
}

// Authorizer asks Consul whether the member's token may read a service.
// It exists because Consul does not refuse a health query the token may
// not make: it answers with the entries the token may see, so a denial
// looks like an empty service.
type Authorizer func(ctx context.Context, service string) (allowed bool, err error)

// newAuthorizer returns an Authorizer on the API client's configuration
// and HTTP client. It uses the endpoint the Consul UI uses, POST
// /v1/internal/acl/authorize (Consul 1.9 and later); the API client has no
// call for it.
func newAuthorizer(conf *api.Config) Authorizer {
	url := conf.Scheme + "://" + conf.Address + "/v1/internal/acl/authorize"
	return func(ctx context.Context, service string) (bool, error) {
		body, _ := json.Marshal([]map[string]string{{"Resource": "service", "Segment": service, "Access": "read"}})
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			return false, err
		}
		resp, err := conf.HttpClient.Do(req)
		if err != nil {
			return false, err
		}
		defer resp.Body.Close()
		var answer []struct{ Allow bool }
		if resp.StatusCode != http.StatusOK {
			return false, fmt.Errorf("authorize: %s", resp.Status)
		}
		if err := json.NewDecoder(resp.Body).Decode(&answer); err != nil || len(answer) != 1 {
			return false, fmt.Errorf("authorize: unreadable answer")
		}
		return answer[0].Allow, nil
	}
}
