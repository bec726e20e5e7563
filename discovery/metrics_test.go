package discovery

import "github.com/go-kit/kit/metrics"

// countFunc is a metrics.Counter that hands each increment's label values
// to a function.
type countFunc func(lvs []string)

func (f countFunc) With(lvs ...string) metrics.Counter { return labelled{f, lvs} }
func (f countFunc) Add(float64)                        { f(nil) }

type labelled struct {
	f   countFunc
	lvs []string
}

func (l labelled) With(lvs ...string) metrics.Counter {
	return labelled{l.f, append(append([]string{}, l.lvs...), lvs...)}
}
func (l labelled) Add(float64) { l.f(l.lvs) }
