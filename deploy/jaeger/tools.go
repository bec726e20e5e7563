//go:build tools

// Package tools pins the Jaeger command built by `make jaeger`.
package tools

import _ "github.com/jaegertracing/jaeger/cmd/jaeger"
