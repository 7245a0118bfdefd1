package gateway_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/ralf-gateway/ralf/core/config"
	"github.com/ralf-gateway/ralf/core/llm"
)

// Recognisable secrets and message text: none of them may show up in a log line,
// /health or /metrics.
const (
	obsCanary         = "zebra-CANARY-7f3a"
	obsCanaryMessage  = obsCanary + " quartz lantern"
	obsProviderSecret = "pk-PROVIDERSECRET-5e1d9c"
	obsClientSecret   = "ck-CLIENTSECRET-8b2f4a71"
	obsMasterSecret   = "mk-MASTERSECRET-3c9e0d42"
)

// obsDialect is a test dialect whose factory fails for model "factory-error" and
// whose provider panics for model "panic": the two failures the mock cannot produce.
const obsDialect = "obstest"

type obsPanicProvider struct{ name, model string }

func (p obsPanicProvider) Name() string { return p.name }
func (p obsPanicProvider) ChatStream(context.Context, *llm.ChatRequest) (llm.Stream, error) {
	if p.model == "panic-mid" {
		return &obsPanicStream{}, nil
	}
	panic("obstest provider panicked")
}

// obsPanicStream gives one chunk of text, then panics.
type obsPanicStream struct{ sent bool }

func (s *obsPanicStream) Recv() (llm.Chunk, error) {
	if !s.sent {
		s.sent = true
		return llm.Chunk{Text: []byte("Hel")}, nil
	}
	panic("obstest stream panicked")
}
func (s *obsPanicStream) Close() error { return nil }

func init() {
	llm.Register(obsDialect, func(cfg config.Provider, _ llm.Deps) (llm.Provider, error) {
		if cfg.Model == "factory-error" {
			return nil, errors.New("obstest: refused to build")
		}
		return obsPanicProvider{cfg.Name, cfg.Model}, nil
	})
}

var obsRequestIDRe = regexp.MustCompile(`^[0-9a-f]{32}$`)

// obsAccessLines returns the access log entries written so far.
func obsAccessLines(e *env) []observer.LoggedEntry {
	var out []observer.LoggedEntry
	for _, le := range e.logs.All() {
		if le.LoggerName == "access" && le.Message == "request" {
			out = append(out, le)
		}
	}
	return out
}

// obsAccessLine waits for the one access log entry of request id (the line is written
// when the handler returns, which may be just after the client has the answer) and
// fails if there is more than one.
func obsAccessLine(t *testing.T, e *env, id string) map[string]any {
	t.Helper()
	var found []map[string]any
	waitFor(t, "access log line of "+id, func() bool {
		found = found[:0]
		for _, le := range obsAccessLines(e) {
			if m := le.ContextMap(); m["request_id"] == id {
				found = append(found, m)
			}
		}
		return len(found) > 0
	})
	if len(found) != 1 {
		t.Fatalf("%d access log lines for request %s, want exactly 1: %v", len(found), id, found)
	}
	return found[0]
}

// num reads a numeric log field whatever its Go type.
func obsNum(v any) float64 {
	switch n := v.(type) {
	case int64:
		return float64(n)
	case int:
		return float64(n)
	case float64:
		return n
	}
	return -1
}

// obsLogText is every log entry at any level rendered as JSON, one per line.
func obsLogText(t *testing.T, e *env) string {
	t.Helper()
	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	var b strings.Builder
	for _, le := range e.logs.All() {
		buf, err := enc.EncodeEntry(le.Entry, le.Context)
		if err != nil {
			t.Fatalf("encode log entry %q: %v", le.Message, err)
		}
		b.Write(buf.Bytes())
		buf.Free()
	}
	return b.String()
}

func obsChatBody(text string, extra string) string {
	b, _ := json.Marshal(text)
	return `{` + extra + `"messages":[{"role":"user","content":` + string(b) + `}]}`
}

// TestAccessLogOneLinePerRequest: each request gets exactly one JSON access line with
// the SPEC's fields; a failover names the provider that answered after 2 attempts; a
// rejected request carries its error message.
func TestAccessLogOneLinePerRequest(t *testing.T) {
	e := newEnv(t, `
routing: {max_attempts: 2, failure_threshold: 100}
auth: {enabled: true, master_key: "`+obsMasterSecret+`", keys: ["`+obsClientSecret+`"]}
providers:
  - {name: bad, base_url: "{{MOCK}}/v1", model: "mock+status=503", api_key: "`+obsProviderSecret+`"}
  - {name: good, base_url: "{{MOCK}}/v1", model: "mock+chunks=4", api_key: "`+obsProviderSecret+`"}
store: memory://
`)
	key := []string{"Authorization", "Bearer " + obsClientSecret}
	with := func(id string, extra ...string) []string {
		return append(append([]string{"X-Request-Id", id}, key...), extra...)
	}
	// "one two three four" is 4 prompt words; the mock counts a token per word in and
	// one per chunk out.
	tests := []struct {
		name, method, path, body string
		hdr                      []string
		status                   int
		want                     map[string]any // exact field values
		wantErr                  string         // substring of the error field
		noFields                 []string
	}{
		{name: "failover", method: "POST", path: "/chat", body: obsChatBody("one two three four", ""),
			hdr: with("req-failover"), status: 200,
			want:     map[string]any{"provider": "good", "attempts": 2.0, "client": "static-1", "tokens_in": 4.0, "tokens_out": 4.0},
			noFields: []string{"error"}},
		{name: "answered at once", method: "POST", path: "/chat", body: obsChatBody("one two three four", `"provider":"good",`),
			hdr: with("req-ok"), status: 200,
			want:     map[string]any{"provider": "good", "attempts": 1.0, "client": "static-1", "tokens_in": 4.0, "tokens_out": 4.0},
			noFields: []string{"error"}},
		{name: "v1 non-stream", method: "POST", path: "/v1/chat/completions",
			body: `{"model":"good","messages":[{"role":"user","content":"one two"}]}`,
			hdr:  with("req-v1"), status: 200,
			want: map[string]any{"provider": "good", "attempts": 1.0, "client": "static-1", "tokens_in": 2.0, "tokens_out": 4.0}},
		{name: "validation rejected", method: "POST", path: "/chat", body: `{"messages":[]}`,
			hdr: with("req-invalid"), status: 400, wantErr: "messages array cannot be empty",
			want: map[string]any{"client": "static-1", "outcome": "rejected"}, noFields: []string{"provider", "attempts"}},
		{name: "upstream refused", method: "POST", path: "/chat", body: obsChatBody("hi", `"provider":"bad",`),
			hdr: with("req-502"), status: 502, wantErr: "503",
			want: map[string]any{"provider": "bad", "attempts": 1.0, "outcome": "error"}},
		{name: "no key", method: "POST", path: "/chat", body: obsChatBody("hi", ""),
			hdr: []string{"X-Request-Id", "req-401"}, status: 401, wantErr: "API key",
			noFields: []string{"client", "provider"}},
		{name: "unknown key", method: "POST", path: "/chat", body: obsChatBody("hi", ""),
			hdr: []string{"X-Request-Id", "req-403", "Authorization", "Bearer ck-not-a-key"}, status: 403, wantErr: "nvalid"},
		{name: "not found", method: "GET", path: "/nope", hdr: with("req-404"), status: 404, wantErr: "Not found"},
		{name: "wrong method", method: "GET", path: "/chat", hdr: with("req-405"), status: 405, wantErr: "not allowed"},
		{name: "health", method: "GET", path: "/health", hdr: []string{"X-Request-Id", "req-health"}, status: 200,
			noFields: []string{"error", "provider"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.do(tt.method, tt.path, tt.body, tt.hdr...)
			if r.status != tt.status {
				t.Fatalf("status %d, want %d: %s", r.status, tt.status, r.body)
			}
			id := r.header.Get("X-Request-Id")
			f := obsAccessLine(t, e, id)
			for k, v := range map[string]any{"method": tt.method, "path": tt.path, "status": float64(tt.status)} {
				if got := f[k]; got != v && obsNum(got) != v {
					t.Errorf("%s = %v, want %v", k, got, v)
				}
			}
			for k, v := range tt.want {
				got := f[k]
				if s, ok := v.(string); ok {
					if got != s {
						t.Errorf("%s = %v, want %q", k, got, s)
					}
				} else if obsNum(got) != v {
					t.Errorf("%s = %v, want %v", k, got, v)
				}
			}
			if d, ok := f["duration_ms"].(float64); !ok || d < 0 {
				t.Errorf("duration_ms = %v", f["duration_ms"])
			}
			if tt.status == 200 && tt.method == "POST" {
				if d, ok := f["ttfb_ms"].(float64); !ok || d <= 0 || d > f["duration_ms"].(float64) {
					t.Errorf("ttfb_ms = %v (duration_ms %v)", f["ttfb_ms"], f["duration_ms"])
				}
			}
			if tt.wantErr != "" {
				if s, _ := f["error"].(string); !strings.Contains(s, tt.wantErr) {
					t.Errorf("error = %q, want it to say %q", s, tt.wantErr)
				}
			}
			for _, k := range tt.noFields {
				if v, ok := f[k]; ok {
					t.Errorf("unexpected field %s = %v", k, v)
				}
			}
		})
	}

	// Every access line is one line of JSON, whatever its content.
	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	for _, le := range obsAccessLines(e) {
		buf, err := enc.EncodeEntry(le.Entry, le.Context)
		if err != nil {
			t.Fatal(err)
		}
		line := strings.TrimSuffix(buf.String(), "\n")
		buf.Free()
		var m map[string]any
		if strings.Contains(line, "\n") || json.Unmarshal([]byte(line), &m) != nil {
			t.Fatalf("access line is not one JSON line: %q", line)
		}
	}
}

// TestDebugLogsFailedAttempts: at debug level each failed upstream attempt is logged
// with its provider and reason, tied to the request id.
func TestDebugLogsFailedAttempts(t *testing.T) {
	e := newEnv(t, `
routing: {max_attempts: 3, failure_threshold: 100}
providers:
  - {name: bad, base_url: "{{MOCK}}/v1", model: "mock+status=503"}
  - {name: worse, base_url: "{{MOCK}}/v1", model: "mock+status=429"}
  - {name: good, base_url: "{{MOCK}}/v1", model: "mock"}
store: memory://
`)
	r := e.chat(hello, "X-Request-Id", "dbg-1")
	if r.status != 200 || r.header.Get("X-Provider") != "good" {
		t.Fatalf("%d %q", r.status, r.header.Get("X-Provider"))
	}
	if f := obsAccessLine(t, e, "dbg-1"); obsNum(f["attempts"]) != 3 {
		t.Fatalf("attempts %v, want 3", f["attempts"])
	}
	reasons := map[string]string{}
	for _, le := range e.logs.FilterLevelExact(zap.DebugLevel).All() {
		m := le.ContextMap()
		if m["request_id"] != "dbg-1" {
			continue
		}
		p, _ := m["provider"].(string)
		reason := fmt.Sprint(m["error"])
		reasons[p] += reason
	}
	for p, code := range map[string]string{"bad": "503", "worse": "429"} {
		if !strings.Contains(reasons[p], code) {
			t.Errorf("no debug line for the failed attempt on %s with its reason (%s): %v", p, code, reasons)
		}
	}
	if _, ok := reasons["good"]; ok {
		t.Errorf("the answering provider logged as failed: %v", reasons)
	}
	// None of it above debug: info-level logs stay one line per request.
	for _, le := range e.logs.All() {
		if le.Level >= zap.InfoLevel && le.LoggerName != "access" && le.ContextMap()["request_id"] == "dbg-1" {
			t.Errorf("per-attempt line above debug: %s %v", le.Message, le.ContextMap())
		}
	}
}

// TestNothingSecretOrSaidIsLogged: message content, answers, client/master/provider
// keys appear in no log line at any level (debug included), whatever happens.
func TestNothingSecretOrSaidIsLogged(t *testing.T) {
	e := newEnv(t, `
routing: {max_attempts: 2, failure_threshold: 100, first_byte_timeout: 500ms, idle_timeout: 500ms}
auth: {enabled: true, master_key: "`+obsMasterSecret+`", keys: ["`+obsClientSecret+`"]}
limits: {max_message_chars: 200, rate: {enabled: true, requests: 1000, window: 60s}}
providers:
  - {name: bad, base_url: "{{MOCK}}/v1", model: "mock+status=503", api_key: "`+obsProviderSecret+`"}
  - {name: good, base_url: "{{MOCK}}/v1", model: "mock", api_key: "`+obsProviderSecret+`"}
  - {name: gem, dialect: gemini, base_url: "{{MOCK}}/v1beta", model: "mock", api_key: "`+obsProviderSecret+`"}
  - {name: gone, dialect: gemini, base_url: "http://127.0.0.1:1/v1beta", model: "mock", api_key: "`+obsProviderSecret+`"}
store: memory://
`)
	key := []string{"Authorization", "Bearer " + obsClientSecret}
	managed, _, err := e.keys.Create(context.Background(), "team-a")
	if err != nil {
		t.Fatal(err)
	}
	mkey := []string{"X-API-Key", managed}
	msg := obsChatBody(obsCanaryMessage, "")
	reqs := []struct {
		method, path, body string
		hdr                []string
	}{
		{"POST", "/chat", msg, key}, // ring: bad fails over to good
		{"POST", "/chat", msg, mkey},
		{"POST", "/chat", obsChatBody(obsCanaryMessage, `"provider":"gem",`), key},
		{"POST", "/chat", obsChatBody(obsCanaryMessage, `"provider":"gone",`), key},
		{"POST", "/v1/chat/completions", `{"model":"good","stream":true,"messages":[{"role":"user","content":"` + obsCanaryMessage + `"}]}`, key},
		{"POST", "/v1/chat/completions", `{"model":"good","messages":[{"role":"user","content":"` + obsCanaryMessage + `"}]}`, key},
		{"POST", "/v1/chat/completions", `{"model":"good/mock+cut=2","stream":true,"messages":[{"role":"user","content":"` + obsCanaryMessage + `"}]}`, key},
		{"POST", "/v1/chat/completions", `{"model":"good/mock+error_event=2","stream":true,"messages":[{"role":"user","content":"` + obsCanaryMessage + `"}]}`, key},
		{"POST", "/v1/chat/completions", `{"model":"good/mock+hang_after=2","stream":true,"messages":[{"role":"user","content":"` + obsCanaryMessage + `"}]}`, key},
		{"POST", "/v1/chat/completions", `{"model":"good/mock+status=400","messages":[{"role":"user","content":"` + obsCanaryMessage + `"}]}`, key},
		{"POST", "/chat", obsChatBody(strings.Repeat(obsCanaryMessage+" ", 20), ""), key},              // too long
		{"POST", "/chat", `{"messages":[{"role":"user","content":"` + obsCanaryMessage + `"}]}}`, key}, // malformed
		{"POST", "/chat", `{"messages":[{"role":"user","content":"` + obsCanaryMessage + `", "x": nope}]}`, key},
		{"POST", "/chat", msg, []string{"Authorization", "Bearer " + obsMasterSecret}}, // master is no client key
		{"POST", "/chat", msg, []string{"X-API-Key", obsClientSecret + "x"}},
		{"POST", "/chat", msg, []string{"X-API-Key", "sk_" + obsCanary}},
		{"GET", "/admin/keys", "", []string{"Authorization", "Bearer " + obsMasterSecret}},
		{"GET", "/metrics", "", nil},
		{"GET", "/health", "", nil},
	}
	for i, rq := range reqs {
		r := e.do(rq.method, rq.path, rq.body, rq.hdr...)
		for _, s := range []string{obsProviderSecret, obsClientSecret, obsMasterSecret} {
			if strings.Contains(r.body, s) || strings.Contains(fmt.Sprint(r.header), s) {
				t.Errorf("request %d (%s %s): a key reached the client", i, rq.method, rq.path)
			}
		}
	}
	waitFor(t, "every request logged", func() bool { return len(obsAccessLines(e)) >= len(reqs) })
	logs := obsLogText(t, e)
	if !strings.Contains(logs, `"level":"debug"`) {
		t.Fatal("no debug line at all: the test would not see debug-level leaks")
	}
	for _, s := range []string{obsCanary, "quartz lantern", obsProviderSecret, obsClientSecret, obsMasterSecret, managed} {
		if strings.Contains(logs, s) {
			for _, line := range strings.Split(logs, "\n") {
				if strings.Contains(line, s) {
					t.Errorf("logged %q: %s", s, line)
				}
			}
		}
	}
}

// TestRequestIDOnEveryResponse: every kind of answer carries X-Request-Id, the same id
// as its access log line; well-formed incoming ids are kept, malformed ones replaced.
func TestRequestIDOnEveryResponse(t *testing.T) {
	e := newEnv(t, `
routing: {max_attempts: 1, failure_threshold: 100}
auth: {enabled: true, master_key: "`+obsMasterSecret+`", keys: ["`+obsClientSecret+`"]}
limits: {rate: {enabled: true, requests: 100, window: 60s}}
cors: {allowed_origins: ["https://app.example"]}
providers:
  - {name: good, base_url: "{{MOCK}}/v1", model: "mock+chunks=2"}
  - {name: bad, base_url: "{{MOCK}}/v1", model: "mock+status=400"}
  - {name: boom, dialect: `+obsDialect+`, base_url: "{{MOCK}}/v1", model: "panic"}
store: memory://
`)
	key := []string{"Authorization", "Bearer " + obsClientSecret}
	tests := []struct {
		name, method, path, body string
		hdr                      []string
		status                   int
	}{
		{"chat 200", "POST", "/chat", obsChatBody("hi", `"provider":"good",`), key, 200},
		{"v1 200", "POST", "/v1/chat/completions", `{"model":"good","stream":true,"messages":[{"role":"user","content":"hi"}]}`, key, 200},
		{"models", "GET", "/v1/models", "", key, 200},
		{"400", "POST", "/chat", `{"messages":[{"role":"robot","content":"hi"}]}`, key, 400},
		{"401", "POST", "/chat", obsChatBody("hi", ""), nil, 401},
		{"403", "POST", "/v1/chat/completions", obsChatBody("hi", ""), []string{"X-API-Key", "nope"}, 403},
		{"404", "GET", "/nowhere", "", nil, 404},
		{"405", "DELETE", "/health", "", nil, 405},
		{"413", "POST", "/chat", obsChatBody(strings.Repeat("a", 2<<20), ""), key, 413},
		{"415", "POST", "/chat", obsChatBody("hi", ""), append([]string{"Content-Type", "text/xml"}, key...), 415},
		{"502", "POST", "/chat", obsChatBody("hi", `"provider":"bad",`), key, 502},
		{"500 panic", "POST", "/chat", obsChatBody("hi", `"provider":"boom",`), key, 500},
		{"OPTIONS preflight", "OPTIONS", "/chat", "", []string{"Origin", "https://app.example", "Access-Control-Request-Method", "POST"}, 204},
		{"health", "GET", "/health", "", nil, 200},
		{"health HEAD", "HEAD", "/health", "", nil, 200},
		{"metrics json", "GET", "/metrics", "", nil, 200},
		{"metrics prometheus", "GET", "/metrics?format=prometheus", "", nil, 200},
		{"metrics HEAD", "HEAD", "/metrics", "", nil, 200},
		{"root", "GET", "/", "", nil, 200},
	}
	seen := map[string]bool{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.do(tt.method, tt.path, tt.body, tt.hdr...)
			if r.status != tt.status {
				t.Fatalf("status %d, want %d: %.200s", r.status, tt.status, r.body)
			}
			id := r.header.Get("X-Request-Id")
			if !obsRequestIDRe.MatchString(id) {
				t.Fatalf("X-Request-Id %q", id)
			}
			if seen[id] {
				t.Fatalf("X-Request-Id %s reused", id)
			}
			seen[id] = true
			f := obsAccessLine(t, e, id)
			if obsNum(f["status"]) != float64(tt.status) || f["path"] != tt.path[:strings.IndexAny(tt.path+"?", "?")] {
				t.Fatalf("access line %v for a %d on %s", f, tt.status, tt.path)
			}
		})
	}

	t.Run("incoming ids", func(t *testing.T) {
		for _, tc := range []struct {
			in   string
			kept bool
		}{
			{"abc-123.XYZ:9_z", true},
			{strings.Repeat("a", 128), true},
			{"has space", false},
			{strings.Repeat("a", 300), false},
			{"semi;colon", false},
			{"ümlaut", false},
		} {
			for _, path := range []string{"/chat", "/health", "/nowhere"} {
				var r resp
				if path == "/chat" {
					r = e.chat(obsChatBody("hi", `"provider":"good",`), append([]string{"X-Request-Id", tc.in}, key...)...)
				} else {
					r = e.do("GET", path, "", "X-Request-Id", tc.in)
				}
				got := r.header.Get("X-Request-Id")
				if tc.kept && got != tc.in {
					t.Errorf("%s: well-formed id %.20q replaced by %q", path, tc.in, got)
				}
				if !tc.kept && !obsRequestIDRe.MatchString(got) {
					t.Errorf("%s: malformed id %.20q gave %q, want a fresh id", path, tc.in, got)
				}
			}
		}
	})
}

// obsScrape reads /metrics in the Prometheus format through the gateway.
func obsScrape(t *testing.T, e *env, hdr ...string) map[string]*dto.MetricFamily {
	t.Helper()
	path := "/metrics?format=prometheus"
	if len(hdr) > 0 {
		path = "/metrics"
	}
	r := e.do("GET", path, "", hdr...)
	if r.status != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), "text/plain") {
		t.Fatalf("prometheus scrape: %d %q", r.status, r.header.Get("Content-Type"))
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(r.body))
	if err != nil {
		t.Fatalf("parse exposition: %v", err)
	}
	return fams
}

// obsSeries is the series of family name with exactly these labels among its own
// (other labels ignored); nil when there is none.
func obsSeries(fams map[string]*dto.MetricFamily, name string, labels ...string) *dto.Metric {
next:
	for _, mt := range fams[name].GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			ok := false
			for _, lp := range mt.GetLabel() {
				if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
					ok = true
				}
			}
			if !ok {
				continue next
			}
		}
		return mt
	}
	return nil
}

// obsMetric is the value of that series (a histogram's sample count); -1 when there
// is none.
func obsMetric(fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	mt := obsSeries(fams, name, labels...)
	switch {
	case mt == nil:
	case mt.GetCounter() != nil:
		return mt.GetCounter().GetValue()
	case mt.GetGauge() != nil:
		return mt.GetGauge().GetValue()
	case mt.GetHistogram() != nil:
		return float64(mt.GetHistogram().GetSampleCount())
	case mt.GetUntyped() != nil:
		return mt.GetUntyped().GetValue()
	}
	return -1
}

type obsMetricsDoc struct {
	Uptime        float64 `json:"uptime"`
	TotalRequests int64   `json:"totalRequests"`
	Services      map[string]struct {
		Requests    int64   `json:"requests"`
		Errors      int64   `json:"errors"`
		AvgDuration *int64  `json:"avgDuration"`
		LastUsed    *string `json:"lastUsed"`
		SuccessRate string  `json:"successRate"`
	} `json:"services"`
	Tokens  map[string]struct{ In, Out int64 } `json:"tokens"`
	Clients map[string]struct {
		Requests  int64 `json:"requests"`
		TokensIn  int64 `json:"tokensIn"`
		TokensOut int64 `json:"tokensOut"`
	} `json:"clients"`
	InFlight    int64 `json:"inFlight"`
	RateLimited int64 `json:"rateLimited"`
}

func obsMetricsJSON(t *testing.T, e *env, hdr ...string) obsMetricsDoc {
	t.Helper()
	r := e.do("GET", "/metrics", "", hdr...)
	if r.status != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), "application/json") {
		t.Fatalf("/metrics: %d %q %s", r.status, r.header.Get("Content-Type"), r.body)
	}
	var m obsMetricsDoc
	if err := json.Unmarshal([]byte(r.body), &m); err != nil {
		t.Fatalf("/metrics JSON: %v: %s", err, r.body)
	}
	return m
}

// TestMetricsAfterKnownTraffic drives known traffic through the gateway and reads it
// back from /metrics in JSON and in both ways of asking for Prometheus.
func TestMetricsAfterKnownTraffic(t *testing.T) {
	yaml := `
routing: {max_attempts: 2, failure_threshold: 1, cooldown: 60s}
auth: {enabled: true, master_key: "` + obsMasterSecret + `", keys: ["` + obsClientSecret + `"]}
providers:
  - {name: bad, base_url: "{{MOCK}}/v1", model: "mock+status=503", api_key: "` + obsProviderSecret + `"}
  - {name: oai, base_url: "{{MOCK}}/v1", model: "mock+chunks=4"}
  - {name: gem, dialect: gemini, base_url: "{{MOCK}}/v1beta", model: "mock+chunks=3"}
store: memory://
`
	e := newEnv(t, yaml)
	key := []string{"Authorization", "Bearer " + obsClientSecret}
	five := "one two three four five" // 5 prompt tokens at the mock
	steps := []struct {
		name, path, body string
		status           int
		provider         string
	}{
		// The ring starts at bad: it fails (and cools: threshold 1), oai answers.
		{"failover", "/chat", obsChatBody(five, ""), 200, "oai"},
		{"gemini usageMetadata", "/chat", obsChatBody(five, `"provider":"gem",`), 200, "gem"},
		{"openai usage, non-stream", "/v1/chat/completions", `{"model":"oai","messages":[{"role":"user","content":"` + five + `"}]}`, 200, "oai"},
		{"upstream 400", "/v1/chat/completions", `{"model":"oai/mock+status=400","stream":true,"messages":[{"role":"user","content":"` + five + `"}]}`, 502, ""},
		{"rejected", "/chat", `{"messages":[{"role":"robot","content":"x"}]}`, 400, ""},
	}
	for _, s := range steps {
		r := e.do("POST", s.path, s.body, key...)
		if r.status != s.status || (s.provider != "" && r.header.Get("X-Provider") != s.provider) {
			t.Fatalf("%s: %d %q: %s", s.name, r.status, r.header.Get("X-Provider"), r.body)
		}
	}
	// Unauthenticated requests are refused before they are chat requests.
	if r := e.chat(hello); r.status != 401 {
		t.Fatalf("no key: %d", r.status)
	}
	waitFor(t, "all requests logged", func() bool { return len(obsAccessLines(e)) >= len(steps)+1 })

	m := obsMetricsJSON(t, e)
	if m.TotalRequests != 5 {
		t.Errorf("totalRequests %d, want 5", m.TotalRequests)
	}
	if m.Uptime <= 0 {
		t.Errorf("uptime %v", m.Uptime)
	}
	wantSvc := map[string]struct {
		requests, errors int64
		rate             string
	}{
		"bad": {1, 1, "0.00%"},   // the failed-over attempt, counted as the seed did
		"oai": {3, 0, "100.00%"}, // two answers, one upstream 400 for a model the client chose: its fault, not oai's
		"gem": {1, 0, "100.00%"}, // one answer
	}
	if len(m.Services) != len(wantSvc) {
		t.Errorf("services %v", m.Services)
	}
	for name, w := range wantSvc {
		s, ok := m.Services[name]
		if !ok {
			t.Errorf("no service %s", name)
			continue
		}
		if s.Requests != w.requests || s.Errors != w.errors || s.SuccessRate != w.rate {
			t.Errorf("%s: requests %d errors %d successRate %q, want %d %d %q", name, s.Requests, s.Errors, s.SuccessRate, w.requests, w.errors, w.rate)
		}
		if s.AvgDuration == nil || *s.AvgDuration < 0 {
			t.Errorf("%s: avgDuration %v", name, s.AvgDuration)
		}
		if s.LastUsed == nil {
			t.Errorf("%s: lastUsed null after use", name)
		} else if ts, err := time.Parse(time.RFC3339Nano, *s.LastUsed); err != nil || time.Since(ts) > time.Minute || time.Since(ts) < -time.Second {
			t.Errorf("%s: lastUsed %q", name, *s.LastUsed)
		}
	}
	wantTok := map[string][2]int64{"oai": {10, 8}, "gem": {5, 3}, "bad": {0, 0}}
	for name, w := range wantTok {
		if got := m.Tokens[name]; got.In != w[0] || got.Out != w[1] {
			t.Errorf("tokens of %s: %+v, want in %d out %d", name, got, w[0], w[1])
		}
	}
	if c := m.Clients["static-1"]; c.Requests != 5 || c.TokensIn != 15 || c.TokensOut != 11 {
		t.Errorf("client static-1: %+v, want 5 requests, 15 in, 11 out (all: %v)", c, m.Clients)
	}
	for name := range m.Clients {
		if strings.Contains(name, obsClientSecret) {
			t.Errorf("client key in /metrics")
		}
	}
	if m.InFlight != 0 {
		t.Errorf("inFlight %d after every stream ended", m.InFlight)
	}

	byQuery := obsScrape(t, e)
	byAccept := obsScrape(t, e, "Accept", "text/plain;version=0.0.4")
	for name, fams := range map[string]map[string]*dto.MetricFamily{"?format=prometheus": byQuery, "Accept": byAccept} {
		t.Run(name, func(t *testing.T) {
			for _, c := range []struct {
				family string
				labels []string
				want   float64
			}{
				{"ralf_requests_total", []string{"provider", "oai", "outcome", "ok"}, 2},
				{"ralf_requests_total", []string{"provider", "oai", "outcome", "rejected"}, 1},
				{"ralf_requests_total", []string{"provider", "oai", "outcome", "error"}, 0},
				{"ralf_requests_total", []string{"provider", "gem", "outcome", "ok"}, 1},
				{"ralf_requests_total", []string{"provider", "bad", "outcome", "ok"}, 0},
				{"ralf_requests_total", []string{"provider", "none", "outcome", "rejected"}, 1},
				{"ralf_tokens_total", []string{"provider", "oai", "direction", "in"}, 10},
				{"ralf_tokens_total", []string{"provider", "oai", "direction", "out"}, 8},
				{"ralf_tokens_total", []string{"provider", "gem", "direction", "in"}, 5},
				{"ralf_tokens_total", []string{"provider", "gem", "direction", "out"}, 3},
				{"ralf_client_requests_total", []string{"client", "static-1"}, 5},
				{"ralf_client_tokens_total", []string{"client", "static-1", "direction", "out"}, 11},
				{"ralf_failovers_total", []string{"provider", "bad"}, 1},
				{"ralf_upstream_attempts_total", []string{"provider", "bad", "outcome", "error"}, 1},
				{"ralf_upstream_attempts_total", []string{"provider", "oai", "outcome", "ok"}, 2},
				{"ralf_provider_up", []string{"provider", "bad"}, 0}, // cooling since the failover
				{"ralf_provider_up", []string{"provider", "oai"}, 1},
				{"ralf_provider_up", []string{"provider", "gem"}, 1},
				{"ralf_inflight_streams", nil, 0},
				{"ralf_rate_limited_total", nil, 0},
				{"ralf_request_duration_seconds", []string{"provider", "oai"}, 2}, // not the rejected one
				{"ralf_time_to_first_token_seconds", []string{"provider", "gem"}, 1},
				// Every chat request, rejected ones included, spends time in ralf.
				{"ralf_gateway_overhead_seconds", nil, 5},
				// gw.Apply does not count reloads: cmd/ralf's applyReload does, once.
				{"ralf_config_reloads_total", []string{"result", "ok"}, 0},
			} {
				if got := obsMetric(fams, c.family, c.labels...); got != c.want {
					t.Errorf("%s%v = %v, want %v", c.family, c.labels, got, c.want)
				}
			}
		})
	}

	// A reload through Apply keeps the counters of unchanged providers and drops
	// the series of a removed one; it does not count itself as a reload.
	e.apply(strings.Replace(yaml, `  - {name: bad, base_url: "{{MOCK}}/v1", model: "mock+status=503", api_key: "`+obsProviderSecret+`"}`+"\n", "", 1))
	m = obsMetricsJSON(t, e)
	if _, ok := m.Services["bad"]; ok || m.Services["oai"].Requests != 3 || m.TotalRequests != 5 {
		t.Errorf("after reload: %+v", m.Services)
	}
	fams := obsScrape(t, e)
	if v := obsMetric(fams, "ralf_provider_up", "provider", "bad"); v != -1 {
		t.Errorf("removed provider still has provider_up %v", v)
	}
	if v := obsMetric(fams, "ralf_config_reloads_total", "result", "ok"); v != 0 {
		t.Errorf("gw.Apply counted a reload: %v (cmd/ralf counts it)", v)
	}
}

// TestMetricsRateLimited: a 429 is counted in JSON and Prometheus, logged with its
// message, and carries X-Request-Id.
func TestMetricsRateLimited(t *testing.T) {
	e := newEnv(t, `
limits: {rate: {enabled: true, requests: 1, window: 60s}}
providers:
  - {name: oai, base_url: "{{MOCK}}/v1", model: "mock+chunks=1"}
store: memory://
`)
	if r := e.chat(hello); r.status != 200 {
		t.Fatalf("first: %d", r.status)
	}
	r := e.chat(hello)
	if r.status != 429 || r.header.Get("X-Request-Id") == "" {
		t.Fatalf("second: %d %v", r.status, r.header)
	}
	f := obsAccessLine(t, e, r.header.Get("X-Request-Id"))
	if obsNum(f["status"]) != 429 || !strings.Contains(fmt.Sprint(f["error"]), "Rate limit exceeded") {
		t.Errorf("access line of a 429: %v", f)
	}
	if m := obsMetricsJSON(t, e); m.RateLimited != 1 {
		t.Errorf("rateLimited %d", m.RateLimited)
	}
	if v := obsMetric(obsScrape(t, e), "ralf_rate_limited_total"); v != 1 {
		t.Errorf("ralf_rate_limited_total %v", v)
	}
}

// TestInflightStreams: the in-flight gauge counts a stream while it runs and is back
// to 0 however streams end: complete, cut upstream, or the client leaving.
func TestInflightStreams(t *testing.T) {
	e := newEnv(t, `
routing: {max_attempts: 1, failure_threshold: 100, idle_timeout: 5s}
providers:
  - {name: oai, base_url: "{{MOCK}}/v1", model: "mock"}
store: memory://
`)
	inflight := func() (float64, int64) {
		return obsMetric(obsScrape(t, e), "ralf_inflight_streams"), obsMetricsJSON(t, e).InFlight
	}
	// Only streams that cannot end under the check are checked while they run: a
	// chunk a second, or one that hangs until the client leaves.
	for _, c := range []struct {
		model         string
		during, leave bool
	}{
		{"mock+chunks=2+slow=1s", true, false},
		{"mock+cut=2", false, false},
		{"mock+error_event=2", false, false},
		{"mock+hang_after=1", true, true},
	} {
		model := c.model
		t.Run(model, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			body := `{"model":"oai/` + model + `","stream":true,"messages":[{"role":"user","content":"hi"}]}`
			req, _ := http.NewRequestWithContext(ctx, "POST", e.srv.URL+"/v1/chat/completions", strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(res.Body)
			if _, err := br.ReadString('\n'); err != nil {
				t.Fatal(err)
			}
			if p, j := inflight(); c.during && (p != 1 || j != 1) {
				t.Errorf("in flight during the stream: prometheus %v json %d, want 1", p, j)
			}
			if c.leave {
				cancel() // the client leaves a stream that would never end
			} else {
				for {
					if _, err := br.ReadString('\n'); err != nil {
						break
					}
				}
			}
			res.Body.Close()
			waitFor(t, "in-flight streams back to 0", func() bool { p, j := inflight(); return p == 0 && j == 0 })
		})
	}
}

type obsHealthDoc struct {
	Status    string   `json:"status"`
	Services  []string `json:"services"`
	Providers []struct {
		Name          string     `json:"name"`
		Dialect       string     `json:"dialect"`
		Model         string     `json:"model"`
		State         string     `json:"state"`
		CooldownUntil *time.Time `json:"cooldownUntil"`
	} `json:"providers"`
	Config struct {
		Generation int64     `json:"generation"`
		LoadedAt   time.Time `json:"loadedAt"`
		LastError  string    `json:"lastError"`
	} `json:"config"`
	AuthEnabled      *bool      `json:"authEnabled"`
	RateLimitEnabled *bool      `json:"rateLimitEnabled"`
	Timestamp        *time.Time `json:"timestamp"`
}

func obsHealth(t *testing.T, e *env, wantStatus int) (obsHealthDoc, string) {
	t.Helper()
	r := e.do("GET", "/health", "")
	if r.status != wantStatus {
		t.Fatalf("/health %d, want %d: %s", r.status, wantStatus, r.body)
	}
	var h obsHealthDoc
	if err := json.Unmarshal([]byte(r.body), &h); err != nil {
		t.Fatalf("/health JSON: %v: %s", err, r.body)
	}
	for _, s := range []string{obsProviderSecret, obsClientSecret, obsMasterSecret} {
		if strings.Contains(r.body, s) {
			t.Fatalf("/health shows a secret: %s", r.body)
		}
	}
	return h, r.body
}

// TestHealth: ok, degraded while a provider cools, down with 503 when none can serve;
// provider states and cooldowns; the config generation, its load time and the last
// reload error; no secrets.
func TestHealth(t *testing.T) {
	// The providers reach the mock through a switch that makes the next request fail.
	var failNext atomic.Bool
	var mockURL *url.URL
	sw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if failNext.Swap(false) {
			http.Error(w, `{"error":{"message":"down"}}`, 503)
			return
		}
		httputil.NewSingleHostReverseProxy(mockURL).ServeHTTP(w, r)
	}))
	defer sw.Close()
	yaml := `
routing: {max_attempts: 2, failure_threshold: 1, cooldown: 45s}
auth: {enabled: true, master_key: "` + obsMasterSecret + `", keys: ["` + obsClientSecret + `"]}
providers:
  - {name: flaky, base_url: "` + sw.URL + `/v1", model: "mock", api_key: "` + obsProviderSecret + `"}
  - {name: gem, dialect: gemini, base_url: "` + sw.URL + `/v1beta", model: "mock", api_key: "` + obsProviderSecret + `"}
store: memory://
`
	start := time.Now()
	e := newEnv(t, yaml)
	mockURL, _ = url.Parse(e.mock.URL())
	key := []string{"Authorization", "Bearer " + obsClientSecret}

	h, body := obsHealth(t, e, 200)
	if h.Status != "ok" || len(h.Providers) != 2 || h.AuthEnabled == nil || !*h.AuthEnabled || h.RateLimitEnabled == nil || h.Timestamp == nil {
		t.Fatalf("health %s", body)
	}
	for i, want := range [][3]string{{"flaky", "openai", "mock"}, {"gem", "gemini", "mock"}} {
		p := h.Providers[i]
		if p.Name != want[0] || p.Dialect != want[1] || p.Model != want[2] || p.State != "up" || p.CooldownUntil != nil {
			t.Errorf("provider %d: %+v", i, p)
		}
	}
	if h.Config.Generation != 1 || h.Config.LoadedAt.Before(start.Add(-time.Second)) || h.Config.LoadedAt.After(time.Now()) || h.Config.LastError != "" {
		t.Errorf("config %+v", h.Config)
	}
	if strings.Contains(body, `"lastError"`) {
		t.Errorf("lastError shown without an error: %s", body)
	}

	// flaky fails once (threshold 1): degraded, with its cooldown end.
	failed := time.Now()
	failNext.Store(true)
	if r := e.do("POST", "/v1/chat/completions", `{"model":"flaky","messages":[{"role":"user","content":"hi"}]}`, key...); r.status != 502 {
		t.Fatalf("failing request: %d %s", r.status, r.body)
	}
	h, body = obsHealth(t, e, 200)
	if h.Status != "degraded" || h.Providers[0].State != "cooldown" || h.Providers[1].State != "up" {
		t.Fatalf("after a failure: %s", body)
	}
	if cu := h.Providers[0].CooldownUntil; cu == nil || cu.Before(failed.Add(44*time.Second)) || cu.After(time.Now().Add(46*time.Second)) {
		t.Errorf("cooldownUntil %v, want about 45s from the failure", cu)
	}

	// A reload that fails changes nothing but shows its error.
	loaded := h.Config.LoadedAt
	bad := parseConfig(t, strings.Replace(yaml, "store: memory://", "  - {name: broken, dialect: "+obsDialect+`, base_url: "{{MOCK}}/v1", model: factory-error, api_key: "`+obsProviderSecret+`"}`+"\nstore: memory://", 1), e.mock.URL())
	if err := e.gw.Apply(bad); err == nil {
		t.Fatal("Apply of a config whose provider cannot be built succeeded")
	}
	h, body = obsHealth(t, e, 200)
	if h.Config.Generation != 1 || !h.Config.LoadedAt.Equal(loaded) || !strings.Contains(h.Config.LastError, "refused to build") || h.Status != "degraded" {
		t.Errorf("after a failed reload: %s", body)
	}

	// A good reload: next generation, error cleared, the cooling provider (unchanged) still cooling.
	e.apply(yaml + "\n# edited\n")
	h, body = obsHealth(t, e, 200)
	if h.Config.Generation != 2 || h.Config.LastError != "" || !h.Config.LoadedAt.After(loaded) || h.Providers[0].State != "cooldown" {
		t.Errorf("after a good reload: %s", body)
	}

	// Every provider cooling: degraded, still 200 (a liveness probe must not restart
	// the gateway for it); 503 for a readiness check (?ready).
	failNext.Store(true)
	if r := e.do("POST", "/v1/chat/completions", `{"model":"gem","messages":[{"role":"user","content":"hi"}]}`, key...); r.status != 502 {
		t.Fatalf("failing request: %d %s", r.status, r.body)
	}
	h, body = obsHealth(t, e, 200)
	if h.Status != "degraded" || h.Providers[0].State != "cooldown" || h.Providers[1].State != "cooldown" {
		t.Errorf("none can serve: %s", body)
	}
	if hr := e.do("HEAD", "/health", ""); hr.status != 200 || hr.body != "" {
		t.Errorf("HEAD /health: %d %q", hr.status, hr.body)
	}
	if hr := e.do("HEAD", "/health?ready", ""); hr.status != 503 || hr.body != "" {
		t.Errorf("HEAD /health?ready: %d %q", hr.status, hr.body)
	}
}

// TestProtectMetrics: with protect_metrics /metrics needs the master key in either
// format; without it, /metrics is open.
func TestProtectMetrics(t *testing.T) {
	for _, protect := range []bool{true, false} {
		t.Run(fmt.Sprint("protect_metrics=", protect), func(t *testing.T) {
			e := newEnv(t, fmt.Sprintf(`
auth: {enabled: true, protect_metrics: %v, master_key: "%s", keys: ["%s"]}
providers:
  - {name: oai, base_url: "{{MOCK}}/v1", model: "mock"}
store: memory://
`, protect, obsMasterSecret, obsClientSecret))
			for _, path := range []string{"/metrics", "/metrics?format=prometheus"} {
				for _, c := range []struct {
					name string
					hdr  []string
					want int
				}{
					{"no key", nil, 401},
					{"client key", []string{"Authorization", "Bearer " + obsClientSecret}, 403},
					{"bad key", []string{"X-API-Key", "sk_nope"}, 403},
					{"master key", []string{"Authorization", "Bearer " + obsMasterSecret}, 200},
					{"master key as X-API-Key", []string{"X-API-Key", obsMasterSecret}, 200},
				} {
					want := c.want
					if !protect {
						want = 200
					}
					r := e.do("GET", path, "", c.hdr...)
					if r.status != want {
						t.Errorf("%s %s: %d, want %d: %s", path, c.name, r.status, want, r.body)
					}
					if r.header.Get("X-Request-Id") == "" {
						t.Errorf("%s %s: no X-Request-Id", path, c.name)
					}
					if want != 200 && (strings.Contains(r.body, "ralf_") || strings.Contains(r.body, "totalRequests")) {
						t.Errorf("%s %s: refused but shows metrics: %s", path, c.name, r.body)
					}
					if want == 200 && !strings.Contains(r.body, "ralf_requests_total") && !strings.Contains(r.body, "totalRequests") {
						t.Errorf("%s %s: no metrics in %q", path, c.name, r.body)
					}
				}
			}
			// /health stays open either way.
			if r := e.do("GET", "/health", ""); r.status != 200 {
				t.Errorf("/health %d", r.status)
			}
		})
	}
}

// TestPanicIsLoggedAs500: a handler panic answers 500 with X-Request-Id, and the
// access line, the panic line and the metrics all say 500, for the same request id.
func TestPanicIsLoggedAs500(t *testing.T) {
	e := newEnv(t, `
providers:
  - {name: boom, dialect: `+obsDialect+`, base_url: "{{MOCK}}/v1", model: "panic"}
store: memory://
`)
	r := e.chat(hello, "X-Request-Id", "panic-1")
	if r.status != 500 || r.header.Get("X-Request-Id") != "panic-1" || !strings.Contains(r.body, "Internal server error") {
		t.Fatalf("%d %q %s", r.status, r.header.Get("X-Request-Id"), r.body)
	}
	f := obsAccessLine(t, e, "panic-1")
	if obsNum(f["status"]) != 500 || f["outcome"] != "error" || f["error"] != "Internal server error" {
		t.Errorf("access line %v", f)
	}
	panics := e.logs.FilterMessage("panic in handler").All()
	if len(panics) != 1 || panics[0].ContextMap()["request_id"] != "panic-1" {
		t.Errorf("panic lines %v", panics)
	}
	fams := obsScrape(t, e)
	if v := obsMetric(fams, "ralf_requests_total", "provider", "boom", "outcome", "error"); v != 1 {
		t.Errorf("ralf_requests_total{boom,error} = %v", v)
	}
	if v := obsMetric(fams, "ralf_requests_total", "provider", "boom", "outcome", "ok"); v != 0 {
		t.Errorf("ralf_requests_total{boom,ok} = %v: a panic counted as an answer", v)
	}
}

// TestTTFBIsTheFirstTokenSent: on /chat, which never sends reasoning, ttfb_ms is the
// time to the first answer text, not to the upstream's first (thinking) chunk.
func TestTTFBIsTheFirstTokenSent(t *testing.T) {
	e := newEnv(t, `
providers:
  - {name: g, dialect: gemini, base_url: "{{MOCK}}/v1beta", model: "mock+fixture=gemini_stream_thinking.sse+slow=50ms"}
store: memory://
`)
	r := e.chat(hello)
	if r.status != 200 || !strings.HasPrefix(r.body, "data: This is a great question!") {
		t.Fatalf("status %d body %.80q", r.status, r.body)
	}
	f := obsAccessLine(t, e, r.header.Get("X-Request-Id"))
	// Four thinking events come first, 50ms apart: no answer text before 150ms.
	if d, _ := f["ttfb_ms"].(float64); d < 150 {
		t.Fatalf("ttfb_ms = %v: measured at a thinking chunk, not at the first text sent", f["ttfb_ms"])
	}
}

// TestAbandonedStreamsCountTheirAttempt: a client that leaves a fast stream is
// noticed as a failed write, and that attempt is counted (cancelled) like any other.
func TestAbandonedStreamsCountTheirAttempt(t *testing.T) {
	e := newEnv(t, `
routing: {max_attempts: 1, failure_threshold: 100}
providers:
  - {name: oai, base_url: "{{MOCK}}/v1", model: "mock"}
store: memory://
`)
	const n = 5
	for i := 0; i < n; i++ {
		body := `{"model":"oai/mock+chunks=20000","stream":true,"messages":[{"role":"user","content":"hi"}]}`
		res, err := http.Post(e.srv.URL+"/v1/chat/completions", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bufio.NewReader(res.Body).ReadString('\n'); err != nil {
			t.Fatal(err)
		}
		res.Body.Close() // leaves mid-stream
	}
	waitFor(t, "every abandoned request recorded", func() bool {
		return obsMetric(obsScrape(t, e), "ralf_requests_total", "provider", "oai", "outcome", "cancelled") == n
	})
	fams := obsScrape(t, e)
	var attempts float64
	for _, o := range []string{"ok", "error", "timeout", "cancelled", "rejected"} {
		if v := obsMetric(fams, "ralf_upstream_attempts_total", "provider", "oai", "outcome", o); v > 0 { // -1: no such series
			attempts += v
		}
	}
	if attempts != n || obsMetric(fams, "ralf_upstream_attempts_total", "provider", "oai", "outcome", "cancelled") != n {
		t.Fatalf("%v attempts counted for %d abandoned streams (%v cancelled)", attempts, n,
			obsMetric(fams, "ralf_upstream_attempts_total", "provider", "oai", "outcome", "cancelled"))
	}
}

// TestClientGoneBeforeAnyByteIsLogged499: a client that leaves before anything was
// written did not get a 200; the access line says 499 and cancelled.
func TestClientGoneBeforeAnyByteIsLogged499(t *testing.T) {
	e := newEnv(t, `
routing: {max_attempts: 1}
providers:
  - {name: oai, base_url: "{{MOCK}}/v1", model: "mock+delay=5s"}
store: memory://
`)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", e.srv.URL+"/v1/chat/completions", strings.NewReader(`{"messages":[{"role":"user","content":"hi"}]}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Request-Id", "req-gone")
	if res, err := http.DefaultClient.Do(req); err == nil {
		res.Body.Close()
		t.Fatal("the request was answered before the client left")
	}
	waitFor(t, "the access line", func() bool { return len(obsAccessLines(e)) > 0 })
	f := obsAccessLine(t, e, "req-gone")
	if obsNum(f["status"]) != 499 || f["outcome"] != "cancelled" {
		t.Fatalf("access line status %v outcome %v, want 499 cancelled", f["status"], f["outcome"])
	}
}

// TestPanicAfterTheAnswerStartedCutsIt: a panic once the answer has begun cannot
// become a 500; the answer is cut (no clean end), and the access line says error.
func TestPanicAfterTheAnswerStartedCutsIt(t *testing.T) {
	e := newEnv(t, `
providers:
  - {name: boom, dialect: `+obsDialect+`, base_url: "{{MOCK}}/v1", model: "panic-mid"}
store: memory://
`)
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/chat", strings.NewReader(hello))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Request-Id", "panic-mid")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || err == nil {
		t.Fatalf("status %d, body %q, read error %v: want the stream cut", res.StatusCode, body, err)
	}
	waitFor(t, "the access line", func() bool { return len(obsAccessLines(e)) > 0 })
	f := obsAccessLine(t, e, "panic-mid")
	if f["outcome"] != "error" {
		t.Errorf("access line %v, want outcome error", f)
	}
}

// obsHistSum is the sample sum of the histogram series of family name with these labels.
func obsHistSum(fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	if mt := obsSeries(fams, name, labels...); mt != nil {
		return mt.GetHistogram().GetSampleSum()
	}
	return -1
}

// TestProviderLatencyIsItsOwn: the latency histograms of the provider that answered
// count from its own attempt, not from the request's start (the time lost on a
// provider that failed first is not its own); a non-streaming answer is no
// time-to-first-token sample.
func TestProviderLatencyIsItsOwn(t *testing.T) {
	e := newEnv(t, `
routing: {max_attempts: 2, first_byte_timeout: 600ms, failure_threshold: 100}
providers:
  - {name: stuck, base_url: "{{MOCK}}/v1", model: "mock+hang"}
  - {name: good, base_url: "{{MOCK}}/v1", model: "mock"}
store: memory://
`)
	r := e.chat(hello)
	if r.status != 200 || r.header.Get("X-Provider") != "good" {
		t.Fatalf("%d %q", r.status, r.header.Get("X-Provider"))
	}
	if f := obsAccessLine(t, e, r.header.Get("X-Request-Id")); obsNum(f["ttfb_ms"]) < 600 {
		t.Fatalf("the access log's ttfb_ms %v is the client's wait, failed attempt included", f["ttfb_ms"])
	}
	fams := obsScrape(t, e)
	if s := obsHistSum(fams, "ralf_time_to_first_token_seconds", "provider", "good"); s < 0 || s > 0.5 {
		t.Fatalf("good's time to first token sums %vs: the stuck provider's 600ms counted as good's", s)
	}
	if s := obsHistSum(fams, "ralf_request_duration_seconds", "provider", "good"); s < 0 || s > 0.5 {
		t.Fatalf("good's duration sums %vs: the stuck provider's 600ms counted as good's", s)
	}
	before := obsMetric(fams, "ralf_time_to_first_token_seconds", "provider", "good")
	if r := e.do("POST", "/v1/chat/completions", `{"model":"good","messages":[{"role":"user","content":"Hello"}]}`); r.status != 200 {
		t.Fatalf("non-streaming: %d %s", r.status, r.body)
	}
	fams = obsScrape(t, e)
	if after := obsMetric(fams, "ralf_time_to_first_token_seconds", "provider", "good"); after != before {
		t.Fatalf("a non-streaming answer was a time-to-first-token sample (%v → %v)", before, after)
	}
	if n := obsMetric(fams, "ralf_request_duration_seconds", "provider", "good"); n != 2 {
		t.Fatalf("duration samples %v, want 2", n)
	}
}

// TestMidStreamFailureIsLoggedAtWarn: a stream that fails after its 200 is logged at
// warn like other failures, so log.level: warn still shows it.
func TestMidStreamFailureIsLoggedAtWarn(t *testing.T) {
	e := newEnv(t, `
providers:
  - {name: cutter, base_url: "{{MOCK}}/v1", model: "mock+cut=3"}
store: memory://
`)
	r := e.chat(hello)
	id := r.header.Get("X-Request-Id")
	if f := obsAccessLine(t, e, id); r.status != 200 || f["outcome"] != "error" {
		t.Fatalf("%d %v", r.status, f)
	}
	for _, le := range obsAccessLines(e) {
		if le.ContextMap()["request_id"] == id && le.Level != zapcore.WarnLevel {
			t.Fatalf("a failed stream logged at %v, want warn", le.Level)
		}
	}
}

// TestScrapeByAnOldGenerationKeepsNewProviders: a /metrics scrape that a generation
// from before a reload serves does not bring back that generation's providers.
func TestScrapeByAnOldGenerationKeepsNewProviders(t *testing.T) {
	e := newEnv(t, `
providers:
  - {name: a, base_url: "{{MOCK}}/v1", model: "mock"}
store: memory://
`)
	old := e.gw.Handler()
	e.apply(`
providers:
  - {name: a, base_url: "{{MOCK}}/v1", model: "mock"}
  - {name: b, base_url: "{{MOCK}}/v1", model: "mock"}
store: memory://
`)
	if r := e.chat(`{"provider":"b","messages":[{"role":"user","content":"Hello"}]}`); r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	rec := httptest.NewRecorder()
	old.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics?format=prometheus", nil))
	fams := obsScrape(t, e)
	if n := obsMetric(fams, "ralf_requests_total", "provider", "b", "outcome", "ok"); n != 1 {
		t.Fatalf("b's requests after a scrape served by the old generation: %v, want 1", n)
	}
	if up := obsMetric(fams, "ralf_provider_up", "provider", "b"); up != 1 {
		t.Fatalf("ralf_provider_up{b} = %v, want 1", up)
	}
}

// TestConfiguredModelRefusedIsAnError: an upstream refusing the provider's own
// configured model (here a 404: a model retired upstream) is the provider's error in
// the metrics; only for a model the client chose is a refusal the request's fault.
func TestConfiguredModelRefusedIsAnError(t *testing.T) {
	e := newEnv(t, `
providers:
  - {name: gone, base_url: "{{MOCK}}/v1", model: "mock+status=404"}
store: memory://
`)
	if r := e.chat(hello); r.status != 502 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	if r := e.do("POST", "/v1/chat/completions", `{"model":"gone/mock+status=400","messages":[{"role":"user","content":"Hello"}]}`); r.status != 502 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	fams := obsScrape(t, e)
	if n := obsMetric(fams, "ralf_requests_total", "provider", "gone", "outcome", "error"); n != 1 {
		t.Fatalf("errors of the configured model's refusal: %v, want 1", n)
	}
	if n := obsMetric(fams, "ralf_requests_total", "provider", "gone", "outcome", "rejected"); n != 1 {
		t.Fatalf("rejections of the client's model: %v, want 1", n)
	}
}
