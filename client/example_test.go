package client_test

import (
	"context"
	"fmt"
	"net/http/httptest"

	"github.com/kitmesh/stringsvc/client"
	"github.com/kitmesh/stringsvc/service"
	"github.com/kitmesh/stringsvc/transport"
	"github.com/kitmesh/stringsvc/transport/endpoints"
)

// A Go program calls the mesh with the address of its Consul agent; the
// client follows the passing instances of stringsvc until ctx is done.
func ExampleNew() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	svc, err := client.New(ctx, "127.0.0.1:8500")
	if err != nil {
		fmt.Println(err)
		return
	}
	v, err := svc.Uppercase(ctx, "hello")
	fmt.Println(v, err)
}

// A fixed list of instances gets the same balancing and retries. The
// endpoints' Count returns the error that StringService.Count cannot.
func ExampleNewFixedEndpoints() {
	// Two members, here in-process.
	a := httptest.NewServer(transport.NewHTTPHandler(endpoints.New(service.NewBasicService()), transport.HandlerOptions{}))
	defer a.Close()
	b := httptest.NewServer(transport.NewHTTPHandler(endpoints.New(service.NewBasicService()), transport.HandlerOptions{}))
	defer b.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	eps, err := client.NewFixedEndpoints(ctx, []string{a.URL, b.URL})
	if err != nil {
		fmt.Println(err)
		return
	}
	v, err := eps.Uppercase(ctx, "hello, mesh")
	fmt.Println(v, err)
	n, err := eps.Count(ctx, "hello, mesh")
	fmt.Println(n, err)
	_, err = eps.Uppercase(ctx, "")
	fmt.Println(err)
	// Output:
	// HELLO, MESH <nil>
	// 11 <nil>
	// empty string
}
