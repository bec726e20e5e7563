package service

import (
	"context"
	"time"
)

// DelayMiddleware makes this instance slow on purpose. It is a drill-only
// tool, behind -debug.delay: benchmarks and fault drills use it to compare
// balancers with one slow upstream. Never set it in production. It honours
// the caller's deadline.
func DelayMiddleware(d time.Duration) Middleware {
	return func(next StringService) StringService { return delayMiddleware{d, next} }
}

type delayMiddleware struct {
	d    time.Duration
	next StringService
}

func (mw delayMiddleware) wait(ctx context.Context) {
	t := time.NewTimer(mw.d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

func (mw delayMiddleware) Uppercase(ctx context.Context, s string) (string, error) {
	mw.wait(ctx)
	return mw.next.Uppercase(ctx, s)
}

func (mw delayMiddleware) Count(ctx context.Context, s string) int {
	mw.wait(ctx)
	return mw.next.Count(ctx, s)
}
