package syncbuf

import (
	"fmt"
	"strings"
	"sync"
	"testing"
)

func TestConcurrentWrites(t *testing.T) {
	var b Buffer
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 100; j++ {
				fmt.Fprintln(&b, "line")
			}
		}()
	}
	wg.Wait()
	if have := strings.Count(b.String(), "line\n"); have != 800 {
		t.Errorf("want 800 whole lines, have %d", have)
	}
	b.Reset()
	if b.String() != "" {
		t.Errorf("after Reset: want empty, have %q", b.String())
	}
}
