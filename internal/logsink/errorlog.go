package logsink

import (
	stdlog "log"
	"strings"
	"sync"
	"time"

	"github.com/go-kit/log"
	"golang.org/x/time/rate"

	"github.com/kitmesh/stringsvc/internal/clip"
)

// maxErrorLogLine bounds one line of the standard library's logger: a
// peer's or a client's bytes can be in it.
const maxErrorLogLine = 512

// NewErrorLog returns a standard-library logger for http.Server.ErrorLog
// that writes into logger as logfmt ("msg"), at most burst lines at once
// and one per second after that. net/http logs there once per bad
// connection (TLS handshakes, a superfluous WriteHeader), so any client
// could otherwise write one raw stderr line per request. Dropped lines are
// counted in the next line written ("dropped"). A line is cut to 512
// bytes.
func NewErrorLog(logger log.Logger, burst int) *stdlog.Logger {
	return stdlog.New(&errorLog{logger: logger, limit: rate.NewLimiter(rate.Every(time.Second), burst)}, "", 0)
}

type errorLog struct {
	logger  log.Logger
	limit   *rate.Limiter
	mu      sync.Mutex
	dropped int
}

func (e *errorLog) Write(p []byte) (int, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.limit.Allow() {
		e.dropped++
		return len(p), nil
	}
	msg := clip.String(strings.TrimRight(string(p), "\n"), maxErrorLogLine)
	if e.dropped > 0 {
		e.logger.Log("msg", msg, "dropped", e.dropped)
		e.dropped = 0
	} else {
		e.logger.Log("msg", msg)
	}
	return len(p), nil
}
