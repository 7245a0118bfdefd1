package metrics

import (
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeClock is a settable clock for uptime and lastUsed.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

var t0 = time.Date(2026, 11, 23, 3, 17, 14, 123_000_000, time.UTC)

// knownTraffic records a fixed mix of requests, as the gateway would.
func knownTraffic(t *testing.T) (*Metrics, *fakeClock) {
	t.Helper()
	clk := &fakeClock{t: t0}
	m := newWithClock(clk.Now)
	m.SetProviders([]ProviderState{{"groq", true}, {"cerebras", true}, {"gemini", false}})

	clk.Set(t0.Add(10 * time.Second))
	for range 29 {
		m.Attempt("groq", OutcomeOK)
		m.StreamStart()
		m.Request(Record{Provider: "groq", Outcome: OutcomeOK, Status: 200, Duration: 1200 * time.Millisecond,
			TTFB: 300 * time.Millisecond, Overhead: 180 * time.Microsecond, Attempts: 1, TokensIn: 10, TokensOut: 20,
			Client: "alice"})
		m.StreamEnd()
	}
	m.Attempt("groq", OutcomeError)
	m.Request(Record{Provider: "groq", Outcome: OutcomeError, Status: 502, Duration: 600 * time.Millisecond,
		Attempts: 1, Client: "bob"})

	clk.Set(t0.Add(20 * time.Second))
	m.Attempt("cerebras", AttemptTimeout)
	m.Failover("cerebras")
	// Cancelled by the client after 5s: counted, but not in the average duration.
	m.Request(Record{Provider: "cerebras", Outcome: OutcomeCancelled, Status: 499, Duration: 5 * time.Second,
		Attempts: 2})
	m.Request(Record{Outcome: OutcomeRejected, Status: 400})

	m.RateLimited()
	m.RateLimited()
	m.StreamStart()
	m.StreamStart()
	m.Reload(ReloadOK)
	m.Reload(ReloadUnchanged)
	m.Reload(ReloadUnchanged)
	m.StoreError("rate_limit")
	clk.Set(t0.Add(90500 * time.Millisecond))
	return m, clk
}

func get(t *testing.T, h http.Handler, target string, header http.Header) *http.Response {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, target, nil)
	for k, v := range header {
		req.Header[k] = v
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Result()
}

func readBody(t *testing.T, res *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestJSONKnownTraffic(t *testing.T) {
	m, _ := knownTraffic(t)
	res := get(t, m.Handler(HandlerOptions{}), "/metrics", nil)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("status = %d", res.StatusCode)
	}
	if ct := res.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
	want := `{"uptime":90.5,"totalRequests":32,` +
		`"services":{` +
		`"cerebras":{"requests":2,"errors":1,"avgDuration":0,"lastUsed":"2026-11-23T03:17:34.123Z","successRate":"50.00%"},` +
		`"gemini":{"requests":0,"errors":0,"avgDuration":0,"lastUsed":null,"successRate":"100.00%"},` +
		`"groq":{"requests":30,"errors":1,"avgDuration":1180,"lastUsed":"2026-11-23T03:17:24.123Z","successRate":"96.67%"}},` +
		`"tokens":{"cerebras":{"in":0,"out":0},"gemini":{"in":0,"out":0},"groq":{"in":290,"out":580}},` +
		`"clients":{"alice":{"requests":29,"tokensIn":290,"tokensOut":580},"bob":{"requests":1,"tokensIn":0,"tokensOut":0}},` +
		`"inFlight":2,"rateLimited":2}`
	if got := readBody(t, res); got != want {
		t.Errorf("body:\n got %s\nwant %s", got, want)
	}
}

func TestJSONEmpty(t *testing.T) {
	m := New()
	got := readBody(t, get(t, m.Handler(HandlerOptions{}), "/metrics", nil))
	for _, want := range []string{`"totalRequests":0`, `"services":{}`, `"tokens":{}`, `"clients":{}`, `"inFlight":0`, `"rateLimited":0`} {
		if !strings.Contains(got, want) {
			t.Errorf("body %s lacks %s", got, want)
		}
	}
}

func TestSuccessRate(t *testing.T) {
	tests := []struct {
		name           string
		requests, errs int64
		want           string
	}{
		{"no requests", 0, 0, "100.00%"},
		{"no errors", 12, 0, "100.00%"},
		{"29 ok 1 error", 30, 1, "96.67%"},
		{"two thirds", 3, 1, "66.67%"},
		{"eighths", 8, 1, "87.50%"},
		{"all failed", 3, 3, "0.00%"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := successRate(tt.requests, tt.errs); got != tt.want {
				t.Errorf("successRate(%d, %d) = %q, want %q", tt.requests, tt.errs, got, tt.want)
			}
		})
	}
}

func TestOutcomeFromStatus(t *testing.T) {
	tests := []struct {
		name     string
		provider string
		status   int
		svcErrs  int64
		series   string
	}{
		{"200 is ok", "groq", 200, 0, "ok"},
		{"502 is an error", "groq", 502, 1, "error"},
		{"499 is cancelled", "groq", 499, 0, "cancelled"},
		{"400 is rejected", "", 400, 0, "rejected"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := New()
			m.Request(Record{Provider: tt.provider, Status: tt.status})
			label := tt.provider
			if label == "" {
				label = noProvider
			}
			fams := scrape(t, m)
			if v := counter(t, fams, "ralf_requests_total", map[string]string{"provider": label, "outcome": tt.series}); v != 1 {
				t.Errorf("ralf_requests_total{%s,%s} = %v, want 1", label, tt.series, v)
			}
			if tt.provider != "" {
				if got := m.Stats().Services[tt.provider].Errors; got != tt.svcErrs {
					t.Errorf("errors = %d, want %d", got, tt.svcErrs)
				}
			}
		})
	}
}

// scrape GETs the Prometheus text exposition and parses it.
func scrape(t *testing.T, m *Metrics) map[string]*dto.MetricFamily {
	t.Helper()
	res := get(t, m.Handler(HandlerOptions{}), "/metrics?format=prometheus", nil)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("status = %d", res.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(res.Body)
	if err != nil {
		t.Fatalf("parse exposition: %v", err)
	}
	return fams
}

// find returns the metric of family name whose labels include all of labels, or nil.
func find(fams map[string]*dto.MetricFamily, name string, labels map[string]string) *dto.Metric {
	f := fams[name]
	if f == nil {
		return nil
	}
next:
	for _, mt := range f.GetMetric() {
		for k, v := range labels {
			found := false
			for _, lp := range mt.GetLabel() {
				if lp.GetName() == k && lp.GetValue() == v {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		return mt
	}
	return nil
}

func counter(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	t.Helper()
	mt := find(fams, name, labels)
	if mt == nil {
		t.Fatalf("no series %s%v", name, labels)
	}
	if mt.GetCounter() != nil {
		return mt.GetCounter().GetValue()
	}
	if mt.GetGauge() != nil {
		return mt.GetGauge().GetValue()
	}
	if mt.GetUntyped() != nil {
		return mt.GetUntyped().GetValue()
	}
	t.Fatalf("%s%v is not a counter or gauge", name, labels)
	return 0
}

func histogram(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels map[string]string) *dto.Histogram {
	t.Helper()
	mt := find(fams, name, labels)
	if mt == nil || mt.GetHistogram() == nil {
		t.Fatalf("no histogram %s%v", name, labels)
	}
	return mt.GetHistogram()
}

func bucket(t *testing.T, h *dto.Histogram, le float64) uint64 {
	t.Helper()
	for _, b := range h.GetBucket() {
		if b.GetUpperBound() == le {
			return b.GetCumulativeCount()
		}
	}
	t.Fatalf("no bucket le=%v", le)
	return 0
}

func TestPrometheusKnownTraffic(t *testing.T) {
	m, _ := knownTraffic(t)
	fams := scrape(t, m)

	counters := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"ralf_requests_total", map[string]string{"provider": "groq", "outcome": "ok"}, 29},
		{"ralf_requests_total", map[string]string{"provider": "groq", "outcome": "error"}, 1},
		{"ralf_requests_total", map[string]string{"provider": "groq", "outcome": "cancelled"}, 0},
		{"ralf_requests_total", map[string]string{"provider": "cerebras", "outcome": "cancelled"}, 1},
		{"ralf_requests_total", map[string]string{"provider": "none", "outcome": "rejected"}, 1},
		{"ralf_tokens_total", map[string]string{"provider": "groq", "direction": "in"}, 290},
		{"ralf_tokens_total", map[string]string{"provider": "groq", "direction": "out"}, 580},
		{"ralf_client_tokens_total", map[string]string{"client": "alice", "direction": "in"}, 290},
		{"ralf_client_tokens_total", map[string]string{"client": "alice", "direction": "out"}, 580},
		{"ralf_client_requests_total", map[string]string{"client": "bob"}, 1},
		{"ralf_inflight_streams", nil, 2},
		{"ralf_rate_limited_total", nil, 2},
		{"ralf_failovers_total", map[string]string{"provider": "cerebras"}, 1},
		{"ralf_failovers_total", map[string]string{"provider": "groq"}, 0},
		{"ralf_upstream_attempts_total", map[string]string{"provider": "groq", "outcome": "ok"}, 29},
		{"ralf_upstream_attempts_total", map[string]string{"provider": "groq", "outcome": "error"}, 1},
		{"ralf_upstream_attempts_total", map[string]string{"provider": "cerebras", "outcome": "timeout"}, 1},
		{"ralf_config_reloads_total", map[string]string{"result": "ok"}, 1},
		{"ralf_config_reloads_total", map[string]string{"result": "unchanged"}, 2},
		{"ralf_config_reloads_total", map[string]string{"result": "error"}, 0},
		{"ralf_provider_up", map[string]string{"provider": "groq"}, 1},
		{"ralf_provider_up", map[string]string{"provider": "gemini"}, 0},
		{"ralf_store_errors_total", map[string]string{"op": "rate_limit"}, 1},
		{"ralf_uptime_seconds", nil, 90.5},
	}
	for _, c := range counters {
		t.Run(c.name+labelString(c.labels), func(t *testing.T) {
			if got := counter(t, fams, c.name, c.labels); got != c.want {
				t.Errorf("= %v, want %v", got, c.want)
			}
		})
	}

	t.Run("duration histogram", func(t *testing.T) {
		h := histogram(t, fams, "ralf_request_duration_seconds", map[string]string{"provider": "groq"})
		if h.GetSampleCount() != 30 || math.Abs(h.GetSampleSum()-35.4) > 1e-9 {
			t.Errorf("count %d sum %v, want 30 and 35.4", h.GetSampleCount(), h.GetSampleSum())
		}
		if got := bucket(t, h, 1); got != 1 {
			t.Errorf("le=1: %d, want 1", got)
		}
		if got := bucket(t, h, 2); got != 30 {
			t.Errorf("le=2: %d, want 30", got)
		}
		// The cancelled request is not a duration sample.
		if c := histogram(t, fams, "ralf_request_duration_seconds", map[string]string{"provider": "cerebras"}); c.GetSampleCount() != 0 {
			t.Errorf("cerebras samples = %d, want 0", c.GetSampleCount())
		}
	})
	t.Run("ttfb histogram", func(t *testing.T) {
		h := histogram(t, fams, "ralf_time_to_first_token_seconds", map[string]string{"provider": "groq"})
		if h.GetSampleCount() != 29 || bucket(t, h, 0.2) != 0 || bucket(t, h, 0.3) != 29 {
			t.Errorf("count %d, le=0.2 %d, le=0.3 %d; want 29, 0, 29", h.GetSampleCount(), bucket(t, h, 0.2), bucket(t, h, 0.3))
		}
	})
	t.Run("overhead histogram", func(t *testing.T) {
		h := histogram(t, fams, "ralf_gateway_overhead_seconds", nil)
		if h.GetSampleCount() != 29 || bucket(t, h, 0.00015) != 0 || bucket(t, h, 0.0002) != 29 {
			t.Errorf("count %d, le=150µs %d, le=200µs %d; want 29, 0, 29", h.GetSampleCount(), bucket(t, h, 0.00015), bucket(t, h, 0.0002))
		}
		b := h.GetBucket()
		if len(b) > 0 && math.IsInf(b[len(b)-1].GetUpperBound(), 1) {
			b = b[:len(b)-1] // the text parser keeps the +Inf bucket
		}
		if len(b) < 10 || b[0].GetUpperBound() != 0.00005 || b[len(b)-1].GetUpperBound() != 0.05 {
			t.Errorf("%d buckets spanning %v..%v, want >= 10 from 50µs to 50ms", len(b), b[0].GetUpperBound(), b[len(b)-1].GetUpperBound())
		}
	})
	t.Run("go and process collectors", func(t *testing.T) {
		for _, name := range []string{"go_goroutines", "process_start_time_seconds"} {
			if fams[name] == nil {
				t.Errorf("no %s", name)
			}
		}
	})
}

func labelString(l map[string]string) string {
	if len(l) == 0 {
		return ""
	}
	var parts []string
	for _, k := range []string{"provider", "client", "outcome", "direction", "result", "op"} {
		if v, ok := l[k]; ok {
			parts = append(parts, k+"="+v)
		}
	}
	return "{" + strings.Join(parts, ",") + "}"
}

func TestInvalidUTF8ClientName(t *testing.T) {
	m := New()
	m.Request(Record{Provider: "groq", Outcome: OutcomeOK, Client: "bad\xffname", TokensOut: 3})
	fams := scrape(t, m)
	if got := counter(t, fams, "ralf_client_tokens_total", map[string]string{"client": "bad\uFFFDname", "direction": "out"}); got != 3 {
		t.Errorf("client tokens = %v, want 3", got)
	}
}

func TestSetProvidersRemovesStale(t *testing.T) {
	m := New()
	m.SetProviders([]ProviderState{{"groq", true}, {"cerebras", true}})
	m.Request(Record{Provider: "groq", Outcome: OutcomeOK, Duration: time.Second, TokensIn: 5})
	m.Request(Record{Provider: "cerebras", Outcome: OutcomeOK, Duration: time.Second, TokensIn: 7})
	m.Failover("cerebras")

	// Reload: cerebras is gone, groq stays (in cooldown), hf is new.
	m.SetProviders([]ProviderState{{"groq", false}, {"hf", true}})
	// A request of the old generation finishing after the swap.
	m.Request(Record{Provider: "cerebras", Outcome: OutcomeOK, Duration: time.Second})
	m.Attempt("cerebras", OutcomeOK)
	m.Failover("cerebras")

	s := m.Stats()
	if _, ok := s.Services["cerebras"]; ok {
		t.Error("cerebras still in JSON services")
	}
	if _, ok := s.Tokens["cerebras"]; ok {
		t.Error("cerebras still in JSON tokens")
	}
	if got := s.Services["groq"].Requests; got != 1 {
		t.Errorf("groq requests = %d, want 1 (kept across the reload)", got)
	}
	if hf, ok := s.Services["hf"]; !ok || hf.Requests != 0 {
		t.Errorf("hf = %+v, %v; want listed with 0 requests", hf, ok)
	}
	if s.TotalRequests != 3 {
		t.Errorf("totalRequests = %d, want 3", s.TotalRequests)
	}

	fams := scrape(t, m)
	for name, f := range fams {
		for _, mt := range f.GetMetric() {
			for _, lp := range mt.GetLabel() {
				if lp.GetName() == "provider" && lp.GetValue() == "cerebras" {
					t.Errorf("stale series %s{provider=cerebras}", name)
				}
			}
		}
	}
	if got := counter(t, fams, "ralf_provider_up", map[string]string{"provider": "groq"}); got != 0 {
		t.Errorf("groq up = %v, want 0", got)
	}
	if got := counter(t, fams, "ralf_tokens_total", map[string]string{"provider": "groq", "direction": "in"}); got != 5 {
		t.Errorf("groq tokens in = %v, want 5", got)
	}

	// Back in the config: listed again, counting from zero.
	m.SetProviders([]ProviderState{{"groq", true}, {"cerebras", true}})
	m.SetProviderUp("cerebras", false)
	if got := m.Stats().Services["cerebras"]; got.Requests != 0 {
		t.Errorf("re-added cerebras requests = %d, want 0", got.Requests)
	}
	fams = scrape(t, m)
	if got := counter(t, fams, "ralf_provider_up", map[string]string{"provider": "cerebras"}); got != 0 {
		t.Errorf("cerebras up = %v, want 0", got)
	}
	if find(fams, "ralf_provider_up", map[string]string{"provider": "hf"}) != nil {
		t.Error("hf up series kept after its removal")
	}
}

func TestProvidersWithoutSetProviders(t *testing.T) {
	// A gateway that never calls SetProviders still gets per-provider numbers.
	m := New()
	m.Request(Record{Provider: "groq", Outcome: OutcomeOK, Duration: 250 * time.Millisecond})
	m.Failover("gemini")
	s := m.Stats()
	if got := s.Services["groq"]; got.Requests != 1 || got.AvgDuration != 250 {
		t.Errorf("groq = %+v", got)
	}
	if got := s.Services["gemini"]; got.Requests != 1 || got.Errors != 1 || got.SuccessRate != "0.00%" {
		t.Errorf("gemini = %+v", got)
	}
}

func TestConcurrentRecording(t *testing.T) {
	m := New()
	m.SetProviders([]ProviderState{{"groq", true}, {"gemini", true}})
	h := m.Handler(HandlerOptions{})
	const workers, per = 8, 500
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := []string{"alice", "bob", "carol"}[w%3]
			for i := range per {
				m.StreamStart()
				m.Attempt("groq", OutcomeOK)
				m.Request(Record{Provider: "groq", Outcome: OutcomeOK, Duration: time.Millisecond, TokensIn: 1,
					TokensOut: 2, Client: client})
				if i%10 == 0 {
					m.Failover("gemini")
					m.Request(Record{Provider: "flaky", Outcome: OutcomeError})
				}
				m.StreamEnd()
			}
		}()
	}
	stop := make(chan struct{})
	var readers sync.WaitGroup
	readers.Add(1)
	go func() {
		defer readers.Done()
		up := false
		for {
			select {
			case <-stop:
				return
			default:
			}
			up = !up
			m.SetProviders([]ProviderState{{"groq", true}, {"gemini", up}})
			get(t, h, "/metrics", nil).Body.Close()
			get(t, h, "/metrics?format=prometheus", nil).Body.Close()
		}
	}()
	wg.Wait()
	close(stop)
	readers.Wait()

	s := m.Stats()
	if want := int64(workers*per + workers*per/10); s.TotalRequests != want {
		t.Errorf("totalRequests = %d, want %d", s.TotalRequests, want)
	}
	if got := s.Services["groq"]; got.Requests != workers*per || got.Errors != 0 {
		t.Errorf("groq = %+v, want %d requests", got, workers*per)
	}
	if got := s.Services["gemini"]; got.Errors != workers*per/10 {
		t.Errorf("gemini errors = %d, want %d", got.Errors, workers*per/10)
	}
	if _, ok := s.Services["flaky"]; ok {
		t.Error("flaky is not in the set but was listed")
	}
	if s.InFlight != 0 {
		t.Errorf("inFlight = %d, want 0", s.InFlight)
	}
	var tokIn int64
	for _, c := range s.Clients {
		tokIn += c.TokensIn
	}
	if tokIn != workers*per {
		t.Errorf("client tokens in = %d, want %d", tokIn, workers*per)
	}
	fams := scrape(t, m)
	if got := counter(t, fams, "ralf_requests_total", map[string]string{"provider": "groq", "outcome": "ok"}); got != workers*per {
		t.Errorf("ralf_requests_total{groq,ok} = %v, want %d", got, workers*per)
	}
}

func TestRegistriesAreIndependent(t *testing.T) {
	a, b := New(), New()
	a.Request(Record{Provider: "groq", Outcome: OutcomeOK})
	if got := b.Stats().TotalRequests; got != 0 {
		t.Errorf("second Metrics saw %d requests", got)
	}
	if find(scrape(t, b), "ralf_requests_total", map[string]string{"provider": "groq"}) != nil {
		t.Error("second registry exposes the first one's series")
	}
}

func BenchmarkRequest(b *testing.B) {
	m := New()
	m.SetProviders([]ProviderState{{"groq", true}, {"gemini", true}})
	r := Record{Provider: "groq", Outcome: OutcomeOK, Status: 200, Duration: 800 * time.Millisecond,
		TTFB: 200 * time.Millisecond, Overhead: 150 * time.Microsecond, Attempts: 1, TokensIn: 40, TokensOut: 300,
		Client: "alice"}
	m.Request(r)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.Request(r)
		}
	})
}
