package discovery

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-kit/kit/metrics"
	"github.com/go-kit/log"
	"github.com/hashicorp/consul/api"

	"github.com/kitmesh/stringsvc/internal/clip"
)

// Identity is this member's Consul Connect identity: its leaf certificate
// (a SPIFFE ID spiffe://<trust domain>/ns/default/dc/<dc>/svc/<service>)
// and the CA roots it trusts, both from the local agent and kept fresh by
// blocking queries, so that a leaf renewal or a root rotation takes effect
// on the next handshake, with no restart.
//
// It is a smaller version of what github.com/hashicorp/consul/connect
// does, built on the API client only: that package would pull the Consul
// server's dependency graph into ours.
type Identity struct {
	client  *api.Client
	service string
	o       IdentityOptions

	state  atomic.Pointer[identityState]
	mu     sync.Mutex // serialises updates of state
	ready  chan struct{}
	once   sync.Once
	ctx    context.Context
	cancel context.CancelFunc
	done   sync.WaitGroup

	fetchWhy lastReason // why the agent does not give us certificates
	asServer refusals   // of clients, by this member's mesh listener
	asClient refusals   // of servers, by this member's client

	// The mesh connections in use, each checked again every sweepEvery
	// and at once on a change of roots: a leaf that expires, or whose
	// root leaves the bundle, closes its connection.
	connsMu sync.Mutex
	conns   map[*liveConn]struct{}
	rotated chan struct{} // a change of roots: sweep now
	now     func() time.Time
}

// liveConn is one mesh connection whose peer passed a handshake.
type liveConn struct {
	side  string // "server" or "client", as in verify
	peers []*x509.Certificate
	want  string
	close func() error

	// The last check that passed: against which roots, and until when
	// its chain stays valid. A sweep checks again only when either
	// changed, so that a thousand idle connections cost a thousand
	// comparisons a second, not a thousand signature checks.
	roots *x509.CertPool
	until time.Time
}

// sweepEvery is how often the connections in use are checked again.
const sweepEvery = time.Second

// refusals logs refused handshakes of one side once per change of reason
// (no_certificate, untrusted, ...), and at most once a second: a peer
// controls what it presents, so neither the detail nor alternating
// reasons may make the log grow with its attempts. The metric counts
// every refusal.
type refusals struct {
	mu     sync.Mutex
	last   string
	logged time.Time
}

// note reports whether a refusal for reason should be logged now.
func (r *refusals) note(reason string, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if reason == r.last || now.Sub(r.logged) < time.Second {
		r.last = reason
		return false
	}
	r.last, r.logged = reason, now
	return true
}

// clear records a handshake that passed.
func (r *refusals) clear() {
	r.mu.Lock()
	r.last = ""
	r.mu.Unlock()
}

// identityState is one immutable snapshot of the certificates.
type identityState struct {
	cert        *tls.Certificate  // nil until the first leaf
	leaf        *x509.Certificate // cert's leaf, parsed
	leafSerial  string
	id          spiffeID // of leaf
	roots       *x509.CertPool
	rootCerts   map[string]*x509.Certificate // by Consul's root ID
	activeRoot  string
	trustDomain string
}

// IdentityOptions are the Identity's companions. All may be nil.
type IdentityOptions struct {
	// Reach is told the outcome of every query.
	Reach *Reachability
	// Failures counts failed queries to the agent, labelled op ("leaf",
	// "roots") and kind (see failureKind).
	Failures metrics.Counter
	// Refused counts refused handshakes, labelled side ("server": we
	// refused a client; "client": we refused a server) and reason
	// (no_certificate, untrusted, not_a_service, wrong_service).
	Refused metrics.Counter
	// Rotations counts certificate changes, labelled what ("leaf",
	// "roots").
	Rotations metrics.Counter
	// Logger gets one line per change: of certificates, and of the reason
	// handshakes are refused.
	Logger log.Logger
}

// NewIdentity starts watching the leaf certificate of service and the CA
// roots at the agent. Close stops it.
func NewIdentity(client *api.Client, service string, o IdentityOptions) *Identity {
	id := newIdentity(client, service, o)
	id.done.Add(2)
	go id.watch("roots", id.fetchRoots)
	go id.watch("leaf", id.fetchLeaf)
	return id
}

// newIdentity returns an Identity that sweeps its connections but watches
// nothing: tests set its state themselves.
func newIdentity(client *api.Client, service string, o IdentityOptions) *Identity {
	if o.Reach == nil {
		o.Reach = NewReachability(log.NewNopLogger())
	}
	if o.Logger == nil {
		o.Logger = log.NewNopLogger()
	}
	ctx, cancel := context.WithCancel(context.Background())
	id := &Identity{
		client:   client,
		service:  service,
		o:        o,
		ready:    make(chan struct{}),
		ctx:      ctx,
		cancel:   cancel,
		fetchWhy: lastReason{logger: o.Logger},
		conns:    map[*liveConn]struct{}{},
		rotated:  make(chan struct{}, 1),
		now:      time.Now,
	}
	id.state.Store(&identityState{})
	id.done.Add(1)
	go id.sweepLoop()
	return id
}

// Close stops the watches and waits for them.
func (id *Identity) Close() {
	id.cancel()
	id.done.Wait()
}

// Ready is closed once the member holds both a leaf and the roots; until
// then it neither forwards nor accepts mesh connections.
func (id *Identity) Ready() <-chan struct{} { return id.ready }

// IsReady reports whether Ready is closed.
func (id *Identity) IsReady() bool {
	select {
	case <-id.ready:
		return true
	default:
		return false
	}
}

// watch follows one of the agent's blocking queries until Close.
func (id *Identity) watch(op string, fetch func(q *api.QueryOptions) (uint64, error)) {
	defer id.done.Done()
	follow(id.ctx, op, id.service, id.o.Reach, id.o.Failures, &id.fetchWhy, fetch)
}

func (id *Identity) fetchRoots(q *api.QueryOptions) (uint64, error) {
	list, meta, err := id.client.Agent().ConnectCARoots(q)
	if err != nil {
		return 0, err
	}
	pool := x509.NewCertPool()
	certs := make(map[string]*x509.Certificate, len(list.Roots))
	for _, r := range list.Roots {
		c, err := parsePEMCert(r.RootCertPEM)
		if err != nil {
			return 0, fmt.Errorf("CA root %s: %w", r.ID, err)
		}
		pool.AddCert(c) // every current root, not only the active one
		certs[r.ID] = c
	}
	if len(certs) == 0 {
		return 0, errors.New("the agent lists no CA roots (is Connect enabled?)")
	}
	id.update("roots", func(s *identityState) bool {
		changed := s.activeRoot != list.ActiveRootID || len(s.rootCerts) != len(certs)
		for rid := range certs {
			if s.rootCerts[rid] == nil {
				changed = true
			}
		}
		s.roots, s.rootCerts, s.activeRoot, s.trustDomain = pool, certs, list.ActiveRootID, list.TrustDomain
		return changed
	})
	return meta.LastIndex, nil
}

func (id *Identity) fetchLeaf(q *api.QueryOptions) (uint64, error) {
	leaf, meta, err := id.client.Agent().ConnectCALeaf(id.service, q)
	if err != nil {
		return 0, err
	}
	cert, err := tls.X509KeyPair([]byte(leaf.CertPEM), []byte(leaf.PrivateKeyPEM))
	if err != nil {
		// Never quote the PEM: it holds the private key.
		return 0, errors.New("the agent's leaf certificate does not parse")
	}
	x, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return 0, errors.New("the agent's leaf certificate does not parse")
	}
	sid, ok := serviceID(x)
	if !ok {
		return 0, errors.New("the agent's leaf certificate has no SPIFFE service ID")
	}
	cert.Leaf = x
	id.update("leaf", func(s *identityState) bool {
		changed := s.leafSerial != leaf.SerialNumber
		s.cert, s.leaf, s.leafSerial, s.id = &cert, x, leaf.SerialNumber, sid
		return changed
	})
	return meta.LastIndex, nil
}

// update applies change to a copy of the state and publishes it. It logs
// and counts what changed, and closes Ready once leaf and roots are there.
func (id *Identity) update(what string, change func(*identityState) bool) {
	id.mu.Lock()
	s := *id.state.Load()
	changed := change(&s)
	id.state.Store(&s)
	id.mu.Unlock()
	if changed && what == "roots" {
		select {
		case id.rotated <- struct{}{}:
		default:
		}
	}
	if changed {
		if id.o.Rotations != nil {
			id.o.Rotations.With("what", what).Add(1)
		}
		v := id.View()
		id.o.Logger.Log("certificate", what, "leaf_serial", v.LeafSerial, "leaf_root", v.LeafRoot, "active_root", v.ActiveRoot, "roots", len(v.Roots))
	}
	if s.cert != nil && s.roots != nil {
		id.once.Do(func() { close(id.ready) })
	}
}

// IdentityView is what /debug/mesh shows of the identity: IDs, serials and
// dates, never a certificate body or a key.
type IdentityView struct {
	Ready        bool      `json:"ready"`
	URI          string    `json:"uri,omitempty"`
	LeafSerial   string    `json:"leaf_serial,omitempty"`
	LeafNotAfter time.Time `json:"leaf_not_after,omitzero"`
	// LeafRoot is the ID of the root whose key signed the leaf.
	LeafRoot   string   `json:"leaf_root,omitempty"`
	ActiveRoot string   `json:"active_root,omitempty"`
	Roots      []string `json:"roots,omitempty"`
	Error      string   `json:"error,omitempty"`
}

// View returns the identity's current state.
func (id *Identity) View() IdentityView {
	s := id.state.Load()
	v := IdentityView{Ready: id.IsReady(), ActiveRoot: s.activeRoot, LeafSerial: s.leafSerial, Error: id.fetchWhy.get()}
	for rid, root := range s.rootCerts {
		v.Roots = append(v.Roots, rid)
		if s.leaf != nil && s.leaf.CheckSignatureFrom(root) == nil {
			v.LeafRoot = rid
		}
	}
	if s.leaf != nil {
		v.URI = s.id.String()
		v.LeafNotAfter = s.leaf.NotAfter
	}
	return v
}

// Service returns the service this identity is of.
func (id *Identity) Service() string { return id.service }

// ServerTLS returns the mesh listener's TLS configuration: our current
// leaf, and every client must present a certificate that chains to a
// current root and names a service of our trust domain. Which services may
// call us is decided per request (see Intentions), not here.
func (id *Identity) ServerTLS() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return id.certificate()
		},
		// Requested, not required, so that a client without one reaches
		// VerifyConnection and is counted and logged like any refusal.
		ClientAuth:       tls.RequestClientCert,
		VerifyConnection: func(cs tls.ConnectionState) error { return id.verify("server", cs, "") },
	}
}

// ClientTLS returns the TLS configuration for calling instances of
// service: our leaf as client certificate, and the server must chain to a
// current root and be exactly spiffe://<trust domain>/ns/default/dc/<our
// dc>/svc/<service>. Go's own verification is off (InsecureSkipVerify)
// because mesh certificates name no host; VerifyConnection does all of it.
// VerifyConnection, unlike VerifyPeerCertificate, also runs on resumed
// sessions.
func (id *Identity) ClientTLS(service string) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return id.certificate()
		},
		VerifyConnection: func(cs tls.ConnectionState) error { return id.verify("client", cs, service) },
	}
}

// errNotReady is every handshake's answer until the first leaf arrives.
var errNotReady = errors.New("no Connect certificate from the agent yet")

func (id *Identity) certificate() (*tls.Certificate, error) {
	if s := id.state.Load(); s.cert != nil {
		return s.cert, nil
	}
	return nil, errNotReady
}

// verify checks the peer of one handshake on side: a certificate chained to
// a current root, with a SPIFFE service ID of our trust domain and, when
// want is set, of that service in our datacenter.
func (id *Identity) verify(side string, cs tls.ConnectionState, want string) error {
	reason, err := id.state.Load().check(cs.PeerCertificates, want, id.now())
	id.refused(side, reason, err)
	return err
}

// refused counts and logs, boundedly, a refusal on side; err nil records
// a pass.
func (id *Identity) refused(side, reason string, err error) {
	r := &id.asServer
	if side == "client" {
		r = &id.asClient
	}
	if err == nil {
		r.clear()
		return
	}
	if id.o.Refused != nil {
		id.o.Refused.With("side", side, "reason", reason).Add(1)
	}
	if r.note(reason, time.Now()) {
		id.o.Logger.Log("side", side, "msg", "refused a TLS peer", "reason", reason, "detail", clip.String(err.Error(), 256))
	}
}

// check judges a peer's certificate chain against this snapshot at now:
// it must chain to a current root, be valid at now, and name a service of
// our trust domain; with want set, that service in our namespace and
// datacenter. It is a pure function of its arguments.
func (s *identityState) check(peers []*x509.Certificate, want string, now time.Time) (reason string, err error) {
	if s.roots == nil {
		return "untrusted", errNotReady
	}
	if len(peers) == 0 {
		return "no_certificate", errors.New("the peer presented no certificate")
	}
	peer := peers[0]
	intermediates := x509.NewCertPool()
	for _, c := range peers[1:] {
		intermediates.AddCert(c)
	}
	if _, err := peer.Verify(x509.VerifyOptions{
		Roots:         s.roots,
		Intermediates: intermediates,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		var invalid x509.CertificateInvalidError
		if errors.As(err, &invalid) && invalid.Reason == x509.Expired {
			return "expired", fmt.Errorf("the peer's certificate is not valid now: %w", err)
		}
		return "untrusted", fmt.Errorf("the peer's certificate does not chain to a Connect root: %w", err)
	}
	sid, ok := serviceID(peer)
	if !ok || !strings.EqualFold(sid.trustDomain, s.trustDomain) {
		return "not_a_service", fmt.Errorf("the peer's certificate names no service of trust domain %s", s.trustDomain)
	}
	if want != "" && (sid.service != want || sid.namespace != "default" || sid.dc != s.id.dc || !samePartition(sid.partition, s.id.partition)) {
		return "wrong_service", fmt.Errorf("the peer is %s, not service %s in dc %s", sid, want, s.id.dc)
	}
	return "", nil
}

// samePartition compares admin partitions, "" being the default one, which
// leaves do not name.
func samePartition(a, b string) bool {
	if a == "" {
		a = "default"
	}
	if b == "" {
		b = "default"
	}
	return a == b
}

// track records a connection whose peer passed verify, until untrack.
func (id *Identity) track(side string, peers []*x509.Certificate, want string, close func() error) (untrack func()) {
	// No roots yet: the first sweep checks it in full, whichever roots
	// its handshake was verified against.
	c := &liveConn{side: side, peers: peers, want: want, close: close}
	id.connsMu.Lock()
	id.conns[c] = struct{}{}
	id.connsMu.Unlock()
	return func() {
		id.connsMu.Lock()
		delete(id.conns, c)
		id.connsMu.Unlock()
	}
}

// sweepLoop checks the connections in use every sweepEvery, and at once
// when the roots change, until Close.
func (id *Identity) sweepLoop() {
	defer id.done.Done()
	t := time.NewTicker(sweepEvery)
	defer t.Stop()
	for {
		select {
		case <-id.ctx.Done():
			return
		case <-t.C:
		case <-id.rotated:
		}
		id.sweep()
	}
}

// sweep closes every connection whose peer no longer passes the check:
// its leaf expired, or its root left the bundle.
func (id *Identity) sweep() {
	s, now := id.state.Load(), id.now()
	var again []*liveConn
	id.connsMu.Lock()
	for c := range id.conns {
		if c.roots != s.roots || !now.Before(c.until) {
			again = append(again, c)
		}
	}
	id.connsMu.Unlock()
	for _, c := range again {
		reason, err := s.check(c.peers, c.want, now)
		id.connsMu.Lock()
		_, open := id.conns[c]
		if err == nil {
			c.roots, c.until = s.roots, validUntil(c.peers)
		} else {
			delete(id.conns, c)
		}
		id.connsMu.Unlock()
		if err != nil && open {
			id.refused(c.side, reason, fmt.Errorf("closed a connection in use: %w", err))
			c.close()
		}
	}
}

// validUntil is when the first certificate of a chain expires.
func validUntil(chain []*x509.Certificate) time.Time {
	var until time.Time
	for i, c := range chain {
		if i == 0 || c.NotAfter.Before(until) {
			until = c.NotAfter
		}
	}
	return until
}

// Conns returns how many mesh connections are being watched.
func (id *Identity) Conns() int {
	id.connsMu.Lock()
	defer id.connsMu.Unlock()
	return len(id.conns)
}

// Listener returns the mesh listener over inner: TLS with ServerTLS, and
// every connection whose client passed the handshake is watched, so that
// it is closed once that client's leaf expires or its root is removed.
func (id *Identity) Listener(inner net.Listener) net.Listener {
	return &meshListener{Listener: inner, id: id, conf: id.ServerTLS()}
}

type meshListener struct {
	net.Listener
	id   *Identity
	conf *tls.Config
}

func (l *meshListener) Accept() (net.Conn, error) {
	raw, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	c := &watchedConn{Conn: raw, id: l.id}
	conf := l.conf.Clone()
	conf.VerifyConnection = func(cs tls.ConnectionState) error {
		if err := l.id.verify("server", cs, ""); err != nil {
			return err
		}
		c.watch(l.id.track("server", cs.PeerCertificates, "", raw.Close))
		return nil
	}
	return tls.Server(c, conf), nil
}

// watchedConn is a raw connection that stops being watched when closed.
// It also counts a client that does not speak TLS at all.
type watchedConn struct {
	net.Conn
	id      *Identity
	read    bool // the first bytes have been read
	mu      sync.Mutex
	closed  bool
	untrack func()
}

// tlsHandshakeRecord is the first byte of every TLS client hello.
const tlsHandshakeRecord = 0x16

func (c *watchedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if !c.read && n > 0 {
		c.read = true
		if p[0] != tlsHandshakeRecord {
			c.id.refused("server", "not_tls", errors.New("the peer does not speak TLS on the mesh port (plain HTTP?)"))
		}
	}
	return n, err
}

func (c *watchedConn) watch(untrack func()) {
	c.mu.Lock()
	closed := c.closed
	if !closed {
		c.untrack = untrack
	}
	c.mu.Unlock()
	if closed {
		untrack()
	}
}

func (c *watchedConn) Close() error {
	c.mu.Lock()
	c.closed = true
	untrack := c.untrack
	c.untrack = nil
	c.mu.Unlock()
	if untrack != nil {
		untrack()
	}
	return c.Conn.Close()
}

// TrackClient watches a client connection to an instance of service whose
// handshake passed: http1.Transport calls it (see its Track field), and
// the returned func when the connection closes.
func (id *Identity) TrackClient(service string) func(sock net.Conn, cs tls.ConnectionState) func() {
	return func(sock net.Conn, cs tls.ConnectionState) func() {
		return id.track("client", cs.PeerCertificates, service, sock.Close)
	}
}
