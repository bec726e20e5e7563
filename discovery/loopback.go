package discovery

import (
	"net"
	"sync"

	"github.com/go-kit/kit/sd"
	"github.com/go-kit/log"
)

// WarnLoopback watches instancer and logs a warning, once each time it
// becomes true, while this member advertises a loopback address and the
// service has instances on other addresses. Those peers cannot reach this
// member, and every member that advertises loopback takes every loopback
// entry for itself: there is silently no mesh across hosts. self returns
// the advertised "host:port" ("" while not settled). Call stop to end it.
func WarnLoopback(instancer sd.Instancer, self func() string, logger log.Logger) (stop func()) {
	ch := make(chan sd.Event)
	done := make(chan struct{})
	go func() {
		defer close(done)
		warned := false
		for ev := range ch {
			others := nonLoopback(ev.Instances)
			bad := isLoopback(self()) && others > 0
			if bad && !warned {
				logger.Log("level", "warn", "advertise", self(), "others", others,
					"msg", "this member advertises a loopback address while Consul lists peers on other addresses; they cannot reach it. Set -advertise, or run the agent on a routable address")
			}
			warned = bad
		}
	}()
	instancer.Register(ch)
	var once sync.Once
	return func() {
		once.Do(func() {
			instancer.Deregister(ch)
			close(ch)
			<-done
		})
	}
}

func nonLoopback(instances []string) int {
	var n int
	for _, i := range instances {
		if host, _, err := net.SplitHostPort(i); err == nil && !isLoopbackHost(host) {
			n++
		}
	}
	return n
}
