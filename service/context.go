package service

import "context"

type localOnlyKey struct{}

// WithLocalOnly marks ctx so that the proxying middleware serves the call on
// this instance. Transports set it for requests that were already forwarded
// once, which keeps the mesh free of forwarding loops.
func WithLocalOnly(ctx context.Context) context.Context {
	return context.WithValue(ctx, localOnlyKey{}, true)
}

// LocalOnly reports whether ctx was marked by WithLocalOnly.
func LocalOnly(ctx context.Context) bool {
	v, _ := ctx.Value(localOnlyKey{}).(bool)
	return v
}
