package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/kitmesh/stringsvc/transport"
)

// call is the command-line client: `stringsvc call uppercase "hello"`. It
// uses transport's HTTP client (the one members forward with), and works
// inside images that have no curl.
func call(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("call", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:8080", "member to call, host:port or URL")
	timeout := fs.Duration("timeout", 5*time.Second, "give up after this long")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: stringsvc call [-addr host:port] uppercase|count STRING")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		fs.Usage()
		return fmt.Errorf("call: want a method and a string, have %q", fs.Args())
	}
	client, err := transport.NewHTTPClient(*addr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	switch method, s := fs.Arg(0), fs.Arg(1); method {
	case "uppercase":
		v, err := client.Uppercase(ctx, s)
		if err != nil {
			return fmt.Errorf("uppercase: %w", err)
		}
		fmt.Fprintln(stdout, v)
	case "count":
		eps, err := transport.MakeClientEndpoints(*addr)
		if err != nil {
			return err
		}
		resp, err := eps.Count(ctx, transport.CountRequest{S: s})
		if err != nil {
			return fmt.Errorf("count: %w", err)
		}
		fmt.Fprintln(stdout, resp.(transport.CountResponse).V)
	default:
		return fmt.Errorf("call: unknown method %q (want uppercase or count)", method)
	}
	return nil
}
