// Package archtest holds no code, only the test that turns the import rule
// of every package's doc.go into a check over `go list -deps`, so that a
// wrong import fails `make test`.
package archtest
