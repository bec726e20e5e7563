// Command bench measures a small stringsvc mesh on loopback and prints one
// Markdown report (see BENCHMARKS.md and `make bench`).
//
// It starts a dev Consul and real members, a plain net/http baseline that
// does the same JSON work, and drives them with the in-repo load generator,
// alternating the paths in every round so that machine drift cancels out.
//
// It lives in the end-to-end module (internal/e2e) because its charts need
// gonum/plot, which the service's module must not carry. Run it from the
// top of the repository, as `make bench` does: its default binaries are
// bin/..., and -gobench runs `go test -bench` on ./cmd/stringsvc there.
package main
