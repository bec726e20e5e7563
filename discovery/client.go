package discovery

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"
)

// Client is the Consul API client of a member, with the calls the API
// client lacks or makes without a context. They share its connections.
type Client struct {
	*api.Client
	// CanRead asks whether the token may read a service.
	CanRead Authorizer
	post    func(ctx context.Context, path string, in, out interface{}) error
}

// NewClient returns a Consul API client for the agent at addr, "host:port"
// or an http:// or https:// URL. It honours Consul's TLS variables (CONSUL_CACERT,
// CONSUL_CAPATH, CONSUL_CLIENT_CERT, CONSUL_CLIENT_KEY,
// CONSUL_TLS_SERVER_NAME, CONSUL_HTTP_SSL_VERIFY) and sends token on every
// request; the client's own token settings are left empty, so that a
// rewritten token file takes effect (see Token).
func NewClient(addr string, token *Token) (*Client, error) {
	conf, err := clientConfig(addr, token)
	if err != nil {
		return nil, err
	}
	client, err := api.NewClient(conf)
	if err != nil {
		return nil, fmt.Errorf("consul client: %s", token.redact(err.Error()))
	}
	post := poster(conf)
	return &Client{Client: client, CanRead: newAuthorizer(post), post: post}, nil
}

// poster returns a function that POSTs in as JSON to the agent's path and
// decodes the answer into out: the API client has no context for some
// calls, and none at all for the UI's authorize endpoint.
func poster(conf *api.Config) func(ctx context.Context, path string, in, out interface{}) error {
	base := conf.Scheme + "://" + conf.Address
	return func(ctx context.Context, path string, in, out interface{}) error {
		body, err := json.Marshal(in)
		if err != nil {
			return err
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+path, bytes.NewReader(body))
		if err != nil {
			return err
		}
		resp, err := conf.HttpClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		answer, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK {
			return api.StatusError{Code: resp.StatusCode, Body: string(answer)}
		}
		if err := json.Unmarshal(answer, out); err != nil {
			return fmt.Errorf("%s: unreadable answer", path)
		}
		return nil
	}
}

// ConnectAuthorize asks the agent whether the Connect client with the
// certificate URI and serial may call service target, as its intentions
// say. The API client's call of the same name takes no context.
func (c *Client) ConnectAuthorize(ctx context.Context, target, uri, serial string) (*api.AgentAuthorize, error) {
	var out api.AgentAuthorize
	err := c.post(ctx, "/v1/agent/connect/authorize", &api.AgentAuthorizeParams{Target: target, ClientCertURI: uri, ClientCertSerial: serial}, &out)
	return &out, err
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

// newAuthorizer returns an Authorizer that uses the endpoint the Consul UI
// uses, POST /v1/internal/acl/authorize (Consul 1.9 and later); the API
// client has no call for it.
func newAuthorizer(post func(ctx context.Context, path string, in, out interface{}) error) Authorizer {
	return func(ctx context.Context, service string) (bool, error) {
		var answer []struct{ Allow bool }
		err := post(ctx, "/v1/internal/acl/authorize", []map[string]string{{"Resource": "service", "Segment": service, "Access": "read"}}, &answer)
		if err != nil {
			return false, fmt.Errorf("authorize: %w", err)
		}
		if len(answer) != 1 {
			return false, errors.New("authorize: unreadable answer")
		}
		return answer[0].Allow, nil
	}
}
