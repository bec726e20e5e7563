package discovery

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/go-kit/kit/metrics"
	"github.com/go-kit/log"
	"github.com/hashicorp/consul/api"
)

// ChainWatcher follows the compiled discovery chain of one service
// (/v1/discovery-chain/<service>): what Consul makes of its
// service-resolver, service-splitter and service-router entries. It costs
// one blocking query, which answers only when an entry changes.
type ChainWatcher struct {
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
	chain  atomic.Pointer[api.CompiledDiscoveryChain]
	why    lastReason

	mu        sync.Mutex
	changed   chan struct{} // closed and replaced on every new chain
	lastIndex uint64
}

// ChainWatcherOptions are the ChainWatcher's companions. All may be nil.
type ChainWatcherOptions struct {
	// Reach is told the outcome of every query.
	Reach *Reachability
	// Failures counts failed queries, labelled op="chain" and kind.
	Failures metrics.Counter
	// Logger gets one line per change of the reason Consul refuses.
	Logger log.Logger
}

// NewChainWatcher starts following the chain of service.
func NewChainWatcher(client *api.Client, service string, o ChainWatcherOptions) *ChainWatcher {
	if o.Reach == nil {
		o.Reach = NewReachability(log.NewNopLogger())
	}
	if o.Logger == nil {
		o.Logger = log.NewNopLogger()
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &ChainWatcher{ctx: ctx, cancel: cancel, done: make(chan struct{}), why: lastReason{logger: o.Logger}, changed: make(chan struct{})}
	go func() {
		defer close(w.done)
		follow(ctx, "chain", service, o.Reach, o.Failures, &w.why, func(q *api.QueryOptions) (uint64, error) {
			resp, meta, err := client.DiscoveryChain().Get(service, nil, q)
			if err != nil {
				return 0, err
			}
			if resp != nil && resp.Chain != nil && meta.LastIndex != w.index() {
				w.set(resp.Chain, meta.LastIndex)
			}
			return meta.LastIndex, nil
		})
	}()
	return w
}

// Chain returns the current chain, nil until Consul first answered.
func (w *ChainWatcher) Chain() *api.CompiledDiscoveryChain { return w.chain.Load() }

// Changed returns a channel closed when the chain next changes.
func (w *ChainWatcher) Changed() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.changed
}

// LastError says why Consul refuses the query, or "" when it answers.
func (w *ChainWatcher) LastError() string { return w.why.get() }

// Stop ends the watch and cancels its query in flight.
func (w *ChainWatcher) Stop() {
	w.cancel()
	<-w.done
}

// index is the Raft index of the chain held, so that an answer that
// changes nothing (a blocking query's timeout) wakes nobody.
func (w *ChainWatcher) index() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lastIndex
}

func (w *ChainWatcher) set(c *api.CompiledDiscoveryChain, index uint64) {
	w.chain.Store(c)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.lastIndex = index
	close(w.changed)
	w.changed = make(chan struct{})
}
