package discovery

import (
	"fmt"
	"net"
	"strconv"
)

// AdvertiseAddr returns the "host:port" under which this member registers.
//
// An explicit override wins. Otherwise the host is the local address of the
// route to the Consul agent: the address that the agent (and peers on the
// same network) can reach us at. Inside a container that is the container's
// address, never loopback unless Consul itself is on loopback, which avoids
// the classic trap of registering an address that health checks cannot
// reach. The port is the one the listener actually bound.
func AdvertiseAddr(override, consulAddr string, listener net.Addr) (string, error) {
	if override != "" {
		host, port, err := net.SplitHostPort(override)
		if err != nil {
			return "", fmt.Errorf("advertise address %q: %w", override, err)
		}
		if host == "" {
			return "", fmt.Errorf("advertise address %q: empty host", override)
		}
		if _, err := strconv.ParseUint(port, 10, 16); err != nil {
			return "", fmt.Errorf("advertise address %q: bad port", override)
		}
		return net.JoinHostPort(host, port), nil
	}
	tcp, ok := listener.(*net.TCPAddr)
	if !ok {
		return "", fmt.Errorf("listener address %v is not TCP", listener)
	}
	if !tcp.IP.IsUnspecified() && tcp.IP != nil {
		// Bound to one address: that is the only one peers can use.
		return net.JoinHostPort(tcp.IP.String(), strconv.Itoa(tcp.Port)), nil
	}
	// A UDP "connection" sends nothing; it only asks the kernel which local
	// address routes to the agent.
	port := strconv.Itoa(tcp.Port)
	conn, err := net.Dial("udp", consulAddr)
	if err == nil {
		defer conn.Close()
		return net.JoinHostPort(conn.LocalAddr().(*net.UDPAddr).IP.String(), port), nil
	}
	// Consul's name may not resolve yet (its container is still starting).
	// The member must still start, so take this host's first global
	// address, which is what a container on one network has.
	if ip := firstGlobalAddr(); ip != nil {
		return net.JoinHostPort(ip.String(), port), nil
	}
	return "", fmt.Errorf("find the local address that routes to Consul at %s (set -advertise): %w", consulAddr, err)
}

func firstGlobalAddr() net.IP {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var v6 net.IP
	for _, a := range addrs {
		ipnet, ok := a.(*net.IPNet)
		if !ok || !ipnet.IP.IsGlobalUnicast() {
			continue
		}
		if ipnet.IP.To4() != nil {
			return ipnet.IP
		}
		if v6 == nil {
			v6 = ipnet.IP
		}
	}
	return v6
}
