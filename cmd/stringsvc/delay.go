package main

import (
	"context"
	"time"

	"github.com/kitmesh/stringsvc/service"
)

// delayMiddleware makes this member slow on purpose (-debug.delay), so that
// benchmarks and drills can compare balancers with one slow upstream. It
// honours the caller's deadline.
func delayMiddleware(d time.Duration) service.Middleware {
	return func(next service.StringService) service.StringService {
		return delayed{d: d, next: next}
	}
}

type delayed struct {
	d    time.Duration
	next service.StringService
}

func (s delayed) wait(ctx context.Context) {
	t := time.NewTimer(s.d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

func (s delayed) Uppercase(ctx context.Context, in string) (string, error) {
	s.wait(ctx)
	return s.next.Uppercase(ctx, in)
}

func (s delayed) Count(ctx context.Context, in string) int {
	s.wait(ctx)
	return s.next.Count(ctx, in)
}
