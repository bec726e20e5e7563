package discovery

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
)

// AdvertiseAddr returns the "host:port" under which this member registers.
//
// An explicit override wins. It is the address itself; it is never
// replaced by the agent's (see Registration.AskAgent). Otherwise the host is the local address of the
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
		return net.JoinHostPort(instanceHost(tcp.IP.String(), tcp.Zone), strconv.Itoa(tcp.Port)), nil
	}
	// A UDP "connection" sends nothing; it only asks the kernel which local
	// address routes to the agent.
	port := strconv.Itoa(tcp.Port)
	conn, err := net.Dial("udp", consulAddr)
	if err == nil {
		defer conn.Close()
		local := conn.LocalAddr().(*net.UDPAddr)
		return net.JoinHostPort(instanceHost(local.IP.String(), local.Zone), port), nil
	}
	// Consul's name may not resolve yet (its container is still starting).
	// The member must still start, so take this host's first global
	// address, which is what a container on one network has.
	if ip := firstGlobalAddr(); ip != nil {
		return net.JoinHostPort(ip.String(), port), nil
	}
	return "", fmt.Errorf("find the local address that routes to Consul at %s (set -advertise): %w", consulAddr, err)
}

// instanceHost returns the canonical form of an address for "host:port"
// strings and URLs: an IPv4-mapped IPv6 address as plain IPv4, an IPv6
// address with its zone ("fe80::1%eth0"), anything else (a name) as it is.
func instanceHost(addr, zone string) string {
	ip, err := netip.ParseAddr(addr)
	if err != nil {
		return addr
	}
	if zone != "" && ip.Is6() && ip.Zone() == "" {
		ip = ip.WithZone(zone)
	}
	return ip.Unmap().String()
}

// isLoopback reports whether the host of "host:port" is a loopback address.
func isLoopback(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	return err == nil && isLoopbackHost(host)
}

func isLoopbackHost(host string) bool {
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback() || host == "localhost"
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
