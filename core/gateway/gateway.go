// Package gateway builds a whole serving generation (Snapshot) from a Config and
// swaps it in atomically; it owns the routes and the /chat and /v1 handlers.
package gateway

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/ralf-gateway/ralf/core/auth"
	"github.com/ralf-gateway/ralf/core/config"
	"github.com/ralf-gateway/ralf/core/h1"
	"github.com/ralf-gateway/ralf/core/llm"
	"github.com/ralf-gateway/ralf/core/metrics"
	"github.com/ralf-gateway/ralf/core/middleware"
	"github.com/ralf-gateway/ralf/core/ring"
	"github.com/ralf-gateway/ralf/core/store"
)

// Deps are the long-lived parts a Gateway serves with; they outlive config generations.
type Deps struct {
	Logger  *zap.Logger
	Metrics *metrics.Metrics
	Store   store.Store
	Keys    *auth.Keys
}

// Gateway is the http.Handler that serves the current generation. Transports, health
// state and the round-robin position live here, outside generations, so a reload
// keeps pools, cooldowns and the ring position of unchanged providers.
type Gateway struct {
	log   *zap.Logger
	m     *metrics.Metrics
	store store.Store
	keys  *auth.Keys

	cur    atomic.Pointer[snapshot]
	active sync.WaitGroup // requests being served, for shutdown

	mu       sync.Mutex // serializes Apply
	pos      ring.Position
	modelPos map[string]*atomic.Uint64 // the turn within each shared model (see modelGroup)
	health   map[string]*ring.Health   // by provider fingerprint
	clients  map[string]*http.Client   // by upstream scheme://host
	gen      int64
	status   atomic.Pointer[configStatus]
	boot     *config.Config // the first generation's: what listen, store and log format are in use
}

type configStatus struct {
	Generation int64     `json:"generation"`
	LoadedAt   time.Time `json:"loadedAt"`
	LastError  string    `json:"lastError,omitempty"`
	Path       string    `json:"-"`
}

// snapshot is one immutable serving generation.
type snapshot struct {
	gen       int64
	cfg       *config.Config
	ring      *ring.Ring
	providers []provider // aligned with ring members
	byName    map[string]int
	disabled  map[string]bool        // declared but disabled providers
	secrets   middleware.Secrets     // client and master keys, redacted from the access log
	shared    map[string]*modelGroup // models that several providers are configured with
	handler   http.Handler
}

// modelGroup is the providers configured with one model, which requests naming that
// model go to in turn.
type modelGroup struct {
	members []int          // provider indexes
	next    *atomic.Uint64 // whose turn it is; shared by the generations (Gateway.modelPos)
}

type provider struct {
	cfg    config.Provider
	p      llm.Provider
	health *ring.Health
	xname  []string // the X-Provider header value, shared read-only by responses
}

// New builds the first generation from cfg.
func New(cfg *config.Config, d Deps) (*Gateway, error) {
	if d.Logger == nil {
		d.Logger = zap.NewNop()
	}
	if d.Metrics == nil {
		d.Metrics = metrics.New()
	}
	g := &Gateway{log: d.Logger, m: d.Metrics, store: d.Store, keys: d.Keys,
		health: map[string]*ring.Health{}, clients: map[string]*http.Client{}, modelPos: map[string]*atomic.Uint64{}}
	g.status.Store(&configStatus{})
	if err := g.Apply(cfg); err != nil {
		return nil, err
	}
	return g, nil
}

// ServeHTTP serves with the generation current when the request arrives; the request
// finishes on that generation even if a reload swaps in another meanwhile.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g.active.Add(1)
	defer g.active.Done()
	g.cur.Load().handler.ServeHTTP(w, r)
}

// Wait waits up to d for the requests being served to finish (after the server
// stopped accepting), so stores are not closed under a handler still unwinding.
func (g *Gateway) Wait(d time.Duration) bool {
	done := make(chan struct{})
	go func() { g.active.Wait(); close(done) }()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}

// Config returns the config being served.
func (g *Gateway) Config() *config.Config { return g.cur.Load().cfg }

// Generation returns the number of the generation being served (1 for the first).
func (g *Gateway) Generation() int64 { return g.cur.Load().gen }

// Metrics returns the gateway's metrics.
func (g *Gateway) Metrics() *metrics.Metrics { return g.m }

// Apply builds a whole new generation from cfg and swaps it in with one atomic store.
// On any error nothing changes and the error is returned (and shown in /health).
func (g *Gateway) Apply(cfg *config.Config) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	old := g.cur.Load()
	s := &snapshot{cfg: cfg, byName: map[string]int{}, disabled: map[string]bool{},
		secrets: middleware.NewSecrets(append([]string{cfg.Auth.MasterKey}, cfg.Auth.Keys...)...)}
	var errs []error
	members := make([]ring.Member, 0, len(cfg.Providers))
	used := make(map[string]bool, len(cfg.Providers))
	for i, pc := range cfg.Providers {
		if !pc.Enabled {
			s.disabled[pc.Name] = true
			continue
		}
		p, err := newProvider(i, pc, g.clientFor, g.log)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		fp := fingerprint(pc)
		h := g.health[fp]
		if h == nil {
			h = &ring.Health{}
		}
		used[fp] = true
		s.byName[pc.Name] = len(s.providers)
		s.providers = append(s.providers, provider{cfg: pc, p: p, health: h, xname: []string{pc.Name}})
		members = append(members, ring.Member{Name: pc.Name, Weight: pc.Weight, Health: h})
	}
	if err := errors.Join(errs...); err != nil {
		g.ReloadFailed(err)
		return err
	}
	s.ring = ring.New(members, cfg.Routing.Strategy == "weighted", &g.pos)
	for i := range s.providers {
		m := s.providers[i].cfg.Model
		if s.shared[m] == nil {
			if s.shared == nil {
				s.shared = map[string]*modelGroup{}
			}
			s.shared[m] = &modelGroup{}
		}
		s.shared[m].members = append(s.shared[m].members, i)
	}
	for m, mg := range s.shared {
		if len(mg.members) < 2 {
			delete(s.shared, m)
			continue
		}
		// The turn carries on across reloads, as the ring's position does.
		if g.modelPos[m] == nil {
			g.modelPos[m] = new(atomic.Uint64)
		}
		mg.next = g.modelPos[m]
	}
	for m := range g.modelPos {
		if s.shared[m] == nil {
			delete(g.modelPos, m)
		}
	}
	g.gen++
	s.gen = g.gen
	s.handler = g.routes(s)

	// Providers that left the config (or changed settings) drop their state.
	for fp := range g.health {
		if !used[fp] {
			delete(g.health, fp)
		}
	}
	for _, p := range s.providers {
		g.health[fingerprint(p.cfg)] = p.health
	}
	g.cur.Store(s)
	g.status.Store(&configStatus{Generation: s.gen, LoadedAt: time.Now().UTC(), Path: cfg.Path})
	g.publishProviderStates(s)
	if old != nil {
		g.logChanges(old.cfg, cfg)
	} else {
		g.boot = cfg
	}
	return nil
}

// newProvider builds enabled provider i of a config with its dialect, which checks
// the provider's settings and params.
func newProvider(i int, pc config.Provider, clientFor func(base string) (*http.Client, error), log *zap.Logger) (llm.Provider, error) {
	f, ok := llm.Lookup(pc.Dialect)
	if !ok {
		return nil, fmt.Errorf("providers[%d].dialect: unknown dialect %q", i, pc.Dialect)
	}
	client, err := clientFor(pc.BaseURL)
	if err != nil {
		return nil, fmt.Errorf("providers[%d].base_url: %w", i, err)
	}
	p, err := f(pc, llm.Deps{Client: client, Logger: log.Named("provider").With(zap.String("provider", pc.Name))})
	if err != nil {
		return nil, fmt.Errorf("providers[%d] (%s): %w", i, pc.Name, stripName(err, pc.Name)) // not "(g): g: ..."
	}
	return p, nil
}

// CheckProvider makes the checks provider i's dialect makes when the gateway builds
// it (config.Options.CheckProvider).
func CheckProvider(i int, pc config.Provider) error {
	client := func(base string) (*http.Client, error) {
		if _, err := hostOf(base); err != nil {
			return nil, err
		}
		return &http.Client{}, nil
	}
	_, err := newProvider(i, pc, client, zap.NewNop())
	return err
}

// ReloadFailed records a failed reload for /health; what serves is untouched.
func (g *Gateway) ReloadFailed(err error) {
	st := *g.status.Load()
	st.LastError = err.Error()
	g.status.Store(&st)
}

func (g *Gateway) publishProviderStates(s *snapshot) {
	now := time.Now()
	states := make([]metrics.ProviderState, len(s.providers))
	for i, p := range s.providers {
		states[i] = metrics.ProviderState{Name: p.cfg.Name, Up: p.health.Available(now)}
	}
	g.m.SetProviders(states)
}

func (g *Gateway) logChanges(old, cur *config.Config) {
	before := map[string]string{}
	for _, p := range old.Providers {
		before[p.Name] = fingerprint(p) + fmt.Sprint(p.Enabled, p.Weight)
	}
	var added, changed, removed []string
	for _, p := range cur.Providers {
		fp, ok := before[p.Name]
		switch {
		case !ok:
			added = append(added, p.Name)
		case fp != fingerprint(p)+fmt.Sprint(p.Enabled, p.Weight):
			changed = append(changed, p.Name)
		}
		delete(before, p.Name)
	}
	for n := range before {
		removed = append(removed, n)
	}
	sort.Strings(removed)
	g.log.Info("config applied", zap.Int64("generation", g.gen), zap.Strings("added", added),
		zap.Strings("changed", changed), zap.Strings("removed", removed))
	// Settings only a restart applies: warned about when this reload changes them to
	// something other than what is in use since start-up.
	boot := g.boot
	if old.Server.Listen != cur.Server.Listen && cur.Server.Listen != boot.Server.Listen {
		g.log.Warn("server.listen changed: restart ralf to listen on the new address",
			zap.String("listening", boot.Server.Listen), zap.String("configured", cur.Server.Listen))
	}
	if old.Store != cur.Store && cur.Store != boot.Store {
		g.log.Warn("store changed: restart ralf to use the new store")
	}
	if old.Log.Format != cur.Log.Format && cur.Log.Format != boot.Log.Format {
		g.log.Warn("log.format changed: restart ralf to write logs in the new format",
			zap.String("writing", boot.Log.Format), zap.String("configured", cur.Log.Format))
	}
}

// fingerprint identifies a provider's settings; health and counters are kept across a
// reload only when it is unchanged. Weight and enabled are not part of it.
func fingerprint(p config.Provider) string {
	h := sha256.New()
	b, _ := json.Marshal([]any{p.Name, p.Dialect, p.BaseURL, p.Model, p.APIKey, p.Timeout, p.Headers, p.Params})
	h.Write(b)
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// clientFor returns the shared client for an upstream host, creating it once; its
// connection pool is kept across reloads.
func (g *Gateway) clientFor(base string) (*http.Client, error) {
	key, err := hostOf(base)
	if err != nil {
		return nil, err
	}
	if c := g.clients[key]; c != nil {
		return c, nil
	}
	c := &http.Client{Transport: newTransport(), CheckRedirect: noRedirects}
	g.clients[key] = c
	return c, nil
}

// noRedirects hands an upstream's redirect back as its answer: following it would
// send the provider's key (Gemini's x-goog-api-key, a configured header) to wherever
// the redirect points.
func noRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// hostOf is the scheme and host of an upstream's base URL: the key of its client.
func hostOf(base string) (string, error) {
	u, err := url.Parse(base)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("invalid URL")
	}
	return u.Scheme + "://" + u.Host, nil
}

// newTransport is one upstream host's transport: core/h1, with net/http's Transport
// for requests that go through a proxy from the environment.
func newTransport() http.RoundTripper {
	dial := (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	proxied := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           dial,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		// Compressed SSE would be buffered by the decompressor; ask upstreams for identity.
		DisableCompression: true,
	}
	return &h1.Transport{
		Fallback:            proxied,
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         dial,
		TLSHandshakeTimeout: 10 * time.Second,
		IdleConnTimeout:     90 * time.Second,
		MaxIdleConnsPerHost: 256,
	}
}

// Close releases idle upstream connections.
func (g *Gateway) Close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, c := range g.clients {
		c.CloseIdleConnections()
	}
}
