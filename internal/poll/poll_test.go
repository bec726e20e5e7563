package poll

import (
	"errors"
	"testing"
	"time"
)

func TestUntil(t *testing.T) {
	calls := 0
	if err := Until(time.Minute, time.Millisecond, func() error {
		if calls++; calls < 3 {
			return errors.New("not yet")
		}
		return nil
	}); err != nil || calls != 3 {
		t.Errorf("want nil after 3 calls, have %v after %d", err, calls)
	}
	errNever := errors.New("never")
	if err := Until(10*time.Millisecond, time.Millisecond, func() error { return errNever }); !errors.Is(err, errNever) {
		t.Errorf("want the last error wrapped, have %v", err)
	}
}
