// Package e2e holds the end-to-end tests of stringsvc: the Compose and
// swarm deployments with the offline images, the users' Dockerfile, the
// Consul UI in a real browser, and the deployment files' YAML. Run them
// with `go test ./...` in this directory (`make test` does, after the
// service's own tests, so that Docker tests never overlap with them).
//
// This directory is a Go module of its own, github.com/kitmesh/stringsvc/internal/e2e,
// so that the service's module carries no browser, chart or YAML library:
// chromedp and go.yaml.in/yaml are required only here, and gonum/plot only
// by the benchmark in cmd/bench (built by `make bench`). The module
// requires the service through a replace of ../.., and its path lies below
// the service's, so it may import the service's internal packages
// (internal/clustertest, internal/load, ...), as gopls imports
// x/tools/internal.
//
// The tests address the repository as ../.. (compose files, deploy/,
// bin/artifacts), as they did from cmd/stringsvc.
package e2e
