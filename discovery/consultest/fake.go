package consultest

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// Fake is an httptest stand-in for the few Consul HTTP endpoints that the
// member's watch client and registrar use. It is for unit tests of our own
// Consul logic (backoff, index handling, outages) without a Consul binary,
// beside, never instead of, the integration tests against a real agent.
//
// Served: GET /v1/health/service/<name> (blocking on ?index=), GET
// /v1/status/leader, GET /v1/agent/self, PUT /v1/agent/service/register,
// PUT /v1/agent/service/deregister/<id> and GET /v1/agent/service/<id>.
type Fake struct {
	// Addr is the fake's "127.0.0.1:port", for api.Config.Address.
	Addr string

	srv      *httptest.Server
	mu       sync.Mutex
	index    uint64
	services map[string][]*api.ServiceEntry
	agent    map[string]*api.AgentServiceRegistration
	failWith int // answer every request with this status, if not 0
	failPath map[string]fakeFailure
	agentIP  string
	changed  chan struct{}
	requests []FakeRequest
}

// FakeRequest is one request the fake received.
type FakeRequest struct {
	Method, Path string
	Index        string // the ?index= of a blocking query, "" if none
	At           time.Time
	Status       int // 0 while the request is in flight
}

// NewFake starts a fake agent at index 1 with no services; it stops when
// the test ends.
func NewFake(t testing.TB) *Fake {
	t.Helper()
	f := &Fake{
		index:    1,
		services: map[string][]*api.ServiceEntry{},
		agent:    map[string]*api.AgentServiceRegistration{},
		changed:  make(chan struct{}),
		failPath: map[string]fakeFailure{},
		agentIP:  "127.0.0.1",
	}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	f.Addr = strings.TrimPrefix(f.srv.URL, "http://")
	t.Cleanup(f.srv.Close)
	return f
}

// SetService replaces the passing instances of name, as "host:port"
// pairs given as (address, port) entries, and bumps the index.
func (f *Fake) SetService(name string, entries ...*api.ServiceEntry) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.services[name] = entries
	f.bump(f.index + 1)
}

// Restart forgets every registration and sets the index back to index, as
// a restarted dev agent does.
func (f *Fake) Restart(index uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.agent = map[string]*api.AgentServiceRegistration{}
	f.bump(index)
}

// Fail makes every request answer status (an outage); 0 ends it.
func (f *Fake) Fail(status int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failWith = status
	f.bump(f.index) // wake blocking queries so they see the outage
}

type fakeFailure struct {
	status int
	body   string
}

// FailPath makes requests to path answer status and body, as an agent
// that refuses one operation does (a 403 for a missing ACL permission);
// status 0 ends it.
func (f *Fake) FailPath(path string, status int, body string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if status == 0 {
		delete(f.failPath, path)
		return
	}
	f.failPath[path] = fakeFailure{status, body}
}

// SetAgentAddr sets the address the agent says it advertises
// (/v1/agent/self, Member.Addr); it starts as 127.0.0.1.
func (f *Fake) SetAgentAddr(ip string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.agentIP = ip
}

// Requests returns what the fake received so far.
func (f *Fake) Requests() []FakeRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]FakeRequest(nil), f.requests...)
}

// Registered returns the registration the agent holds under id, or nil.
func (f *Fake) Registered(id string) *api.AgentServiceRegistration {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.agent[id]
}

// bump sets the index and wakes every blocking query. f.mu is held.
func (f *Fake) bump(index uint64) {
	f.index = index
	close(f.changed)
	f.changed = make(chan struct{})
}

// Entry returns a passing service entry for tests to pass to SetService.
func Entry(id, address string, port int) *api.ServiceEntry {
	return &api.ServiceEntry{
		Node:    &api.Node{Node: "fake", Address: "127.0.0.1"},
		Service: &api.AgentService{ID: id, Service: "svc", Address: address, Port: port},
	}
}

func (f *Fake) serve(w http.ResponseWriter, r *http.Request) {
	// Recorded on arrival, so that a test sees a blocking query while it
	// waits; its status is filled in when it returns.
	req := FakeRequest{Method: r.Method, Path: r.URL.Path, Index: r.URL.Query().Get("index"), At: time.Now()}
	f.mu.Lock()
	n := len(f.requests)
	f.requests = append(f.requests, req)
	status := f.failWith
	failure, failPath := f.failPath[r.URL.Path]
	agentIP := f.agentIP
	f.mu.Unlock()
	req.Status = http.StatusOK
	defer func() {
		f.mu.Lock()
		f.requests[n].Status = req.Status
		f.mu.Unlock()
	}()
	if status != 0 {
		req.Status = status
		http.Error(w, "fake outage", status)
		return
	}
	if failPath {
		req.Status = failure.status
		http.Error(w, failure.body, failure.status)
		return
	}
	switch path := r.URL.Path; {
	case path == "/v1/agent/self":
		writeFakeJSON(w, 1, map[string]interface{}{
			"Config": map[string]interface{}{"Datacenter": "dc1", "NodeName": "fake"},
			"Member": map[string]interface{}{"Name": "fake", "Addr": agentIP},
		})
	case path == "/v1/status/leader":
		writeFakeJSON(w, 1, "127.0.0.1:8300")
	case strings.HasPrefix(path, "/v1/health/service/"):
		req.Status = f.serveHealth(w, r, strings.TrimPrefix(path, "/v1/health/service/"))
	case path == "/v1/agent/service/register" && r.Method == http.MethodPut:
		var reg api.AgentServiceRegistration
		if err := json.NewDecoder(r.Body).Decode(&reg); err != nil {
			req.Status = http.StatusBadRequest
			http.Error(w, err.Error(), req.Status)
			return
		}
		f.mu.Lock()
		f.agent[reg.ID] = &reg
		f.bump(f.index + 1)
		f.mu.Unlock()
	case strings.HasPrefix(path, "/v1/agent/service/deregister/"):
		f.mu.Lock()
		delete(f.agent, strings.TrimPrefix(path, "/v1/agent/service/deregister/"))
		f.bump(f.index + 1)
		f.mu.Unlock()
	case strings.HasPrefix(path, "/v1/agent/service/"):
		f.mu.Lock()
		reg := f.agent[strings.TrimPrefix(path, "/v1/agent/service/")]
		f.mu.Unlock()
		if reg == nil {
			req.Status = http.StatusNotFound
			http.Error(w, "unknown service ID", req.Status)
			return
		}
		writeFakeJSON(w, 1, api.AgentService{ID: reg.ID, Service: reg.Name, Address: reg.Address, Port: reg.Port, Tags: reg.Tags, Meta: reg.Meta})
	default:
		req.Status = http.StatusNotFound
		http.Error(w, "the fake does not serve "+path, req.Status)
	}
}

// serveHealth answers at once unless ?index= is at or past the current
// index; then it blocks until a change, the wait time, or the client
// hanging up, as Consul does.
func (f *Fake) serveHealth(w http.ResponseWriter, r *http.Request, name string) int {
	wait := 5 * time.Minute
	if d, err := time.ParseDuration(r.URL.Query().Get("wait")); err == nil {
		wait = d
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		f.mu.Lock()
		index, entries, changed, failing := f.index, f.services[name], f.changed, f.failWith != 0
		f.mu.Unlock()
		if failing {
			http.Error(w, "fake outage", http.StatusInternalServerError)
			return http.StatusInternalServerError
		}
		asked, _ := strconv.ParseUint(r.URL.Query().Get("index"), 10, 64)
		if asked == 0 || asked < index {
			if entries == nil {
				entries = []*api.ServiceEntry{}
			}
			writeFakeJSON(w, index, entries)
			return http.StatusOK
		}
		select {
		case <-changed:
		case <-timer.C:
			writeFakeJSON(w, index, entries)
			return http.StatusOK
		case <-r.Context().Done():
			return 499
		}
	}
}

func writeFakeJSON(w http.ResponseWriter, index uint64, v interface{}) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Consul-Index", strconv.FormatUint(index, 10))
	w.Header().Set("X-Consul-KnownLeader", "true")
	json.NewEncoder(w).Encode(v)
}
