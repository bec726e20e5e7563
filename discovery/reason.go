package discovery

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"

	"github.com/go-kit/log"
	"github.com/hashicorp/consul/api"

	"github.com/kitmesh/stringsvc/internal/clip"
)

// permission names the ACL permission each operation of ours needs, for
// the reason we log when Consul answers 403.
func permission(op string) string {
	switch op {
	case "register", "deregister":
		return "service:write"
	case "watch":
		return "service:read"
	case "advertise", "zone":
		return "agent:read"
	default: // the discovery query
		return "service:read and node:read"
	}
}

// describe says in one line why op failed, for an operator: which
// permission a 403 lacks, what Consul said of a 400, or that it did not
// answer. It never quotes a token: Consul's own 403 text (which names the
// token's accessor) is left out.
func describe(op, service string, err error) string {
	var status api.StatusError
	switch {
	case errors.As(err, &status) && status.Code == 403 && op == "advertise":
		return "ACL token lacks agent:read (Consul answered 403 to advertise); advertising the route to the agent"
	case errors.As(err, &status) && status.Code == 403:
		return fmt.Sprintf("ACL token lacks %s on %s (Consul answered 403 to %s)", permission(op), service, op)
	case errors.As(err, &status) && status.Code >= 400 && status.Code < 500:
		return fmt.Sprintf("Consul rejected the %s (%d): %s", op, status.Code, clip.String(strings.TrimSpace(status.Body), 256))
	case errors.As(err, &status) && strings.Contains(status.Body, "No cluster leader"):
		return fmt.Sprintf("Consul has no leader (it answered %d to %s)", status.Code, op)
	case errors.As(err, &status):
		// Without the server's address, which changes from one answer to
		// the next while a quorum is lost: one reason, one line.
		body := serverAddr.ReplaceAllString(strings.TrimSpace(status.Body), "<server>")
		return fmt.Sprintf("Consul failed the %s (%d): %s", op, status.Code, clip.String(body, 256))
	case errors.Is(err, errNoLeader):
		return "Consul has no leader yet"
	case errors.Is(err, errFiltered):
		return fmt.Sprintf("ACL token lacks service:read on %s (Consul answered the discovery query with nothing)", service)
	default:
		return "Consul unreachable: " + clip.String(err.Error(), 256)
	}
}

// serverAddr matches the IPv4 or bracketed IPv6 address, with its port, of
// a Consul server named in an error.
var serverAddr = regexp.MustCompile(`\b(\d{1,3}\.){3}\d{1,3}(:\d+)?\b|\[[0-9A-Fa-f:.%]+\](:\d+)?`)

// errFiltered says Consul left entries out of an answer for the token.
var errFiltered = errors.New("results filtered by ACLs")

// failureKind sorts a failed call for the failures metric: "denied" (403,
// an ACL permission missing), "rejected" (another 4xx), "failed" (5xx),
// "no_leader", or "unreachable".
func failureKind(err error) string {
	var status api.StatusError
	switch {
	case errors.As(err, &status) && status.Code == 403:
		return "denied"
	case errors.As(err, &status) && status.Code < 500:
		return "rejected"
	case errors.As(err, &status):
		return "failed"
	case errors.Is(err, errNoLeader):
		return "no_leader"
	default:
		return "unreachable"
	}
}

// lastReason remembers why something currently fails, and logs a reason
// when it differs from the last one: a retry loop against a refusing agent,
// or a token file that is not there yet, writes one line per reason, not
// one per attempt.
type lastReason struct {
	mu     sync.Mutex
	last   string
	logger log.Logger
}

// set records why; when it is new and say is set, it logs keyvals and
// "reason".
func (r *lastReason) set(why string, say bool, keyvals ...interface{}) {
	r.mu.Lock()
	changed := why != r.last
	r.last = why
	r.mu.Unlock()
	if changed && say {
		r.logger.Log(append(keyvals, "reason", why)...)
	}
}

// clear records that the thing works again.
func (r *lastReason) clear() { r.set("", false) }

// get returns the current reason, "" when none.
func (r *lastReason) get() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last
}
