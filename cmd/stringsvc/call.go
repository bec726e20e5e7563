package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/kitmesh/stringsvc/client"
	"github.com/kitmesh/stringsvc/transport"
	"github.com/kitmesh/stringsvc/transport/endpoints"
)

// call is the command-line client: `stringsvc call uppercase "hello"`, to
// one member, or with -consul through the mesh as package client calls it.
// It works inside images that have no curl.
func call(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("call", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:8080", "member to call, host:port or URL")
	consul := fs.String("consul", "", "call the passing instances in this Consul agent's catalog instead of -addr")
	serviceName := fs.String("service", "stringsvc", "with -consul: the service to call")
	connectAs := fs.String("connect", "", "with -consul: call the members' mesh ports as this Connect service (mutual TLS; intentions decide)")
	tokenFile := fs.String("token-file", "", "with -consul: file holding the ACL token (default $CONSUL_HTTP_TOKEN_FILE; $CONSUL_HTTP_TOKEN otherwise)")
	timeout := fs.Duration("timeout", 5*time.Second, "give up after this long")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: stringsvc call [-addr host:port | -consul host:port [-connect name]] uppercase|count STRING")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		return nil
	} else if err != nil {
		return err
	}
	if fs.NArg() != 2 {
		fs.Usage()
		return fmt.Errorf("call: want a method and a string, have %q", fs.Args())
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	var (
		eps endpoints.Set
		err error
	)
	if *consul != "" {
		if *tokenFile == "" {
			*tokenFile = getenv("CONSUL_HTTP_TOKEN_FILE")
		}
		opts := []client.Option{client.WithService(*serviceName),
			client.WithToken(getenv("CONSUL_HTTP_TOKEN")), client.WithTokenFile(*tokenFile),
			client.WithRetries(3, *timeout, *timeout)}
		if *connectAs != "" {
			opts = append(opts, client.WithConnect(*connectAs))
		}
		eps, err = client.NewEndpoints(ctx, *consul, opts...)
	} else {
		eps, err = transport.MakeClientEndpoints(*addr)
	}
	if err != nil {
		return err
	}
	switch method, s := fs.Arg(0), fs.Arg(1); method {
	case "uppercase":
		v, err := eps.Uppercase(ctx, s)
		if err != nil {
			return fmt.Errorf("uppercase: %w", err)
		}
		fmt.Fprintln(stdout, v)
	case "count":
		n, err := eps.Count(ctx, s)
		if err != nil {
			return fmt.Errorf("count: %w", err)
		}
		fmt.Fprintln(stdout, n)
	default:
		return fmt.Errorf("call: unknown method %q (want uppercase or count)", method)
	}
	return nil
}
