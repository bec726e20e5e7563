package discovery

import (
	"context"

	"github.com/go-kit/kit/sd"
	"github.com/go-kit/kit/sd/consul"
	"github.com/go-kit/log"
	"github.com/hashicorp/consul/api"
)

// Instancer is Go kit's Consul instancer for the passing instances of one
// service, with a Stop that also cancels the blocking query in flight.
//
// While Consul is unreachable it keeps retrying and publishes nothing, so
// subscribers keep the last known set, which is what a member wants during
// an outage. An empty passing set is delivered as an empty set.
type Instancer struct {
	*consul.Instancer
	cancel context.CancelFunc
}

// NewInstancer starts watching the passing instances of service, filtered by
// tags. It returns within about half a second whatever Consul does. Each
// outcome goes to reach; logger gets one line per change of the reason the
// query fails, instead of Go kit's line per failure.
func NewInstancer(client *api.Client, reach *Reachability, logger log.Logger, service string, tags []string) *Instancer {
	ctx, cancel := context.WithCancel(context.Background())
	wc := &watchClient{ctx: ctx, consul: client, reach: reach, reason: &reason{logger: logger}}
	return &Instancer{
		Instancer: consul.NewInstancer(wc, withoutErrors(logger), service, tags, true),
		cancel:    cancel,
	}
}

// Stop ends the watch and cancels its query in flight.
func (i *Instancer) Stop() {
	i.Instancer.Stop()
	i.cancel()
}

var _ sd.Instancer = (*Instancer)(nil)

// withoutErrors drops log lines that carry an "err" key. Go kit's instancer
// and endpoint cache log every failed query; during an outage that is one
// line per retry, which Reachability replaces with one line per change.
func withoutErrors(logger log.Logger) log.Logger {
	return log.LoggerFunc(func(keyvals ...interface{}) error {
		for i := 0; i < len(keyvals); i += 2 {
			if keyvals[i] == "err" {
				return nil
			}
		}
		return logger.Log(keyvals...)
	})
}
