// Package logsink is where a member's log lines go: operational lines at
// once, request lines buffered and flushed periodically, in one order.
//
// It also holds the two guards of what reaches the log: Sanitize, for
// values a client controls, and NewErrorLog, for net/http's own lines.
//
// It imports only the standard library, Go kit's log, x/time/rate and
// internal/clip.
package logsink

import (
	"bufio"
	"io"
	"sync"
	"time"
)

// Sink is where every log line goes. Operational lines (start, Consul
// state, breakers, shutdown) are written at once. Request lines, one per
// request, are buffered and flushed every FlushEvery, which took a write
// system call off the request path; at most FlushEvery of them can be lost
// in a crash. One mutex orders both kinds, so lines never interleave.
type Sink struct {
	mu  sync.Mutex
	w   io.Writer
	buf *bufio.Writer
}

// FlushEvery is how often a member flushes its request lines.
const FlushEvery = 100 * time.Millisecond

// New returns a sink writing to w.
func New(w io.Writer) *Sink {
	return &Sink{w: w, buf: bufio.NewWriterSize(w, 64<<10)}
}

// Write writes p at once, after whatever is buffered.
func (s *Sink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buf.Flush()
	return s.w.Write(p)
}

// Buffered returns a writer whose lines wait for the next flush.
func (s *Sink) Buffered() io.Writer { return bufferedSink{s} }

// Flush writes out the buffered lines.
func (s *Sink) Flush() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buf.Flush()
}

// FlushPeriodically flushes every d until stop is closed, then once more.
func (s *Sink) FlushPeriodically(d time.Duration, stop <-chan struct{}) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			s.Flush()
		case <-stop:
			s.Flush()
			return
		}
	}
}

type bufferedSink struct{ s *Sink }

func (b bufferedSink) Write(p []byte) (int, error) {
	b.s.mu.Lock()
	defer b.s.mu.Unlock()
	return b.s.buf.Write(p)
}
