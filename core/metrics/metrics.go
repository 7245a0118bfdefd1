// Package metrics counts what the gateway does and serves it on GET /metrics:
// the seed's JSON document by default and the Prometheus text format to scrapers.
//
// One Metrics lives for the whole process, across config reloads, so counters
// never reset when gateway.yaml changes. Recording is lock-free and does not
// allocate: label-bound Prometheus children are cached per provider and per
// client in copy-on-write maps that the hot path reads with one atomic load.
package metrics

import (
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Outcomes of a request (Record.Outcome).
const (
	OutcomeOK        = "ok"        // the answer was delivered
	OutcomeError     = "error"     // provider or upstream failure
	OutcomeRejected  = "rejected"  // client error (4xx) before any upstream call
	OutcomeCancelled = "cancelled" // the client went away
)

// Outcomes of one upstream attempt (Attempt's outcome), besides OutcomeOK and OutcomeError.
const AttemptTimeout = "timeout"

// Results of a config reload (Reload's result).
const (
	ReloadOK        = "ok"
	ReloadError     = "error"
	ReloadUnchanged = "unchanged"
)

// noProvider is the provider label of requests no provider answered: an empty
// label value would read as a missing label in PromQL.
const noProvider = "none"

// Record is one finished client request.
type Record struct {
	Provider  string // provider that answered (or failed last); "" when none was called
	Outcome   string // OutcomeOK, OutcomeError, OutcomeRejected or OutcomeCancelled; derived from Status when ""
	Status    int    // HTTP status sent to the client
	Duration  time.Duration
	TTFB      time.Duration // time to the first token sent; 0 when none was
	Overhead  time.Duration // time spent in ralf itself, excluding the wait on upstreams
	Attempts  int
	TokensIn  int
	TokensOut int
	Client    string // client key NAME, never the key; "" when anonymous
}

// ProviderState is one provider of the current config and whether it is in the ring.
type ProviderState struct {
	Name string
	Up   bool // false while in cooldown
}

// outcome indexes of the cached requests_total children.
const (
	idxOK = iota
	idxError
	idxRejected
	idxCancelled
	numOutcomes
)

func outcomeIndex(s string) int {
	switch s {
	case OutcomeOK:
		return idxOK
	case OutcomeError:
		return idxError
	case OutcomeRejected:
		return idxRejected
	case OutcomeCancelled:
		return idxCancelled
	}
	return -1
}

var outcomeNames = [numOutcomes]string{OutcomeOK, OutcomeError, OutcomeRejected, OutcomeCancelled}

// outcomeFromStatus derives an outcome for callers that only know the status.
func outcomeFromStatus(status int) string {
	switch {
	case status == 499:
		return OutcomeCancelled
	case status >= 200 && status < 400:
		return OutcomeOK
	case status >= 400 && status < 500:
		return OutcomeRejected
	}
	return OutcomeError
}

// Bucket layouts. LLM answers take seconds to minutes; ralf's own overhead should
// stay well under a millisecond, so it gets fine buckets from 50µs to 50ms.
var (
	durationBuckets = []float64{0.1, 0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300}
	ttfbBuckets     = []float64{0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 1.5, 2, 3, 5, 7.5, 10, 15, 30, 60}
	overheadBuckets = []float64{
		0.00005, 0.0001, 0.00015, 0.0002, 0.0003, 0.0005, 0.00075,
		0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05,
	}
)

// providerStats is one provider's JSON counters and its cached Prometheus children.
type providerStats struct {
	name string

	requests  atomic.Int64 // answered requests plus failed-over attempts (the seed counted attempts)
	errors    atomic.Int64
	durSum    atomic.Int64 // nanoseconds over ok and error requests
	durCount  atomic.Int64
	lastUsed  atomic.Int64 // unix nanoseconds; 0 = never
	tokensIn  atomic.Int64
	tokensOut atomic.Int64

	reqs      [numOutcomes]prometheus.Counter
	duration  prometheus.Observer
	ttfb      prometheus.Observer
	tokIn     prometheus.Counter
	tokOut    prometheus.Counter
	attOK     prometheus.Counter
	attError  prometheus.Counter
	attTO     prometheus.Counter
	failovers prometheus.Counter
	up        prometheus.Gauge
}

// clientStats is one client key's counters.
type clientStats struct {
	requests  atomic.Int64
	tokensIn  atomic.Int64
	tokensOut atomic.Int64

	reqs   prometheus.Counter
	tokIn  prometheus.Counter
	tokOut prometheus.Counter
}

// providerSet is an immutable snapshot of the known providers.
type providerSet struct {
	byName map[string]*providerStats
	// closed is true once SetProviders has named the set: records for other
	// providers (an old generation finishing after a reload) then no longer
	// create series for a provider that is gone.
	closed bool
}

// Metrics is the gateway's counters, gauges and histograms, and their Prometheus registry.
type Metrics struct {
	reg   *prometheus.Registry
	now   func() time.Time
	start time.Time

	totalRequests atomic.Int64
	inFlight      atomic.Int64
	rateLimited   atomic.Int64

	mu        sync.Mutex // serializes writers of providers and clients
	providers atomic.Pointer[providerSet]
	clients   atomic.Pointer[map[string]*clientStats]

	requestsVec   *prometheus.CounterVec
	durationVec   *prometheus.HistogramVec
	ttfbVec       *prometheus.HistogramVec
	overhead      prometheus.Histogram
	tokensVec     *prometheus.CounterVec
	clientTokVec  *prometheus.CounterVec
	clientReqVec  *prometheus.CounterVec
	failoversVec  *prometheus.CounterVec
	attemptsVec   *prometheus.CounterVec
	reloadsVec    *prometheus.CounterVec
	upVec         *prometheus.GaugeVec
	storeErrorVec *prometheus.CounterVec
	reloadOK      prometheus.Counter
	reloadError   prometheus.Counter
	reloadSame    prometheus.Counter
	noneReqs      [numOutcomes]prometheus.Counter // requests no provider was called for
}

// New returns a Metrics with its own registry (never the global default one),
// holding the ralf_ metrics plus the Go and process collectors.
func New() *Metrics {
	return newWithClock(time.Now)
}

func newWithClock(now func() time.Time) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry(), now: now, start: now()}
	m.providers.Store(&providerSet{byName: map[string]*providerStats{}})
	m.clients.Store(&map[string]*clientStats{})

	m.requestsVec = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ralf_requests_total",
		Help: "Client requests by the provider that answered (none when no provider was called) and outcome (ok, error, rejected, cancelled).",
	}, []string{"provider", "outcome"})
	m.durationVec = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "ralf_request_duration_seconds",
		Help:    "Request duration by the provider that answered, from the start of its attempt to the last byte.",
		Buckets: durationBuckets,
	}, []string{"provider"})
	m.ttfbVec = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "ralf_time_to_first_token_seconds",
		Help:    "Time from the start of the answering provider's attempt to the first token sent to the client (streaming answers only), by provider.",
		Buckets: ttfbBuckets,
	}, []string{"provider"})
	m.overhead = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "ralf_gateway_overhead_seconds",
		Help:    "Time spent in ralf itself per request, excluding the wait on upstreams.",
		Buckets: overheadBuckets,
	})
	m.tokensVec = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ralf_tokens_total",
		Help: "Tokens by provider and direction (in = prompt, out = completion).",
	}, []string{"provider", "direction"})
	m.clientTokVec = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ralf_client_tokens_total",
		Help: "Tokens by client key name and direction (in = prompt, out = completion).",
	}, []string{"client", "direction"})
	m.clientReqVec = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ralf_client_requests_total",
		Help: "Client requests by client key name.",
	}, []string{"client"})
	m.failoversVec = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ralf_failovers_total",
		Help: "Failed attempts after which the request moved on to another provider, by the provider that failed.",
	}, []string{"provider"})
	m.attemptsVec = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ralf_upstream_attempts_total",
		Help: "Upstream attempts by provider and outcome (ok, error, timeout).",
	}, []string{"provider", "outcome"})
	m.reloadsVec = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ralf_config_reloads_total",
		Help: "Config reloads by result (ok, error, unchanged).",
	}, []string{"result"})
	m.upVec = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "ralf_provider_up",
		Help: "1 when the provider is in the ring, 0 while it is in cooldown.",
	}, []string{"provider"})
	m.storeErrorVec = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ralf_store_errors_total",
		Help: "Store (keys, rate-limit counters) errors by operation.",
	}, []string{"op"})
	inflight := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "ralf_inflight_streams",
		Help: "Responses being streamed right now.",
	}, func() float64 { return float64(m.inFlight.Load()) })
	rateLimited := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "ralf_rate_limited_total",
		Help: "Requests refused by the rate limit (429).",
	}, func() float64 { return float64(m.rateLimited.Load()) })
	uptime := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "ralf_uptime_seconds",
		Help: "Seconds since the gateway started.",
	}, func() float64 { return m.now().Sub(m.start).Seconds() })

	m.reg.MustRegister(
		m.requestsVec, m.durationVec, m.ttfbVec, m.overhead, m.tokensVec, m.clientTokVec, m.clientReqVec,
		m.failoversVec, m.attemptsVec, m.reloadsVec, m.upVec, m.storeErrorVec, inflight, rateLimited, uptime,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	// Series that exist from the start read as 0 instead of "no data" in rate().
	m.reloadOK = m.reloadsVec.WithLabelValues(ReloadOK)
	m.reloadError = m.reloadsVec.WithLabelValues(ReloadError)
	m.reloadSame = m.reloadsVec.WithLabelValues(ReloadUnchanged)
	for i, o := range outcomeNames {
		m.noneReqs[i] = m.requestsVec.WithLabelValues(noProvider, o)
	}
	return m
}

// Registry is the Prometheus registry behind /metrics, for other packages'
// collectors (register them once: the registry outlives reloads).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Request records one finished client request. Call it exactly once per request.
func (m *Metrics) Request(r Record) {
	m.totalRequests.Add(1)
	outcome := r.Outcome
	if outcome == "" {
		outcome = outcomeFromStatus(r.Status)
	}
	idx := outcomeIndex(outcome)
	if r.Overhead > 0 {
		m.overhead.Observe(r.Overhead.Seconds())
	}
	if r.Client != "" {
		if c := m.client(r.Client); c != nil {
			c.requests.Add(1)
			c.reqs.Inc()
			if r.TokensIn > 0 {
				c.tokensIn.Add(int64(r.TokensIn))
				c.tokIn.Add(float64(r.TokensIn))
			}
			if r.TokensOut > 0 {
				c.tokensOut.Add(int64(r.TokensOut))
				c.tokOut.Add(float64(r.TokensOut))
			}
		}
	}
	if r.Provider == "" {
		if idx >= 0 {
			m.noneReqs[idx].Inc()
		} else {
			m.requestsVec.WithLabelValues(noProvider, outcome).Inc()
		}
		return
	}
	p := m.provider(r.Provider)
	if p == nil {
		return // a provider removed by a reload: counted in the totals only
	}
	if idx >= 0 {
		p.reqs[idx].Inc()
	} else {
		m.requestsVec.WithLabelValues(p.name, outcome).Inc()
	}
	p.requests.Add(1)
	if idx == idxError || idx < 0 {
		p.errors.Add(1)
	}
	p.lastUsed.Store(m.now().UnixNano())
	if idx == idxOK || idx == idxError || idx < 0 {
		// A cancelled request lasts as long as the client chose: it would skew the average.
		p.durSum.Add(int64(r.Duration))
		p.durCount.Add(1)
		p.duration.Observe(r.Duration.Seconds())
	}
	if r.TTFB > 0 {
		p.ttfb.Observe(r.TTFB.Seconds())
	}
	if r.TokensIn > 0 {
		p.tokensIn.Add(int64(r.TokensIn))
		p.tokIn.Add(float64(r.TokensIn))
	}
	if r.TokensOut > 0 {
		p.tokensOut.Add(int64(r.TokensOut))
		p.tokOut.Add(float64(r.TokensOut))
	}
}

// Attempt records one upstream attempt: outcome OutcomeOK, OutcomeError or AttemptTimeout.
func (m *Metrics) Attempt(provider, outcome string) {
	p := m.provider(provider)
	if p == nil {
		return
	}
	switch outcome {
	case OutcomeOK:
		p.attOK.Inc()
	case OutcomeError:
		p.attError.Inc()
	case AttemptTimeout:
		p.attTO.Inc()
	default:
		m.attemptsVec.WithLabelValues(p.name, outcome).Inc()
	}
}

// Failover records that an attempt on provider from failed and the request moved
// on to another provider. In the JSON services it counts as a request of from
// that failed, as the seed counted it; the provider that answers next is counted
// by Request.
func (m *Metrics) Failover(from string) {
	p := m.provider(from)
	if p == nil {
		return
	}
	p.failovers.Inc()
	p.requests.Add(1)
	p.errors.Add(1)
	p.lastUsed.Store(m.now().UnixNano())
}

// StreamStart counts a response that starts streaming; pair it with StreamEnd.
func (m *Metrics) StreamStart() { m.inFlight.Add(1) }

// StreamEnd counts a streamed response that ended, however it ended.
func (m *Metrics) StreamEnd() { m.inFlight.Add(-1) }

// RateLimited counts a request refused by the rate limit.
func (m *Metrics) RateLimited() { m.rateLimited.Add(1) }

// Reload counts a config reload by result: ReloadOK, ReloadError or ReloadUnchanged.
func (m *Metrics) Reload(result string) {
	switch result {
	case ReloadOK:
		m.reloadOK.Inc()
	case ReloadError:
		m.reloadError.Inc()
	case ReloadUnchanged:
		m.reloadSame.Inc()
	default:
		m.reloadsVec.WithLabelValues(result).Inc()
	}
}

// StoreError counts a failed store operation (op is a short verb such as "lookup_key" or "rate_limit").
func (m *Metrics) StoreError(op string) { m.storeErrorVec.WithLabelValues(op).Inc() }

// SetProviders replaces the set of providers: the current config's providers
// with their ring state. Providers that stay keep their counters; providers the
// reload removed disappear from the JSON and their series from Prometheus.
// Call it after every successful reload and whenever a provider enters or leaves cooldown.
func (m *Metrics) SetProviders(states []ProviderState) {
	m.mu.Lock()
	defer m.mu.Unlock()
	old := m.providers.Load()
	next := &providerSet{byName: make(map[string]*providerStats, len(states)), closed: true}
	for _, s := range states {
		if s.Name == "" {
			continue
		}
		p := old.byName[s.Name]
		if p == nil {
			p = next.byName[s.Name] // a duplicate name in states
		}
		if p == nil {
			p = m.newProvider(s.Name)
		}
		next.byName[s.Name] = p
		if s.Up {
			p.up.Set(1)
		} else {
			p.up.Set(0)
		}
	}
	m.providers.Store(next)
	for name := range old.byName {
		if _, ok := next.byName[name]; !ok {
			m.deleteProviderSeries(name)
		}
	}
}

// SetProviderUp updates one provider's ring state without replacing the set.
func (m *Metrics) SetProviderUp(name string, up bool) {
	p := m.providers.Load().byName[name]
	if p == nil {
		return
	}
	if up {
		p.up.Set(1)
	} else {
		p.up.Set(0)
	}
}

func (m *Metrics) deleteProviderSeries(name string) {
	l := prometheus.Labels{"provider": labelValue(name)}
	m.requestsVec.DeletePartialMatch(l)
	m.durationVec.DeletePartialMatch(l)
	m.ttfbVec.DeletePartialMatch(l)
	m.tokensVec.DeletePartialMatch(l)
	m.failoversVec.DeletePartialMatch(l)
	m.attemptsVec.DeletePartialMatch(l)
	m.upVec.DeletePartialMatch(l)
}

// provider returns name's stats, creating them while no SetProviders has named
// the set (so a gateway that never calls it still gets per-provider numbers).
func (m *Metrics) provider(name string) *providerStats {
	set := m.providers.Load()
	if p := set.byName[name]; p != nil {
		return p
	}
	if set.closed || name == "" {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	set = m.providers.Load()
	if p := set.byName[name]; p != nil || set.closed {
		return p
	}
	p := m.newProvider(name)
	next := &providerSet{byName: make(map[string]*providerStats, len(set.byName)+1)}
	for k, v := range set.byName {
		next.byName[k] = v
	}
	next.byName[name] = p
	m.providers.Store(next)
	return p
}

// newProvider binds name's Prometheus children once so recording never looks labels up.
func (m *Metrics) newProvider(name string) *providerStats {
	lv := labelValue(name)
	p := &providerStats{name: lv}
	for i, o := range outcomeNames {
		p.reqs[i] = m.requestsVec.WithLabelValues(lv, o)
	}
	p.duration = m.durationVec.WithLabelValues(lv)
	p.ttfb = m.ttfbVec.WithLabelValues(lv)
	p.tokIn = m.tokensVec.WithLabelValues(lv, "in")
	p.tokOut = m.tokensVec.WithLabelValues(lv, "out")
	p.attOK = m.attemptsVec.WithLabelValues(lv, OutcomeOK)
	p.attError = m.attemptsVec.WithLabelValues(lv, OutcomeError)
	p.attTO = m.attemptsVec.WithLabelValues(lv, AttemptTimeout)
	p.failovers = m.failoversVec.WithLabelValues(lv)
	p.up = m.upVec.WithLabelValues(lv)
	return p
}

// client returns the client key name's stats, creating them on first use.
func (m *Metrics) client(name string) *clientStats {
	if c := (*m.clients.Load())[name]; c != nil {
		return c
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	cur := *m.clients.Load()
	if c := cur[name]; c != nil {
		return c
	}
	lv := labelValue(name)
	c := &clientStats{
		reqs:   m.clientReqVec.WithLabelValues(lv),
		tokIn:  m.clientTokVec.WithLabelValues(lv, "in"),
		tokOut: m.clientTokVec.WithLabelValues(lv, "out"),
	}
	next := make(map[string]*clientStats, len(cur)+1)
	for k, v := range cur {
		next[k] = v
	}
	next[name] = c
	m.clients.Store(&next)
	return c
}

// labelValue makes name a valid label value: client_golang panics on invalid UTF-8.
func labelValue(name string) string {
	if utf8.ValidString(name) {
		return name
	}
	return strings.ToValidUTF8(name, "\uFFFD")
}

// ServiceStats is one provider in the seed's JSON document.
type ServiceStats struct {
	Requests    int64   `json:"requests"`
	Errors      int64   `json:"errors"`
	AvgDuration int64   `json:"avgDuration"` // milliseconds, rounded
	LastUsed    *string `json:"lastUsed"`    // ISO 8601 in UTC, null when never used
	SuccessRate string  `json:"successRate"` // "96.67%"
}

// TokenStats is a provider's token totals.
type TokenStats struct {
	In  int64 `json:"in"`
	Out int64 `json:"out"`
}

// ClientStats is one client key's totals, by key name.
type ClientStats struct {
	Requests  int64 `json:"requests"`
	TokensIn  int64 `json:"tokensIn"`
	TokensOut int64 `json:"tokensOut"`
}

// Stats is the JSON document of GET /metrics: the seed's keys first, then ralf's.
type Stats struct {
	Uptime        float64                 `json:"uptime"` // seconds
	TotalRequests int64                   `json:"totalRequests"`
	Services      map[string]ServiceStats `json:"services"`
	Tokens        map[string]TokenStats   `json:"tokens"`
	Clients       map[string]ClientStats  `json:"clients"`
	InFlight      int64                   `json:"inFlight"`
	RateLimited   int64                   `json:"rateLimited"`
}

// Stats returns the current numbers as GET /metrics shows them in JSON.
func (m *Metrics) Stats() Stats {
	set := m.providers.Load()
	clients := *m.clients.Load()
	s := Stats{
		Uptime:        m.now().Sub(m.start).Seconds(),
		TotalRequests: m.totalRequests.Load(),
		Services:      make(map[string]ServiceStats, len(set.byName)),
		Tokens:        make(map[string]TokenStats, len(set.byName)),
		Clients:       make(map[string]ClientStats, len(clients)),
		InFlight:      m.inFlight.Load(),
		RateLimited:   m.rateLimited.Load(),
	}
	for name, p := range set.byName {
		reqs, errs := p.requests.Load(), p.errors.Load()
		svc := ServiceStats{Requests: reqs, Errors: errs, SuccessRate: successRate(reqs, errs)}
		if n := p.durCount.Load(); n > 0 {
			svc.AvgDuration = int64(math.Round(float64(p.durSum.Load()) / float64(n) / float64(time.Millisecond)))
		}
		if ns := p.lastUsed.Load(); ns != 0 {
			ts := time.Unix(0, ns).UTC().Format("2006-01-02T15:04:05.000Z07:00")
			svc.LastUsed = &ts
		}
		s.Services[name] = svc
		s.Tokens[name] = TokenStats{In: p.tokensIn.Load(), Out: p.tokensOut.Load()}
	}
	for name, c := range clients {
		s.Clients[name] = ClientStats{Requests: c.requests.Load(), TokensIn: c.tokensIn.Load(), TokensOut: c.tokensOut.Load()}
	}
	return s
}

// successRate formats the share of successful requests with two decimals, as the
// seed did; a provider without requests has not failed yet: "100.00%".
func successRate(requests, errors int64) string {
	if requests <= 0 {
		return "100.00%"
	}
	if errors > requests {
		errors = requests
	}
	return formatPercent(float64(requests-errors) / float64(requests) * 100)
}

func formatPercent(v float64) string {
	return strconv.FormatFloat(v, 'f', 2, 64) + "%"
}
