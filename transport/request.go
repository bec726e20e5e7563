package transport

import (
	"context"
	"net/http"
)

type requestKey struct{}

// withRequest keeps the HTTP request in the context of its endpoint call,
// as Go kit's PopulateRequestContext keeps parts of it: the mesh's routes
// match on its method, path, headers and query.
func withRequest(ctx context.Context, r *http.Request) context.Context {
	return context.WithValue(ctx, requestKey{}, r)
}

// RequestFrom returns the HTTP request that ctx serves, or nil. Its body
// is the endpoint's; read only the method, URL and headers.
func RequestFrom(ctx context.Context) *http.Request {
	r, _ := ctx.Value(requestKey{}).(*http.Request)
	return r
}
