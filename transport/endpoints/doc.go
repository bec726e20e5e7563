// Package endpoints holds StringService's Go kit endpoints, as Go kit's
// addsvc/pkg/addendpoint does: the request and response types, the
// constructors that turn a service into endpoints, and the Set that turns
// endpoints back into calls. It knows no transport: HTTP is package
// transport, the mesh's balancing is package client.
package endpoints
