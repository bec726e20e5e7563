// Package member assembles one mesh member from its parts, in the shape of
// Go kit's addsvc: the local service, the optional mesh around it (its
// registration in Consul, its Connect identity and intentions, and the
// client chain it forwards through), and the HTTP handlers. cmd/stringsvc
// parses flags into a Config and serves the Member; the in-process tests
// and benchmarks build members the same way. It opens no listener itself.
package member
