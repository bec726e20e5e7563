package discovery_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/kitmesh/stringsvc/discovery"
	"github.com/kitmesh/stringsvc/discovery/consultest"
)

// The watcher sees a written splitter, and its deletion, within 2 s, and
// wakes its subscribers on each change; an idle watch asks Consul almost
// nothing.
func TestChainWatcherFollowsConfigEntries(t *testing.T) {
	agent := consultest.Start(t)
	counting := &countingTransport{}
	client := newClient(t, agent.Addr, counting)
	w := discovery.NewChainWatcher(client, "web", discovery.ChainWatcherOptions{})
	defer w.Stop()
	consultest.Eventually(t, 5*time.Second, func() error {
		if c := w.Chain(); c == nil || !c.Default {
			return fmt.Errorf("want the default chain first, have %+v", c)
		}
		return nil
	})

	changed := w.Changed()
	for _, e := range []api.ConfigEntry{
		&api.ServiceConfigEntry{Kind: api.ServiceDefaults, Name: "web", Protocol: "http"},
		&api.ServiceResolverConfigEntry{Kind: api.ServiceResolver, Name: "web", Subsets: map[string]api.ServiceResolverSubset{
			"v1": {Filter: "Service.Meta.version == v1"}, "v2": {Filter: "Service.Meta.version == v2"},
		}, DefaultSubset: "v1"},
		&api.ServiceSplitterConfigEntry{Kind: api.ServiceSplitter, Name: "web", Splits: []api.ServiceSplit{
			{Weight: 90, ServiceSubset: "v1"}, {Weight: 10, ServiceSubset: "v2"},
		}},
	} {
		if _, _, err := client.ConfigEntries().Set(e, nil); err != nil {
			t.Fatal(err)
		}
	}
	written := time.Now()
	consultest.Eventually(t, 2*time.Second, func() error {
		c := w.Chain()
		if c == nil || c.Default || c.Nodes[c.StartNode] == nil || c.Nodes[c.StartNode].Type != api.DiscoveryGraphNodeTypeSplitter {
			return fmt.Errorf("want a splitter first, have %+v", c)
		}
		return nil
	})
	t.Logf("splitter seen %v after the write", time.Since(written).Round(time.Millisecond))
	select {
	case <-changed:
	default:
		t.Error("the chain changed, and Changed was not closed")
	}

	for _, kind := range []string{api.ServiceSplitter, api.ServiceResolver, api.ServiceDefaults} {
		if _, err := client.ConfigEntries().Delete(kind, "web", nil); err != nil {
			t.Fatal(err)
		}
	}
	consultest.Eventually(t, 2*time.Second, func() error {
		if c := w.Chain(); c == nil || !c.Default {
			return fmt.Errorf("after every entry went: want the default chain, have %+v", c)
		}
		return nil
	})
	before := counting.total.Load()
	time.Sleep(time.Second) // a window in which nothing changes
	if n := counting.total.Load() - before; n > 1 {
		t.Errorf("an idle watch: want at most 1 query a second, have %d", n)
	}
	if e := w.LastError(); e != "" {
		t.Errorf("LastError: want none, have %q", e)
	}
}
