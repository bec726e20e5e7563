// Package lb chooses, for each forwarded request, which instance of the mesh
// serves it, and retries elsewhere when one fails. It is to package
// discovery what Go kit's sd/lb is to sd/consul: the pool, the balancing
// policies (one file each: p2c.go, roundrobin.go, random.go), retry.go and
// budget.go.
//
// It learns of instances only through an sd.Instancer and builds their
// endpoints only through a Factory. It must not import Consul, package
// discovery, or package transport.
package lb
