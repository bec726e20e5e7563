package main

import (
	"bufio"
	"io"
	"sync"
	"time"
)

// logSink is where every log line goes. Operational lines (start, Consul
// state, breakers, shutdown) are written at once. Request lines, one per
// request, are buffered and flushed every flushEvery, which took a write
// system call off the request path; at most flushEvery of them can be lost
// in a crash. One mutex orders both kinds, so lines never interleave.
type logSink struct {
	mu  sync.Mutex
	w   io.Writer
	buf *bufio.Writer
}

const flushEvery = 100 * time.Millisecond

func newLogSink(w io.Writer) *logSink {
	return &logSink{w: w, buf: bufio.NewWriterSize(w, 64<<10)}
}

// Write writes p at once, after whatever is buffered.
func (s *logSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buf.Flush()
	return s.w.Write(p)
}

// Buffered returns a writer whose lines wait for the next flush.
func (s *logSink) Buffered() io.Writer { return bufferedSink{s} }

// Flush writes out the buffered lines.
func (s *logSink) Flush() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buf.Flush()
}

// FlushEvery flushes periodically until stop is closed, then once more.
func (s *logSink) FlushEvery(d time.Duration, stop <-chan struct{}) {
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

type bufferedSink struct{ s *logSink }

func (b bufferedSink) Write(p []byte) (int, error) {
	b.s.mu.Lock()
	defer b.s.mu.Unlock()
	return b.s.buf.Write(p)
}
