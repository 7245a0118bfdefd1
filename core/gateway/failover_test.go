package gateway_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/ralf-gateway/ralf/core/gateway"
	"github.com/ralf-gateway/ralf/core/mock"
)

func TestMain(m *testing.M) {
	code := m.Run()
	http.DefaultClient.CloseIdleConnections()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutine leak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func base(dialect string) string {
	if dialect == "gemini" {
		return "{{MOCK}}/v1beta"
	}
	return "{{MOCK}}/v1"
}

// twoProviders puts a faulty provider first in the ring and a healthy one second.
func twoProviders(dialect, badModel string, extra string) string {
	return `
routing: {max_attempts: 2, failure_threshold: 100, first_byte_timeout: 400ms, idle_timeout: 400ms}
providers:
  - {name: bad, dialect: ` + dialect + `, base_url: "` + base(dialect) + `", model: "` + badModel + `"}
  - {name: good, dialect: ` + dialect + `, base_url: "` + base(dialect) + `", model: "mock"}
store: memory://
` + extra
}

// TestFaultsBeforeFirstByteAreInvisible: every retryable fault of the first provider
// ends in one clean answer from the second; the client never sees the failed attempt.
func TestFaultsBeforeFirstByteAreInvisible(t *testing.T) {
	answer := withSSE(mock.Answer("Hello", 20))
	faults := []string{"status=500", "status=502", "status=503", "status=504", "status=408", "status=409",
		"status=429", "status=401", "status=403", "hang", "delay=2s"}
	for _, dialect := range []string{"openai", "gemini"} {
		for _, f := range faults {
			t.Run(dialect+"/"+f, func(t *testing.T) {
				e := newEnv(t, twoProviders(dialect, "mock+"+f, ""))
				r := e.chat(hello)
				if r.status != 200 || r.header.Get("X-Provider") != "good" {
					t.Fatalf("status %d provider %q body %q", r.status, r.header.Get("X-Provider"), r.body)
				}
				if r.body != answer {
					t.Fatalf("body %q, want %q", r.body, answer)
				}
			})
		}
		t.Run(dialect+"/connection refused", func(t *testing.T) {
			e := newEnv(t, `
routing: {max_attempts: 2}
providers:
  - {name: bad, dialect: `+dialect+`, base_url: "http://127.0.0.1:1/v1", model: mock}
  - {name: good, dialect: `+dialect+`, base_url: "`+base(dialect)+`", model: mock}
store: memory://
`)
			r := e.chat(hello)
			if r.status != 200 || r.header.Get("X-Provider") != "good" || r.body != answer {
				t.Fatalf("status %d provider %q body %q", r.status, r.header.Get("X-Provider"), r.body)
			}
		})
	}
}

func withSSE(deltas []string) string {
	var b strings.Builder
	for _, d := range deltas {
		for _, line := range strings.Split(d, "\n") {
			b.WriteString("data: " + line + "\n")
		}
		b.WriteString("\n")
	}
	return b.String()
}

// TestOtherClientErrorsAre502NamingTheProvider: a 4xx that is the request's fault is not
// retried elsewhere and is reported with the upstream's message.
func TestOtherClientErrorsAre502NamingTheProvider(t *testing.T) {
	for _, dialect := range []string{"openai", "gemini"} {
		for _, code := range []int{400, 404, 422} {
			t.Run(fmt.Sprintf("%s/%d", dialect, code), func(t *testing.T) {
				e := newEnv(t, twoProviders(dialect, fmt.Sprintf("mock+status=%d", code), ""))
				r := e.chat(hello)
				if r.status != 502 {
					t.Fatalf("status %d body %s", r.status, r.body)
				}
				var b struct {
					Error  string `json:"error"`
					Status int    `json:"status"`
				}
				if err := json.Unmarshal([]byte(r.body), &b); err != nil || b.Status != 502 {
					t.Fatalf("body %s", r.body)
				}
				if !strings.Contains(b.Error, "bad") || !strings.Contains(b.Error, fmt.Sprint(code)) {
					t.Fatalf("error %q does not name the provider and its status", b.Error)
				}
				if e.mock.Requests() != 1 {
					t.Fatalf("%d upstream requests: a request error must not be retried elsewhere", e.mock.Requests())
				}
				// The provider's answer: it says which, and tells OpenAI's SDKs (which retry
				// a 502 by default) that asking again gets the same.
				if r.header.Get("X-Provider") != "bad" || r.header.Get("X-Should-Retry") != "false" || r.header.Get("Retry-After") != "" {
					t.Fatalf("headers %v, want X-Provider: bad, X-Should-Retry: false and no Retry-After", r.header)
				}
			})
		}
	}
}

// TestMidStreamFailuresEndWithAnErrorEvent: after the first byte no failover is possible;
// the client gets the error event, never a stream that looks complete.
func TestMidStreamFailuresEndWithAnErrorEvent(t *testing.T) {
	faults := []string{"cut=3", "error_event=3", "error_chunk=3", "malformed", "hang_after=3"}
	for _, dialect := range []string{"openai", "gemini"} {
		for _, f := range faults {
			if dialect == "gemini" && (f == "error_event=3") {
				continue // a Groq (OpenAI dialect) behaviour
			}
			t.Run(dialect+"/"+f, func(t *testing.T) {
				e := newEnv(t, twoProviders(dialect, "mock+"+f, ""))
				r := e.chat(hello)
				if r.status != 200 || r.header.Get("X-Provider") != "bad" {
					t.Fatalf("status %d provider %q", r.status, r.header.Get("X-Provider"))
				}
				evs := sseEvents(r.body)
				if len(evs) < 2 {
					t.Fatalf("body %q", r.body)
				}
				last := evs[len(evs)-1]
				if !strings.HasPrefix(last, "event: error\ndata: {\"error\":") {
					t.Fatalf("last event %q, want an error event", last)
				}
				var eb struct {
					Error  string `json:"error"`
					Status int    `json:"status"`
				}
				if err := json.Unmarshal([]byte(strings.TrimPrefix(last, "event: error\ndata: ")), &eb); err != nil || eb.Error == "" || eb.Status < 500 {
					t.Fatalf("error event %q", last)
				}

				// /v1: an error chunk and no [DONE].
				v1 := e.do("POST", "/v1/chat/completions", `{"model":"bad","stream":true,"messages":[{"role":"user","content":"Hello"}]}`)
				if strings.Contains(v1.body, "[DONE]") {
					t.Fatalf("/v1 stream looks complete after a failure: %q", v1.body)
				}
				evs = sseEvents(v1.body)
				if !strings.HasPrefix(evs[len(evs)-1], `data: {"error":{`) {
					t.Fatalf("/v1 last event %q", evs[len(evs)-1])
				}

				// Text framing: the stream just ends, short of the full answer, and it is
				// cut at the HTTP level so the client can tell (no terminating chunk).
				req, _ := http.NewRequest("POST", e.srv.URL+"/chat", strings.NewReader(`{"provider":"bad","messages":[{"role":"user","content":"Hello"}]}`))
				req.Header.Set("Accept", "text/plain")
				res, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				b, err := io.ReadAll(res.Body)
				res.Body.Close()
				if !errors.Is(err, io.ErrUnexpectedEOF) || string(b) == strings.Join(mock.Answer("Hello", 20), "") {
					t.Fatalf("text stream after a failure: %q, %v; want a cut stream", b, err)
				}
			})
		}
	}
}

func TestCooldownSkipsAFailingProviderThenAllCooling503(t *testing.T) {
	e := newEnv(t, `
routing: {max_attempts: 2, failure_threshold: 2, cooldown: 30s}
providers:
  - {name: bad, base_url: "{{MOCK}}/v1", model: "mock+status=503"}
  - {name: good, base_url: "{{MOCK}}/v1", model: "mock"}
store: memory://
`)
	for i := 0; i < 4; i++ {
		if r := e.chat(hello); r.status != 200 || r.header.Get("X-Provider") != "good" {
			t.Fatalf("request %d: %d %q", i, r.status, r.header.Get("X-Provider"))
		}
	}
	before := e.mock.Requests()
	for i := 0; i < 4; i++ {
		e.chat(hello)
	}
	if got := e.mock.Requests() - before; got != 4 {
		t.Fatalf("%d upstream requests for 4 client requests: the cooling provider was still tried", got)
	}
	h := e.health()
	if h.Status != "degraded" || h.Providers[0].State != "cooldown" || h.Providers[0].CooldownUntil == nil || h.Providers[1].State != "up" {
		t.Fatalf("health %s", h.raw)
	}

	// Every provider cooling: 503 with Retry-After.
	e.apply(`
routing: {max_attempts: 2, failure_threshold: 1, cooldown: 30s}
providers:
  - {name: bad, base_url: "{{MOCK}}/v1", model: "mock+status=503"}
  - {name: bad2, base_url: "{{MOCK}}/v1", model: "mock+status=500"}
store: memory://
`)
	if r := e.chat(hello); r.status != 502 {
		t.Fatalf("both failing: %d %s", r.status, r.body)
	}
	r := e.chat(hello)
	if r.status != 503 || r.header.Get("Retry-After") == "" || !strings.Contains(r.body, "cooling down") {
		t.Fatalf("all cooling: %d %q %s", r.status, r.header.Get("Retry-After"), r.body)
	}
	if hr := e.do("GET", "/health", ""); hr.status != 200 || !strings.Contains(hr.body, `"status":"degraded"`) {
		t.Fatalf("health when none can serve: %d %s", hr.status, hr.body)
	}
	if hr := e.do("GET", "/health?ready", ""); hr.status != 503 || !strings.Contains(hr.body, `"status":"degraded"`) {
		t.Fatalf("readiness when none can serve: %d %s", hr.status, hr.body)
	}
}

func TestRetryAfterSetsTheCooldown(t *testing.T) {
	e := newEnv(t, `
routing: {max_attempts: 2, failure_threshold: 5, cooldown: 30s}
providers:
  - {name: limited, base_url: "{{MOCK}}/v1", model: "mock+status=429+retry_after=7"}
  - {name: good, base_url: "{{MOCK}}/v1", model: "mock"}
store: memory://
`)
	start := time.Now()
	if r := e.chat(hello); r.status != 200 || r.header.Get("X-Provider") != "good" {
		t.Fatalf("%d %q", r.status, r.header.Get("X-Provider"))
	}
	h := e.health()
	p := h.Providers[0]
	if p.State != "cooldown" || p.CooldownUntil == nil {
		t.Fatalf("429 with Retry-After did not cool the provider at once: %s", h.raw)
	}
	if d := p.CooldownUntil.Sub(start); d < 6*time.Second || d > 9*time.Second {
		t.Fatalf("cooldown %v, want the upstream's 7s", d)
	}
}

func TestWeightedShares(t *testing.T) {
	e := newEnv(t, `
routing: {strategy: weighted}
providers:
  - {name: big, base_url: "{{MOCK}}/v1", model: "mock+chunks=1", weight: 3}
  - {name: small, base_url: "{{MOCK}}/v1", model: "mock+chunks=1", weight: 1}
store: memory://
`)
	got := map[string]int{}
	for i := 0; i < 100; i++ {
		got[e.chat(hello).header.Get("X-Provider")]++
	}
	if got["big"] != 75 || got["small"] != 25 {
		t.Fatalf("shares %v, want 75/25", got)
	}
}

// TestNoConnectionLeakAfterFaults: after every kind of fault, no upstream connection
// stays open once the gateway lets idle ones go.
func TestNoConnectionLeakAfterFaults(t *testing.T) {
	e := newEnv(t, twoProviders("openai", "mock", ""))
	for _, f := range []string{"status=503", "hang", "cut=2", "malformed", "hang_after=2", "error_event=1", "status=400"} {
		e.apply(twoProviders("openai", "mock+"+f, ""))
		e.chat(hello)
		e.chat(`{"provider":"bad","messages":[{"role":"user","content":"Hello"}]}`)
	}
	e.gw.Close()
	waitFor(t, "upstream connections closed", func() bool { return e.mock.OpenConns() == 0 })
}

// TestNonStreamingIsBoundByProviderTimeout: a non-streaming upstream sends nothing
// until its whole answer is ready, so first_byte_timeout does not cut it short; the
// provider's timeout does.
func TestNonStreamingIsBoundByProviderTimeout(t *testing.T) {
	e := newEnv(t, `
routing: {max_attempts: 1, first_byte_timeout: 300ms}
providers:
  - {name: slow, base_url: "{{MOCK}}/v1", model: "mock+delay=700ms", timeout: 10s}
store: memory://
`)
	r := e.do("POST", "/v1/chat/completions", `{"model":"slow","messages":[{"role":"user","content":"Hello"}]}`)
	if r.status != 200 {
		t.Fatalf("non-streaming answer slower than first_byte_timeout: %d %s", r.status, r.body)
	}
	r = e.do("POST", "/v1/chat/completions", `{"model":"slow","stream":true,"messages":[{"role":"user","content":"Hello"}]}`)
	if r.status != 504 {
		t.Fatalf("streaming request past first_byte_timeout: %d %s, want 504", r.status, r.body)
	}
}

// TestStalledClientIsNotProviderFailure: a client that stops reading blocks the
// gateway's writes; that is not upstream silence and must not cool the provider.
func TestStalledClientIsNotProviderFailure(t *testing.T) {
	e := newEnv(t, `
routing: {idle_timeout: 300ms, failure_threshold: 1, cooldown: 60s}
providers:
  - {name: fast, base_url: "{{MOCK}}/v1", model: "mock+chunks=100000"}
store: memory://
`)
	conn := e.rawConn()
	body := `{"model":"fast","stream":true,"messages":[{"role":"user","content":"Hello"}]}`
	postRaw(conn, "/v1/chat/completions", body, "Connection: close")
	time.Sleep(2 * time.Second) // not reading: the gateway's writes block for far longer than idle_timeout
	// Then read again: the answer goes on, and the pause is nobody's failure.
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, _ := io.Copy(io.Discard, conn)
	if n < 1<<20 {
		t.Fatalf("only %d bytes after the client resumed reading", n)
	}
	if h := e.health(); h.Providers[0].State != "up" {
		t.Fatalf("a stalled client put the provider in cooldown: %s", h.raw)
	}
}

// TestSlowClientPastTheProvidersTimeout: a client too slow to take a long answer
// makes the stream run into the provider's timeout; the stream ends with an error,
// but the provider stays in the ring (or slow clients could take every provider out).
func TestSlowClientPastTheProvidersTimeout(t *testing.T) {
	e := newEnv(t, `
routing: {failure_threshold: 1, cooldown: 60s}
providers:
  - {name: fast, base_url: "{{MOCK}}/v1", model: "mock+chunks=100000", timeout: 1s}
store: memory://
`)
	conn := e.rawConn()
	body := `{"model":"fast","stream":true,"messages":[{"role":"user","content":"Hello"}]}`
	postRaw(conn, "/v1/chat/completions", body, "Connection: close")
	time.Sleep(2 * time.Second) // not reading, past the provider's 1s timeout
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, _ := io.ReadAll(conn)
	if !strings.Contains(string(got), "provider's timeout") {
		t.Fatalf("the stream did not end at the provider's timeout (%d bytes)", len(got))
	}
	if h := e.health(); h.Providers[0].State != "up" {
		t.Fatalf("a slow client put the provider in cooldown: %s", h.raw)
	}
}

func TestModelResolution(t *testing.T) {
	e := newEnv(t, `
providers:
  - {name: groq, base_url: "{{MOCK}}/v1", model: "groq/compound+chunks=2"}
  - {name: other, base_url: "{{MOCK}}/v1", model: "mock+chunks=2"}
  - {name: off, base_url: "{{MOCK}}/v1", model: "mock", enabled: false}
store: memory://
`)
	// A configured model that starts with its provider's name is that model, not name/model.
	r := e.do("POST", "/v1/chat/completions", `{"model":"groq/compound+chunks=2","messages":[{"role":"user","content":"Hi"}]}`)
	if r.status != 200 || r.header.Get("X-Provider") != "groq" || !strings.Contains(string(e.mock.LastRequest().Body), `"groq/compound+chunks=2"`) {
		t.Fatalf("%d %s upstream got %s", r.status, r.body, e.mock.LastRequest().Body)
	}
	// name/model overrides the model.
	r = e.do("POST", "/v1/chat/completions", `{"model":"other/mock+chunks=3","messages":[{"role":"user","content":"Hi"}]}`)
	if r.status != 200 || r.header.Get("X-Provider") != "other" || !strings.Contains(string(e.mock.LastRequest().Body), `"mock+chunks=3"`) {
		t.Fatalf("%d %s", r.status, r.body)
	}
	for _, m := range []string{"off", "off/x"} {
		if r := e.do("POST", "/v1/chat/completions", `{"model":"`+m+`","messages":[{"role":"user","content":"Hi"}]}`); r.status != 400 || !strings.Contains(r.body, "disabled") {
			t.Fatalf("%s: %d %s", m, r.status, r.body)
		}
	}
}

// TestUpstreamThatRejectsALargeBodyEarly: an upstream that answers 413 before it has
// read a large request and closes is heard (502 naming the provider, with its
// message), not taken for a broken connection and failed over.
func TestUpstreamThatRejectsALargeBodyEarly(t *testing.T) {
	var got atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusRequestEntityTooLarge) // the body unread: Go's server then closes
		io.WriteString(w, `{"error":{"message":"request too large for this model","type":"invalid_request_error"}}`)
	}))
	t.Cleanup(up.Close)
	e := newEnv(t, `
server: {max_body_bytes: 33554432}
limits: {max_message_chars: 20000000}
routing: {max_attempts: 2}
providers:
  - {name: bad, dialect: openai, base_url: "`+up.URL+`/v1", model: m}
  - {name: good, dialect: openai, base_url: "{{MOCK}}/v1", model: mock}
store: memory://
`)
	big := strings.Repeat("a", 16<<20) // far more than the sockets' buffers
	r := e.chat(`{"messages":[{"role":"user","content":"` + big + `"}]}`)
	if r.status != 502 || !strings.Contains(r.body, "bad") || !strings.Contains(r.body, "413") ||
		!strings.Contains(r.body, "request too large for this model") {
		t.Fatalf("status %d body %.300s", r.status, r.body)
	}
	if got.Load() != 1 || e.mock.Requests() != 0 {
		t.Fatalf("%d requests to bad, %d to good: a request error is not retried", got.Load(), e.mock.Requests())
	}
}

// TestKeepAliveCommentsKeepAStreamAlive: an upstream that sends SSE comments while it
// works (OpenRouter's ": OPENROUTER PROCESSING") is not silent: the idle timer
// restarts with every byte, not only with every chunk of text.
func TestKeepAliveCommentsKeepAStreamAlive(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fl := w.(http.Flusher)
		io.WriteString(w, `data: {"choices":[{"index":0,"delta":{"content":"Hel"}}]}`+"\n\n")
		fl.Flush()
		for i := 0; i < 8; i++ { // 8 × 100ms of comments: far past idle_timeout
			time.Sleep(100 * time.Millisecond)
			io.WriteString(w, ": OPENROUTER PROCESSING\n\n")
			fl.Flush()
		}
		io.WriteString(w, `data: {"choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":"stop"}]}`+"\n\ndata: [DONE]\n\n")
	}))
	t.Cleanup(up.Close)
	e := newEnv(t, `
routing: {idle_timeout: 300ms, max_attempts: 1}
providers:
  - {name: or, base_url: "`+up.URL+`/v1", model: m}
store: memory://
`)
	r := e.chat(hello)
	if r.status != 200 || r.body != withSSE([]string{"Hel", "lo"}) {
		t.Fatalf("status %d body %q: a stream with keep-alive comments was cut", r.status, r.body)
	}
	// The same upstream answering a non-streaming /v1 request with a stream.
	r = e.do(http.MethodPost, "/v1/chat/completions", `{"messages":[{"role":"user","content":"Hi"}]}`)
	if r.status != 200 || !strings.Contains(r.body, `"content":"Hello"`) {
		t.Fatalf("non-streaming: status %d body %s", r.status, r.body)
	}
}

// TestAllAttemptsFailedStatus: when every attempt fails, the answer is 504 only if
// they all timed out, and 502 otherwise, whichever order they failed in.
func TestAllAttemptsFailedStatus(t *testing.T) {
	cfg := func(a, b string) string {
		return `
routing: {max_attempts: 2, failure_threshold: 100, first_byte_timeout: 200ms}
providers:
  - {name: a, base_url: "{{MOCK}}/v1", model: "mock+` + a + `"}
  - {name: b, base_url: "{{MOCK}}/v1", model: "mock+` + b + `"}
store: memory://
`
	}
	e := newEnv(t, cfg("status=503", "hang"))
	for i := 0; i < 2; i++ { // the ring starts with a, then with b
		if r := e.chat(hello); r.status != 502 || !strings.Contains(r.body, "all 2 attempts failed") {
			t.Fatalf("request %d, a 503 and a timeout: status %d %s, want 502", i+1, r.status, r.body)
		}
	}
	e = newEnv(t, cfg("hang", "hang"))
	if r := e.chat(hello); r.status != 504 {
		t.Fatalf("two timeouts: status %d %s, want 504", r.status, r.body)
	}
}

// TestNonStreamingTimeoutIsTheProviders: a non-streaming /v1 request to an upstream
// that never answers ends at the provider's timeout, always as a 504 that says so.
func TestNonStreamingTimeoutIsTheProviders(t *testing.T) {
	e := newEnv(t, `
routing: {max_attempts: 1, failure_threshold: 100, first_byte_timeout: 100ms}
providers:
  - {name: slow, base_url: "{{MOCK}}/v1", model: "mock+hang", timeout: 300ms}
store: memory://
`)
	for i := 0; i < 4; i++ {
		r := e.do(http.MethodPost, "/v1/chat/completions", `{"messages":[{"role":"user","content":"Hi"}]}`)
		if r.status != 504 || !strings.Contains(r.body, "no complete answer within the provider's timeout (300ms)") {
			t.Fatalf("request %d: status %d %s, want 504 naming the provider's timeout", i+1, r.status, r.body)
		}
	}
}

// TestRedirectsAreNotFollowed: an upstream that redirects elsewhere does not get the
// provider's key sent to the new host; the next provider answers.
func TestRedirectsAreNotFollowed(t *testing.T) {
	var got atomic.Int32
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.Add(1)
		w.WriteHeader(500)
	}))
	t.Cleanup(elsewhere.Close)
	redirecting := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, elsewhere.URL+r.URL.Path, http.StatusTemporaryRedirect)
	}))
	t.Cleanup(redirecting.Close)
	e := newEnv(t, `
routing: {max_attempts: 2, failure_threshold: 100}
providers:
  - {name: moved, dialect: gemini, base_url: "`+redirecting.URL+`/v1beta", model: m, api_key: AIza-secret}
  - {name: good, base_url: "{{MOCK}}/v1", model: mock}
store: memory://
`)
	for i := 0; i < 2; i++ { // the ring starts with each provider once
		if r := e.chat(hello); r.status != 200 || r.header.Get("X-Provider") != "good" {
			t.Fatalf("status %d provider %q body %s", r.status, r.header.Get("X-Provider"), r.body)
		}
	}
	if n := got.Load(); n != 0 {
		t.Fatalf("the redirect was followed %d times: the provider's key went to another host", n)
	}
}

// TestClientThatStopsReadingIsDropped: a client that takes none of its answer for
// the client write timeout is dropped; its handler and the upstream stream end. The
// same keep-alive connection's next request is not hit by the old deadline.
func TestClientThatStopsReadingIsDropped(t *testing.T) {
	old := *gateway.ClientWriteTimeout
	*gateway.ClientWriteTimeout = 500 * time.Millisecond
	t.Cleanup(func() { *gateway.ClientWriteTimeout = old })
	e := newEnv(t, `
providers:
  - {name: fast, base_url: "{{MOCK}}/v1", model: "mock+chunks=1000000"}
  - {name: ok, base_url: "{{MOCK}}/v1", model: "mock"}
store: memory://
`)
	conn := e.rawConn()
	body := `{"model":"fast","stream":true,"messages":[{"role":"user","content":"Hello"}]}`
	postRaw(conn, "/v1/chat/completions", body, "X-Request-Id: stalled")
	// Never read: the gateway's writes block, then time out.
	waitFor(t, "the stalled request ended", func() bool {
		for _, l := range e.logs.FilterLoggerName("access").All() {
			if l.ContextMap()["request_id"] == "stalled" {
				return true
			}
		}
		return false
	})
	waitFor(t, "the upstream stream closed", func() bool { return e.mock.Streams() == 0 })
	// A keep-alive connection whose client pauses longer than the timeout between two
	// streamed answers: the first one's deadline must not cut the second.
	kc := e.rawConn()
	br := bufio.NewReader(kc)
	okBody := `{"provider":"ok","messages":[{"role":"user","content":"Hi"}]}`
	for i := 0; i < 2; i++ {
		if i == 0 {
			postRaw(kc, "/chat", okBody)
		} else { // a request that sets no deadline of its own
			io.WriteString(kc, "GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
		}
		kc.SetReadDeadline(time.Now().Add(10 * time.Second))
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request %d on the kept-alive connection: %v", i, err)
		}
		b, err := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || err != nil || len(b) == 0 {
			t.Fatalf("request %d on the kept-alive connection: %d %q %v", i, res.StatusCode, b, err)
		}
		time.Sleep(800 * time.Millisecond) // past the first answer's write deadline
	}
}

// TestGeminiBadKeyFailsOver: Google answers a bad API key with a 400 (reason
// API_KEY_INVALID), not a 401. That is our key's fault, not the request's: the next
// provider answers, and the Gemini provider counts a failure (here: into cooldown).
func TestGeminiBadKeyFailsOver(t *testing.T) {
	badKey := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json; charset=UTF-8")
		w.WriteHeader(400)
		io.WriteString(w, `{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT",
  "details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID","domain":"googleapis.com"}]}}`)
	}))
	defer badKey.Close()
	e := newEnv(t, `
routing: {max_attempts: 2, failure_threshold: 1, cooldown: 30s}
providers:
  - {name: gem, dialect: gemini, base_url: "`+badKey.URL+`/v1beta", model: "gemini-x", api_key: "wrong"}
  - {name: good, base_url: "{{MOCK}}/v1", model: "mock"}
store: memory://
`)
	for i := 0; i < 3; i++ {
		if r := e.chat(hello); r.status != 200 || r.header.Get("X-Provider") != "good" {
			t.Fatalf("request %d: %d %s, want the other provider's answer", i, r.status, r.body)
		}
	}
	if h := e.health(); h.Providers[0].State != "cooldown" {
		t.Fatalf("a Gemini provider with a bad key is not cooling down: %s", h.raw)
	}
}

// TestSharedModelFailsOverWithinItsProviders: a model several providers are configured
// with is served by those providers in ring order, with failover between them, and
// never by a provider of another model.
func TestSharedModelFailsOverWithinItsProviders(t *testing.T) {
	e := newEnv(t, `
routing: {max_attempts: 3, failure_threshold: 100}
providers:
  - {name: a, base_url: "{{MOCK}}/v1", model: "mock", headers: {X-Mock: "status=503"}}
  - {name: other, base_url: "{{MOCK}}/v1", model: "mock+chunks=2"}
  - {name: b, base_url: "{{MOCK}}/v1", model: "mock"}
store: memory://
`)
	for i := 0; i < 4; i++ {
		r := e.do("POST", "/v1/chat/completions", `{"model":"mock","messages":[{"role":"user","content":"Hello"}]}`)
		if r.status != 200 || r.header.Get("X-Provider") != "b" {
			t.Fatalf("request %d: %d %q %s, want b's answer", i, r.status, r.header.Get("X-Provider"), r.body)
		}
	}
	if r := e.do("GET", "/v1/models/mock", ""); r.status != 200 || !strings.Contains(r.body, `"id":"mock"`) {
		t.Fatalf("models.retrieve of a shared model: %d %s", r.status, r.body)
	}
}

// TestPinnedFailureRetryAfterIsItsOwn: the 502 of a pinned provider does not carry the
// Retry-After of another provider that happens to be cooling.
func TestPinnedFailureRetryAfterIsItsOwn(t *testing.T) {
	e := newEnv(t, `
routing: {failure_threshold: 100}
providers:
  - {name: limited, base_url: "{{MOCK}}/v1", model: "mock+status=429+retry_after=20"}
  - {name: flaky, base_url: "{{MOCK}}/v1", model: "mock+status=503"}
store: memory://
`)
	if r := e.chat(`{"provider":"limited","messages":[{"role":"user","content":"Hello"}]}`); r.header.Get("Retry-After") == "" {
		t.Fatalf("limited: %d %v, want its Retry-After", r.status, r.header)
	}
	if r := e.chat(`{"provider":"flaky","messages":[{"role":"user","content":"Hello"}]}`); r.status != 502 || r.header.Get("Retry-After") != "" {
		t.Fatalf("flaky: %d, Retry-After %q: the other provider's cooldown", r.status, r.header.Get("Retry-After"))
	}
}

// TestOverriddenModelFailuresSpareTheProvider: a model the client chose ("name/model")
// that fails, even with a 429 and a long Retry-After, does not put the provider in
// cooldown for the other clients, who use its configured model.
func TestOverriddenModelFailuresSpareTheProvider(t *testing.T) {
	e := newEnv(t, `
routing: {failure_threshold: 1, cooldown: 30s}
providers:
  - {name: p, base_url: "{{MOCK}}/v1", model: "mock"}
store: memory://
`)
	for _, m := range []string{"p/mock+status=429+retry_after=3600", "p/mock+status=503"} {
		if r := e.do("POST", "/v1/chat/completions", `{"model":"`+m+`","messages":[{"role":"user","content":"Hello"}]}`); r.status != 502 {
			t.Fatalf("%s: %d %s", m, r.status, r.body)
		}
	}
	if h := e.health(); h.Providers[0].State != "up" {
		t.Fatalf("one client's model choice cooled the provider for everyone: %s", h.raw)
	}
	if r := e.chat(hello); r.status != 200 {
		t.Fatalf("the configured model after another client's failures: %d %s", r.status, r.body)
	}
}

// TestOverriddenModelSuccessesDoNotHideFailures: nor do its successes count: another
// client's working model must not keep a provider whose configured model fails out
// of cooldown.
func TestOverriddenModelSuccessesDoNotHideFailures(t *testing.T) {
	e := newEnv(t, `
routing: {failure_threshold: 2, cooldown: 30s}
providers:
  - {name: p, base_url: "{{MOCK}}/v1", model: "mock+status=503"}
store: memory://
`)
	if r := e.chat(hello); r.status != 502 {
		t.Fatalf("configured model: %d %s", r.status, r.body)
	}
	if r := e.do("POST", "/v1/chat/completions", `{"model":"p/mock","messages":[{"role":"user","content":"Hello"}]}`); r.status != 200 {
		t.Fatalf("chosen model: %d %s", r.status, r.body)
	}
	if r := e.chat(hello); r.status != 502 {
		t.Fatalf("configured model again: %d %s", r.status, r.body)
	}
	if h := e.health(); h.Providers[0].State != "cooldown" {
		t.Fatalf("two failures of the configured model, with a client's successes between them: %s", h.raw)
	}
}

// TestSharedModelIsSpreadEvenly: requests naming a model two providers share go to
// each in turn, whatever the ring's other members and weights.
func TestSharedModelIsSpreadEvenly(t *testing.T) {
	for _, strategy := range []string{"round_robin", "weighted"} {
		t.Run(strategy, func(t *testing.T) {
			e := newEnv(t, `
routing: {strategy: `+strategy+`}
providers:
  - {name: a, base_url: "{{MOCK}}/v1", model: "mock"}
  - {name: b, base_url: "{{MOCK}}/v1", model: "mock"}
  - {name: c, base_url: "{{MOCK}}/v1", model: "mock+chunks=2", weight: 4}
store: memory://
`)
			got := map[string]int{}
			for i := 0; i < 20; i++ {
				r := e.do("POST", "/v1/chat/completions", `{"model":"mock","messages":[{"role":"user","content":"Hello"}]}`)
				if r.status != 200 {
					t.Fatalf("%d %s", r.status, r.body)
				}
				got[r.header.Get("X-Provider")]++
			}
			if got["a"] != 10 || got["b"] != 10 {
				t.Fatalf("20 requests for the shared model went %v, want 10 each to a and b", got)
			}
		})
	}
}

// TestSharedModelTurnSurvivesAReload: the turn within a shared model carries on across
// reloads, as the ring's position does.
func TestSharedModelTurnSurvivesAReload(t *testing.T) {
	yaml := `
providers:
  - {name: a, base_url: "{{MOCK}}/v1", model: "mock"}
  - {name: b, base_url: "{{MOCK}}/v1", model: "mock"}
store: memory://
`
	e := newEnv(t, yaml)
	got := map[string]int{}
	for i := 0; i < 4; i++ {
		r := e.do("POST", "/v1/chat/completions", `{"model":"mock","messages":[{"role":"user","content":"Hello"}]}`)
		got[r.header.Get("X-Provider")]++
		e.apply(yaml + fmt.Sprintf("# edit %d\n", i))
	}
	if got["a"] != 2 || got["b"] != 2 {
		t.Fatalf("4 requests with a reload after each went %v, want 2 each", got)
	}
}
