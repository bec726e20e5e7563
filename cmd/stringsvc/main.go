// Command stringsvc runs one member of the string service mesh: it serves
// Uppercase and Count over HTTP, registers itself in Consul and forwards
// Uppercase across the passing members it discovers there.
package main

import (
	"context"
	"fmt"
	"os"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "stringsvc: %v\n", err)
		os.Exit(1)
	}
}
