package discovery_test

import (
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/kitmesh/stringsvc/discovery"
)

func TestAdvertiseAddr(t *testing.T) {
	any4 := &net.TCPAddr{IP: net.IPv4zero, Port: 8080}
	for _, tc := range []struct {
		override, consul string
		listener         net.Addr
		want             string
		wantErr          bool
	}{
		{override: "10.1.2.3:9000", consul: "127.0.0.1:8500", listener: any4, want: "10.1.2.3:9000"},
		{override: "::1:9000", listener: any4, wantErr: true},
		{override: "[::1]:9000", listener: any4, want: "[::1]:9000"},
		{override: ":9000", listener: any4, wantErr: true},
		{consul: "127.0.0.1:8500", listener: any4, want: "127.0.0.1:8080"},
		{consul: "127.0.0.1:8500", listener: &net.TCPAddr{IP: net.ParseIP("127.0.0.7"), Port: 81}, want: "127.0.0.7:81"},
		{consul: "127.0.0.1:8500", listener: &net.TCPAddr{IP: net.ParseIP("::ffff:10.0.0.9"), Port: 81}, want: "10.0.0.9:81"},
		{consul: "[::1]:8500", listener: &net.TCPAddr{IP: net.IPv6unspecified, Port: 81}, want: "[::1]:81"},
	} {
		have, err := discovery.AdvertiseAddr(tc.override, tc.consul, tc.listener)
		if (err != nil) != tc.wantErr || have != tc.want {
			if strings.Contains(fmt.Sprint(err), "network is unreachable") {
				continue // no IPv6 on this host
			}
			t.Errorf("AdvertiseAddr(%q, %q, %v): want %q (err %v), have %q, %v", tc.override, tc.consul, tc.listener, tc.want, tc.wantErr, have, err)
		}
	}
}
