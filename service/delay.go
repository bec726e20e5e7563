package service

import (
	"context"
	"time"
)

// DelayMiddleware makes this instance slow on purpose. It is a drill-only
// tool, behind -debug.delay: benchmarks and fault drills use it to compare
// balancers with one slow upstream. Never set it in production. It honours
// the caller's deadline: Uppercase fails once it passes, and Count, which
// cannot fail, answers at the deadline.
func DelayMiddleware(d time.Duration) Middleware {
	return func(next StringService) StringService { return delayMiddleware{d, next} }
}

type delayMiddleware struct {
	d    time.Duration
	next StringService
}

// wait returns ctx's error if the deadline came first.
func (mw delayMiddleware) wait(ctx context.Context) error {
	t := time.NewTimer(mw.d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Uppercase fails once the caller's deadline has passed: the caller no
// longer waits for the answer, and a slow instance must not look as if it
// answered in time.
func (mw delayMiddleware) Uppercase(ctx context.Context, s string) (string, error) {
	if err := mw.wait(ctx); err != nil {
		return "", err
	}
	return mw.next.Uppercase(ctx, s)
}

func (mw delayMiddleware) Count(ctx context.Context, s string) int {
	mw.wait(ctx)
	return mw.next.Count(ctx, s)
}
