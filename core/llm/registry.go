package llm

import (
	"sort"
	"sync"
)

var (
	regMu     sync.RWMutex
	factories = map[string]Factory{}
)

// Register makes a dialect available to gateway.yaml. It is called from a plugin's
// init() and panics on a duplicate name, as a wiring mistake must fail at start.
func Register(dialect string, f Factory) {
	regMu.Lock()
	defer regMu.Unlock()
	if dialect == "" || f == nil {
		panic("llm: Register with empty dialect or nil factory")
	}
	if _, dup := factories[dialect]; dup {
		panic("llm: dialect registered twice: " + dialect)
	}
	factories[dialect] = f
}

// Lookup returns the factory of a dialect.
func Lookup(dialect string) (Factory, bool) {
	regMu.RLock()
	defer regMu.RUnlock()
	f, ok := factories[dialect]
	return f, ok
}

// Known reports whether a dialect is registered (config validation uses it).
func Known(dialect string) bool {
	_, ok := Lookup(dialect)
	return ok
}

// Dialects lists the registered dialects, sorted.
func Dialects() []string {
	regMu.RLock()
	defer regMu.RUnlock()
	out := make([]string, 0, len(factories))
	for d := range factories {
		out = append(out, d)
	}
	sort.Strings(out)
	return out
}
