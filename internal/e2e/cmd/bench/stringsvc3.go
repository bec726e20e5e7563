package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/go-kit/kit/circuitbreaker"
	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/ratelimit"
	"github.com/go-kit/kit/sd"
	"github.com/go-kit/kit/sd/lb"
	httptransport "github.com/go-kit/kit/transport/http"
	"github.com/sony/gobreaker"
	"golang.org/x/time/rate"
)

// The reference path: Go kit's stringsvc3 proxy, as users of Go kit would
// write it, re-created from Go kit's own parts (github.com/go-kit/examples,
// where it lives, is not on the module proxy). It is NOT stringsvc: a
// labelled yardstick for the hop path of `make bench`.
//
//	sd.FixedEndpointer over the instances, each a httptransport client
//	endpoint wrapped in circuitbreaker.Gobreaker (default settings) behind
//	ratelimit.NewErroringLimiter (raised from the tutorial's 1 per second,
//	so that it does not throttle), then lb.NewRoundRobin and
//	lb.Retry(3, 250ms), served by httptransport.NewServer.

type s3Request struct {
	S string `json:"s"`
}

type s3Response struct {
	V   string `json:"v"`
	Err string `json:"err,omitempty"`
}

// stringsvc3Handler serves POST /uppercase by forwarding it through the
// stringsvc3 proxy chain to instances ("host:port").
func stringsvc3Handler(instances []string) (http.Handler, error) {
	var endpoints sd.FixedEndpointer
	for _, instance := range instances {
		e, err := stringsvc3Client(instance)
		if err != nil {
			return nil, err
		}
		e = circuitbreaker.Gobreaker(gobreaker.NewCircuitBreaker(gobreaker.Settings{}))(e)
		e = ratelimit.NewErroringLimiter(rate.NewLimiter(rate.Inf, 1))(e)
		endpoints = append(endpoints, e)
	}
	balancer := lb.NewRoundRobin(endpoints)
	retry := lb.Retry(3, 250*time.Millisecond, balancer)
	return httptransport.NewServer(retry,
		func(_ context.Context, r *http.Request) (interface{}, error) {
			var req s3Request
			err := json.NewDecoder(r.Body).Decode(&req)
			return req, err
		},
		func(_ context.Context, w http.ResponseWriter, response interface{}) error {
			return json.NewEncoder(w).Encode(response)
		},
	), nil
}

// stringsvc3Client is the tutorial's makeUppercaseProxy: a Go kit HTTP
// client endpoint, GET with a JSON body.
func stringsvc3Client(instance string) (endpoint.Endpoint, error) {
	if !strings.HasPrefix(instance, "http") {
		instance = "http://" + instance
	}
	u, err := url.Parse(instance)
	if err != nil {
		return nil, err
	}
	if u.Path == "" {
		u.Path = "/uppercase"
	}
	return httptransport.NewClient("GET", u,
		func(_ context.Context, r *http.Request, request interface{}) error {
			var buf bytes.Buffer
			if err := json.NewEncoder(&buf).Encode(request); err != nil {
				return err
			}
			r.Body = io.NopCloser(&buf)
			return nil
		},
		func(_ context.Context, r *http.Response) (interface{}, error) {
			var resp s3Response
			if err := json.NewDecoder(r.Body).Decode(&resp); err != nil {
				return nil, err
			}
			// The one change to the tutorial's code: read the body to its
			// end (the newline after the JSON object), so that the
			// connection goes back to the idle pool. As written, every
			// request leaves a connection in TIME_WAIT, and at ~430
			// requests/s loopback runs out of ports (BENCHMARKS.md).
			io.Copy(io.Discard, r.Body)
			if r.StatusCode != http.StatusOK {
				return nil, errors.New(resp.Err)
			}
			return resp, nil
		},
	).Endpoint(), nil
}

// serveStringsvc3 serves the reference proxy on addr.
func serveStringsvc3(addr string, instances []string) error {
	h, err := stringsvc3Handler(instances)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/uppercase", h)
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "stringsvc3 reference proxy\n") })
	return (&http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}).ListenAndServe()
}
