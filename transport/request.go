package transport

import (
	"context"
	"net/http"
	"sync/atomic"
)

type exchangeKey struct{}

// exchange is what the context of an endpoint call keeps of its HTTP
// exchange: the request, which the mesh's routes match on (method, path,
// headers, query), and the mesh target that a forward took, for the
// request's log line. It is one allocation, as the context.WithValue it
// replaces was.
type exchange struct {
	context.Context
	r *http.Request
	// Written by the router and the proxying middleware, read by the log
	// line; atomic, as an abandoned attempt may still be running.
	target, fallback atomic.Pointer[string]
}

func (e *exchange) Value(key any) any {
	if key == (exchangeKey{}) {
		return e
	}
	return e.Context.Value(key)
}

// exchangeOf returns the exchange that ctx serves, or nil.
func exchangeOf(ctx context.Context) *exchange {
	e, _ := ctx.Value(exchangeKey{}).(*exchange)
	return e
}

// withRequest keeps the HTTP request in the context of its endpoint call,
// as Go kit's PopulateRequestContext keeps parts of it.
func withRequest(ctx context.Context, r *http.Request) context.Context {
	return &exchange{Context: ctx, r: r}
}

// RequestFrom returns the HTTP request that ctx serves, or nil. Its body
// is the endpoint's; read only the method, URL and headers.
func RequestFrom(ctx context.Context) *http.Request {
	if e := exchangeOf(ctx); e != nil {
		return e.r
	}
	return nil
}

// NoteTarget records, for the log line of the request that ctx serves,
// the mesh target its forward took; the last one noted wins (a failover
// notes each). target must not change afterwards: it is kept, not copied.
// Outside an HTTP request it does nothing.
func NoteTarget(ctx context.Context, target *string) {
	if e := exchangeOf(ctx); e != nil {
		e.target.Store(target)
	}
}

// NoteFallback records, likewise, why the request that ctx serves was
// served locally after all.
func NoteFallback(ctx context.Context, reason string) {
	if e := exchangeOf(ctx); e != nil {
		e.fallback.Store(&reason)
	}
}

// Noted returns the target and fallback reason noted for ctx's request,
// nil for what was not noted. They are pointers, so that a log line can
// carry them without copying.
func Noted(ctx context.Context) (target, fallback *string) {
	if e := exchangeOf(ctx); e != nil {
		return e.target.Load(), e.fallback.Load()
	}
	return nil, nil
}
