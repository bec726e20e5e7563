// Package poll waits for a condition with a deadline. It is the one
// poll-until-deadline helper of the tests, the benchmark and the dev Consul
// starter: nothing here waits by sleeping a fixed time and hoping.
//
// It imports only the standard library.
package poll

import (
	"fmt"
	"time"
)

// Until calls cond every interval until it returns nil, and returns nil.
// Once timeout has passed it returns cond's last error.
func Until(timeout, interval time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not true after %v: %w", timeout, err)
		}
		time.Sleep(interval)
	}
}
