package logsink

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kitmesh/stringsvc/internal/syncbuf"
)

func TestLogSinkKeepsOrderAndFlushes(t *testing.T) {
	var out syncbuf.Buffer
	s := New(&out)
	fmt.Fprintln(s.Buffered(), "request 1")
	if out.String() != "" {
		t.Fatalf("buffered line written at once: %q", out.String())
	}
	fmt.Fprintln(s, "operational")
	if have, want := out.String(), "request 1\noperational\n"; have != want {
		t.Errorf("want %q, have %q", want, have)
	}
	fmt.Fprintln(s.Buffered(), "request 2")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); s.FlushPeriodically(10*time.Millisecond, stop) }()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(out.String(), "request 2") && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if !strings.HasSuffix(out.String(), "request 2\n") {
		t.Errorf("periodic flush: want request 2 written, have %q", out.String())
	}
}
