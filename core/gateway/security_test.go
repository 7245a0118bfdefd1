package gateway_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Secrets of the security tests. The echo provider's key does not look like a key
// (no sk- prefix), so only redaction of the configured key itself can hide it.
const (
	secUpstreamKey = "sk-upstream-SECRET-1111"
	secBadKey      = "sk-upstream-SECRET-2222"
	secEchoKey     = "plain-upstream-SECRET-3333"
	secMaster      = "master-SECRET-4444-abcdefgh"
	secStatic1     = "static-SECRET-5555-aaaa"
	secStatic2     = "static-SECRET-6666-bbbb"
	secHeader      = "0a1b2c3dSECRET7777e4f5a6b7" // a secret in providers[].headers, shaped like no known key
)

// echoUpstream is an OpenAI-compatible upstream that quotes the Authorization and
// Api-Key headers it received in its errors, as careless providers do. The model picks the
// behaviour: "m400" answers 400, "mid" streams two chunks then an error event,
// anything else answers 401.
func echoUpstream(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var req struct {
			Model string `json:"model"`
		}
		_ = json.Unmarshal(b, &req)
		got := r.Header.Get("Authorization")
		msg, _ := json.Marshal("Incorrect API key provided: " + got + " (key " + strings.TrimPrefix(got, "Bearer ") + ", api-key: " + r.Header.Get("Api-Key") + ")")
		switch req.Model {
		case "m400":
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprintf(w, `{"error":{"message":%s,"type":"invalid_request_error"}}`, msg)
		case "mid":
			w.Header().Set("Content-Type", "text/event-stream")
			for _, d := range []string{"Hel", "lo"} {
				fmt.Fprintf(w, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":%q}}]}\n\n", d)
			}
			fmt.Fprintf(w, "data: {\"error\":{\"message\":%s,\"code\":500}}\n\n", msg)
		default:
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprintf(w, `{"error":{"message":%s,"type":"invalid_request_error","code":"invalid_api_key"}}`, msg)
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// seen records every answer a test received, rendered as text.
type seen struct {
	e       *env
	answers []string
}

func (s *seen) do(method, path, body string, hdr ...string) resp {
	s.e.t.Helper()
	r := s.e.do(method, path, body, hdr...)
	s.answers = append(s.answers, renderResp(method+" "+path, r))
	return r
}

func renderResp(what string, r resp) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s → %d\n", what, r.status)
	keys := make([]string, 0, len(r.header))
	for k := range r.header {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "%s: %s\n", k, strings.Join(r.header[k], ", "))
	}
	b.WriteString(r.body)
	return b.String()
}

// renderedLogs is every observed log line as the JSON encoder writes it: message,
// logger name and every field, errors included.
func renderedLogs(t *testing.T, e *env) []string {
	t.Helper()
	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	var out []string
	for _, l := range e.logs.All() {
		buf, err := enc.EncodeEntry(l.Entry, l.Context)
		if err != nil {
			t.Fatalf("encode log line %q: %v", l.Message, err)
		}
		out = append(out, buf.String())
		buf.Free()
	}
	return out
}

// waitAccessLines waits until n access log lines are written: the line of a request
// is written after its answer went out.
func waitAccessLines(t *testing.T, e *env, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := e.logs.FilterLoggerName("access").Len()
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d access log lines, want at least %d", got, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func bearer(k string) []string { return []string{"Authorization", "Bearer " + k} }

// TestNoSecretAnywhere drives every kind of request through a gateway with auth,
// a master key, static and managed keys, upstream keys, failover, rejections and a
// mid-stream failure, then looks for each secret in every log line, answer, header,
// /health, /metrics (both formats) and the key listing.
func TestNoSecretAnywhere(t *testing.T) {
	echoURL := echoUpstream(t)
	e := newEnv(t, `
routing: {max_attempts: 3, failure_threshold: 2}
providers:
  - {name: up, base_url: "{{MOCK}}/v1", model: mock, api_key: `+secUpstreamKey+`}
  - {name: bad, base_url: "{{MOCK}}/v1", model: "mock+status=401", api_key: `+secBadKey+`}
  - {name: echo, base_url: "`+echoURL+`", model: m401, api_key: `+secEchoKey+`, headers: {api-key: "`+secHeader+`"}}
auth: {enabled: true, master_key: `+secMaster+`, keys: [`+secStatic1+`, `+secStatic2+`]}
limits: {rate: {enabled: true, requests: 6, window: 1m}}
store: memory://
`)
	s := &seen{e: e}

	// A managed key, created over HTTP: its creation answer is the one place its
	// secret may appear, so that answer is checked separately.
	cr := e.do(http.MethodPost, "/admin/keys", `{"name":"mobile-app"}`, bearer(secMaster)...)
	var created struct {
		APIKey string `json:"apiKey"`
		ID     string `json:"id"`
	}
	if cr.status != 200 || json.Unmarshal([]byte(cr.body), &created) != nil || !strings.HasPrefix(created.APIKey, "sk_") {
		t.Fatalf("create key: %d %s", cr.status, cr.body)
	}
	if cc := cr.header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("key creation answer Cache-Control %q, want no-store", cc)
	}
	secrets := map[string]string{
		"upstream api_key": secUpstreamKey, "failing upstream api_key": secBadKey, "echoing upstream api_key": secEchoKey,
		"master key": secMaster, "static key 1": secStatic1, "static key 2": secStatic2, "managed key": created.APIKey,
		"secret header value": secHeader,
	}
	for name, v := range secrets {
		if name != "managed key" && strings.Contains(renderResp("create", cr), v) {
			t.Errorf("key creation answer holds the %s", name)
		}
	}

	// Requests pinned to the echoing upstream first, while it is not cooling down.
	if r := s.do(http.MethodPost, "/v1/chat/completions", `{"model":"echo/m400","messages":[{"role":"user","content":"Hi"}]}`, bearer(secStatic1)...); r.status != 502 {
		t.Fatalf("upstream 400: status %d %s, want 502", r.status, r.body)
	}
	r := s.do(http.MethodPost, "/chat", `{"provider":"echo","messages":[{"role":"user","content":"Hi"}]}`, bearer(secStatic1)...)
	// The echo model is m401 here: a pinned provider with a bad key has nowhere to fail over to.
	if r.status != 502 && r.status != 503 {
		t.Fatalf("pinned echo 401: status %d %s", r.status, r.body)
	}
	r = s.do(http.MethodPost, "/v1/chat/completions", `{"model":"echo/mid","stream":true,"messages":[{"role":"user","content":"Hi"}]}`, bearer(secStatic1)...)
	if r.status != 200 || !strings.Contains(r.body, `"error"`) || strings.Contains(r.body, "[DONE]") {
		t.Fatalf("mid-stream failure: status %d body %q, want an error event and no [DONE]", r.status, r.body)
	}
	midID := r.header.Get("X-Request-Id")

	// Good traffic with each kind of client key, over the ring (up, bad → failover).
	good := []struct {
		name string
		hdr  []string
	}{
		{"static key 1", bearer(secStatic1)},
		{"static key 2 in X-API-Key", []string{"X-API-Key", secStatic2}},
		{"managed key", bearer(created.APIKey)},
		{"managed key in X-API-Key", []string{"X-API-Key", created.APIKey}},
		{"static key 2", bearer(secStatic2)},
	}
	for _, g := range good {
		if r := s.do(http.MethodPost, "/chat", hello, g.hdr...); r.status != 200 || r.header.Get("X-Provider") != "up" {
			t.Fatalf("%s: status %d provider %q body %s", g.name, r.status, r.header.Get("X-Provider"), r.body)
		}
	}
	if r := s.do(http.MethodPost, "/v1/chat/completions", `{"messages":[{"role":"user","content":"Hi"}]}`, bearer(created.APIKey)...); r.status != 200 {
		t.Fatalf("/v1 with the managed key: %d %s", r.status, r.body)
	}
	if up := e.mock.LastRequest().Header.Get("Authorization"); up != "Bearer "+secUpstreamKey {
		t.Fatalf("the mock got Authorization %q: the upstream key was not in play", up)
	}

	// Rejections.
	rejections := []struct {
		name, method, path, body string
		hdr                      []string
		status                   int
	}{
		{"missing key", "POST", "/chat", hello, nil, 401},
		{"unknown key", "POST", "/chat", hello, bearer("static-SECRET-guess"), 403},
		{"unknown managed-shaped key", "POST", "/chat", hello, bearer("sk_" + strings.Repeat("0", 40)), 403},
		{"master key on /chat", "POST", "/chat", hello, bearer(secMaster), 403},
		{"master key on /v1", "POST", "/v1/chat/completions", hello, []string{"X-API-Key", secMaster}, 403},
		{"upstream key as client key", "POST", "/chat", hello, bearer(secUpstreamKey), 403},
		{"static key on /admin/keys", "GET", "/admin/keys", "", bearer(secStatic1), 403},
		{"managed key on /admin/keys", "POST", "/admin/keys", `{"name":"x"}`, bearer(created.APIKey), 403},
		{"no key on /admin/keys", "GET", "/admin/keys", "", nil, 401},
		// A client key sent in the admin API's path, where an id belongs: not revoked
		// with the wrong master key, and in no log line or answer either way.
		{"managed key in the admin path, wrong master", "DELETE", "/admin/keys/" + created.APIKey, "", bearer("wrong-master"), 403},
		{"managed key in the admin path of a GET", "GET", "/admin/keys/" + created.APIKey, "", bearer(secMaster), 404},
		{"managed key glued to the admin path", "DELETE", "/admin/keys" + created.APIKey, "", bearer(secMaster), 404},
		{"managed key in another case of the admin path", "DELETE", "/admin/Keys/" + created.APIKey, "", bearer(secMaster), 404},
		{"managed key in an unknown path", "GET", "/v1/" + created.APIKey, "", bearer(secStatic1), 404},
		{"managed key as a model id", "GET", "/v1/models/" + created.APIKey, "", bearer(secStatic1), 404},
		{"bad JSON", "POST", "/chat", `{"messages":[`, bearer(secStatic1), 400},
		{"bad JSON with the key in it", "POST", "/v1/chat/completions", `{"model":"` + secStatic1 + `","messages":[` + secMaster, bearer(secStatic1), 400},
	}
	for _, rj := range rejections {
		if r := s.do(rj.method, rj.path, rj.body, rj.hdr...); r.status != rj.status {
			t.Errorf("%s: status %d %s, want %d", rj.name, r.status, r.body, rj.status)
		}
	}
	// Static and master keys have no shape to spot: ralf knows them and keeps them out
	// of the log. The answer quotes what the client sent as it is: an answer that
	// redacted them would tell which of a client's guesses is a key.
	sent := []struct {
		name, method, path, body string
		hdr                      []string
		status                   int
		secret                   string
	}{
		{"static key in an unknown path", "GET", "/v1/" + secStatic2 + "/chat", "", nil, 404, secStatic2},
		{"master key in a path of the wrong method", "PUT", "/chat/" + secMaster, "", nil, 404, secMaster},
		{"static key as a model", "POST", "/v1/chat/completions", `{"model":"` + secStatic2 + `","messages":[{"role":"user","content":"Hi"}]}`, bearer(created.APIKey), 404, secStatic2},
		{"master key as a provider", "POST", "/chat", `{"provider":"` + secMaster + `","messages":[{"role":"user","content":"Hi"}]}`, bearer(created.APIKey), 400, ""},
	}
	for _, c := range sent {
		r := e.do(c.method, c.path, c.body, c.hdr...)
		if r.status != c.status || strings.Contains(r.body, "[redacted]") {
			t.Errorf("%s: %d %s, want %d quoting what was sent", c.name, r.status, r.body, c.status)
		}
		if c.secret != "" && !strings.Contains(r.body, c.secret) {
			t.Errorf("%s: %s does not quote what was sent", c.name, r.body)
		}
	}

	// Static key 2 has used 2 of its 6 requests: of 6 more, the last 2 are refused.
	limited := 0
	for i := 0; i < 6; i++ {
		r := s.do(http.MethodPost, "/chat", hello, bearer(secStatic2)...)
		if r.status == 429 {
			limited++
			if r.header.Get("Retry-After") == "" {
				t.Errorf("429 without Retry-After: %v", r.header)
			}
		}
	}
	if limited != 2 {
		t.Errorf("%d of 6 requests rate-limited, want 2", limited)
	}

	// What an operator looks at.
	for _, p := range []string{"/health", "/metrics", "/metrics?format=prometheus"} {
		if r := s.do(http.MethodGet, p, ""); r.status != 200 {
			t.Fatalf("GET %s: %d %s", p, r.status, r.body)
		}
	}
	list := s.do(http.MethodGet, "/admin/keys", "", bearer(secMaster)...)
	if list.status != 200 || !strings.Contains(list.body, `"mobile-app"`) || !strings.Contains(list.body, created.ID) {
		t.Fatalf("key list: %d %s", list.status, list.body)
	}

	waitAccessLines(t, e, len(s.answers)+1)
	logs := renderedLogs(t, e)
	if len(logs) == 0 {
		t.Fatal("no log lines")
	}
	var failoverLogged bool
	for _, l := range logs {
		if strings.Contains(l, "cooling down") || strings.Contains(l, "failing over") {
			failoverLogged = true
		}
	}
	if !failoverLogged {
		t.Error("no log line about the failing provider: the scan would not cover upstream errors")
	}
	for name, v := range secrets {
		for _, l := range logs {
			if strings.Contains(l, v) {
				t.Errorf("a log line holds the %s: %s", name, l)
			}
		}
		for _, a := range s.answers {
			// The first line names the request, which the client wrote.
			if _, answer, _ := strings.Cut(a, "\n"); strings.Contains(answer, v) {
				t.Errorf("an answer holds the %s:\n%s", name, a)
			}
		}
	}

	// The mid-stream failure is in its access line (logged at the default level),
	// with the upstream's reason, redacted.
	var midLogged bool
	for _, l := range e.logs.FilterLoggerName("access").All() {
		f := l.ContextMap()
		if f["request_id"] != midID {
			continue
		}
		midLogged = true
		if errMsg, _ := f["error"].(string); f["outcome"] != "error" || !strings.Contains(errMsg, "Incorrect API key provided") {
			t.Errorf("access line of the mid-stream failure: %v, want outcome error and the upstream's reason", f)
		}
	}
	if !midLogged {
		t.Error("no access line for the mid-stream failure")
	}

	// The access log names the client of an authenticated request, never its key.
	clients := map[string]bool{}
	for _, l := range e.logs.FilterLoggerName("access").All() {
		if c, ok := l.ContextMap()["client"].(string); ok {
			clients[c] = true
		}
	}
	for _, want := range []string{"static-1", "static-2", "mobile-app"} {
		if !clients[want] {
			t.Errorf("no access log line names client %q (clients seen: %v)", want, clients)
		}
	}
}

// TestRejectionsAreNotProviderFailures: requests refused by the gateway itself (no key,
// bad key, bad JSON, rate limit) never reach a provider, so they neither advance the
// ring nor count against any provider's health or error metrics.
func TestRejectionsAreNotProviderFailures(t *testing.T) {
	e := newEnv(t, `
routing: {failure_threshold: 1}
providers:
  - {name: a, base_url: "{{MOCK}}/v1", model: mock}
  - {name: b, base_url: "{{MOCK}}/v1", model: mock}
auth: {enabled: true, keys: [`+secStatic1+`, `+secStatic2+`]}
limits: {rate: {enabled: true, requests: 2, window: 1m}}
store: memory://
`)
	rejections := []struct {
		name, path, body string
		hdr              []string
		status           int
	}{
		{"missing key", "/chat", hello, nil, 401},
		{"unknown key", "/chat", hello, bearer("nope-not-a-key"), 403},
		{"unknown key on /v1", "/v1/chat/completions", hello, bearer("sk_" + strings.Repeat("1", 40)), 403},
		// Static key 1 spends its 2 requests on bad bodies, then is rate-limited.
		{"bad JSON", "/chat", `{"messages":`, bearer(secStatic1), 400},
		{"invalid messages", "/v1/chat/completions", `{"messages":[]}`, bearer(secStatic1), 400},
		{"rate limited", "/chat", hello, bearer(secStatic1), 429},
		{"rate limited on /v1", "/v1/chat/completions", hello, bearer(secStatic1), 429},
	}
	for _, rj := range rejections {
		t.Run(rj.name, func(t *testing.T) {
			r := e.do(http.MethodPost, rj.path, rj.body, rj.hdr...)
			if r.status != rj.status {
				t.Fatalf("status %d %s, want %d", r.status, r.body, rj.status)
			}
			if p := r.header.Get("X-Provider"); p != "" {
				t.Fatalf("a rejected request names provider %q", p)
			}
		})
	}
	if n := e.mock.Requests(); n != 0 {
		t.Fatalf("%d upstream requests for rejected requests, want 0", n)
	}

	if r := e.chat(hello, bearer(secStatic2)...); r.status != 200 || r.header.Get("X-Provider") != "a" {
		t.Fatalf("first good request: status %d provider %q, want a (the ring did not move)", r.status, r.header.Get("X-Provider"))
	}

	var h struct {
		Status    string
		Providers []struct{ Name, State string }
	}
	if r := e.do(http.MethodGet, "/health", ""); r.status != 200 || json.Unmarshal([]byte(r.body), &h) != nil {
		t.Fatalf("health: %d %s", r.status, r.body)
	}
	if h.Status != "ok" || len(h.Providers) != 2 || h.Providers[0].State != "up" || h.Providers[1].State != "up" {
		t.Fatalf("health after rejections: %+v, want both providers up", h)
	}

	var m struct {
		Services map[string]struct {
			Requests int64
			Errors   int64
		}
	}
	if r := e.do(http.MethodGet, "/metrics?format=json", ""); r.status != 200 || json.Unmarshal([]byte(r.body), &m) != nil {
		t.Fatalf("metrics: %d %s", r.status, r.body)
	}
	if a := m.Services["a"]; a.Requests != 1 || a.Errors != 0 {
		t.Errorf("metrics for a: %+v, want 1 request and no error", a)
	}
	if b := m.Services["b"]; b.Requests != 0 || b.Errors != 0 {
		t.Errorf("metrics for b: %+v, want nothing", b)
	}
	prom := e.do(http.MethodGet, "/metrics?format=prometheus", "")
	for _, line := range strings.Split(prom.body, "\n") {
		if strings.HasPrefix(line, "#") || !strings.Contains(line, `outcome="error"`) {
			continue
		}
		if (strings.Contains(line, `provider="a"`) || strings.Contains(line, `provider="b"`)) && !strings.HasSuffix(line, " 0") {
			t.Errorf("prometheus counts an error for a provider: %s", line)
		}
	}
}

// TestRevocationIsImmediate: a key revoked through the admin API is refused on the
// very next request, however the revocation names it.
func TestRevocationIsImmediate(t *testing.T) {
	e := newEnv(t, `
providers:
  - {name: a, base_url: "{{MOCK}}/v1", model: mock}
auth: {enabled: true, master_key: `+secMaster+`}
store: memory://
`)
	revokes := []struct {
		name string
		// revoke returns method, path and body of the revocation.
		revoke func(id, key string) (string, string, string)
	}{
		{"by id in the body", func(id, _ string) (string, string, string) { return "DELETE", "/admin/keys", `{"id":"` + id + `"}` }},
		{"by key in the body", func(_, key string) (string, string, string) { return "DELETE", "/admin/keys", `{"key":"` + key + `"}` }},
		{"by id in the path", func(id, _ string) (string, string, string) { return "DELETE", "/admin/keys/" + id, "" }},
		{"by id in the query", func(id, _ string) (string, string, string) { return "DELETE", "/admin/keys?id=" + id, "" }},
	}
	for _, rv := range revokes {
		t.Run(rv.name, func(t *testing.T) {
			cr := e.do(http.MethodPost, "/admin/keys", `{"name":"`+rv.name+`"}`, bearer(secMaster)...)
			var created struct{ APIKey, ID string }
			if cr.status != 200 || json.Unmarshal([]byte(cr.body), &created) != nil || created.APIKey == "" {
				t.Fatalf("create: %d %s", cr.status, cr.body)
			}
			// Used once, so the key sits in the gateway's cache when it is revoked.
			if r := e.chat(hello, bearer(created.APIKey)...); r.status != 200 {
				t.Fatalf("before revocation: %d %s", r.status, r.body)
			}
			method, path, body := rv.revoke(created.ID, created.APIKey)
			if r := e.do(method, path, body, bearer(secMaster)...); r.status != 200 {
				t.Fatalf("revoke: %d %s", r.status, r.body)
			}
			if r := e.chat(hello, bearer(created.APIKey)...); r.status != 403 {
				t.Fatalf("right after revocation: %d %s, want 403", r.status, r.body)
			}
			if r := e.do(http.MethodGet, "/v1/models", "", "X-API-Key", created.APIKey); r.status != 403 {
				t.Fatalf("/v1/models right after revocation: %d, want 403", r.status)
			}
			// The listing keeps the key, marked disabled.
			var list struct {
				Keys []struct {
					ID      string
					Enabled bool
				}
			}
			lr := e.do(http.MethodGet, "/admin/keys", "", bearer(secMaster)...)
			if lr.status != 200 || json.Unmarshal([]byte(lr.body), &list) != nil {
				t.Fatalf("list: %d %s", lr.status, lr.body)
			}
			found := false
			for _, k := range list.Keys {
				if k.ID == created.ID {
					found = true
					if k.Enabled {
						t.Errorf("revoked key listed as enabled: %s", lr.body)
					}
				}
			}
			if !found {
				t.Errorf("revoked key %s not listed: %s", created.ID, lr.body)
			}
		})
	}
}
