// Package transport serves StringService's endpoints as JSON over HTTP and
// calls one instance's endpoints over HTTP, as Go kit's
// addsvc/pkg/addtransport does. Errors map to statuses in one place
// (err2code), and a client turns statuses back into the same errors.
//
// It knows no Consul, no balancer and no breaker: instances arrive as
// "host:port" strings, and package client guards and balances them.
package transport
