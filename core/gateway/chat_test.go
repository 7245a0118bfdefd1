package gateway_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// oneProvider is a gateway with one provider replaying an upstream fixture.
func oneProvider(dialect, fixture string) string {
	base := "{{MOCK}}/v1"
	if dialect == "gemini" {
		base = "{{MOCK}}/v1beta"
	}
	return `
providers:
  - name: up
    dialect: ` + dialect + `
    base_url: ` + base + `
    model: mock+fixture=` + fixture + `
store: memory://
`
}

// TestChatGoldenSSE replays recorded upstream streams and compares /chat's body with
// what seed 003 sent for them, minus the seed's empty events.
func TestChatGoldenSSE(t *testing.T) {
	cases := []struct {
		name, dialect, fixture, golden string
	}{
		{"openai usage stream", "openai", "openai_stream_usage.sse", "seed-chat/main_chat2.body"},
		{"groq reasoning x_groq", "openai", "groq_stream_reasoning_xgroq.sse", "seed-chat/main_chat1.body"},
		{"openrouter comments", "openai", "openrouter_stream_basic.sse", "seed-chat/main_chat3.body"},
		{"gemini single event", "gemini", "gemini_stream_single_event.sse", "seed-chat/main_chat5.body"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, oneProvider(tc.dialect, tc.fixture))
			r := e.chat(hello)
			if r.status != 200 {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			want := withoutEmptyEvents(readFixture(t, tc.golden))
			if r.body != want {
				t.Fatalf("body mismatch\n got: %q\nwant: %q", r.body, want)
			}
			for k, v := range map[string]string{
				"Content-Type":      "text/event-stream; charset=utf-8",
				"Cache-Control":     "no-cache",
				"X-Accel-Buffering": "no",
				"X-Provider":        "up",
			} {
				if got := r.header.Get(k); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
			if r.header.Get("X-Request-Id") == "" {
				t.Error("no X-Request-Id")
			}
		})
	}
}

// TestChatGoldenText is seed 000's raw text framing (Accept: text/plain or ?format=text).
func TestChatGoldenText(t *testing.T) {
	cases := []struct {
		name, dialect, fixture, golden string
		viaQuery                       bool
	}{
		{"groq", "openai", "groq_stream_reasoning_xgroq.sse", "seed-chat/ralf_chat1.body", false},
		{"openai", "openai", "openai_stream_usage.sse", "seed-chat/ralf_chat2.body", true},
		{"gemini", "gemini", "gemini_stream_basic.sse", "seed-chat/ralf_chat3.body", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, oneProvider(tc.dialect, tc.fixture))
			var r resp
			if tc.viaQuery {
				r = e.do(http.MethodPost, "/chat?format=text", hello)
			} else {
				r = e.chat(hello, "Accept", "text/plain")
			}
			if r.status != 200 {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			if want := readFixture(t, tc.golden); r.body != want {
				t.Fatalf("body mismatch\n got: %q\nwant: %q", r.body, want)
			}
		})
	}
}

// TestChatMultiLineDelta: every line of a delta is its own data: line (main_chat4).
func TestChatMultiLineDelta(t *testing.T) {
	e := newEnv(t, oneProvider("openai", "openai_stream_usage.sse"))
	up := fakeUpstream(t, "data: {\"choices\":[{\"delta\":{\"content\":\"Line one\\nLine two\"}}]}\n\ndata: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n")
	e.apply(`
providers:
  - name: up
    base_url: ` + up + `
    model: m
store: memory://
`)
	r := e.chat(hello)
	if want := readFixture(t, "seed-chat/main_chat4.body"); r.body != want {
		t.Fatalf("got %q, want %q", r.body, want)
	}
}

// TestEmptyDeltasSendNothing: role-only and empty-content chunks produce no event.
func TestEmptyDeltasSendNothing(t *testing.T) {
	e := newEnv(t, oneProvider("openai", "hf_router_stream_basic.sse"))
	r := e.chat(hello)
	for _, ev := range sseEvents(r.body) {
		if ev == "data: " || ev == "data:" {
			t.Fatalf("empty event sent: %q", r.body)
		}
	}
	if r.status != 200 || len(sseEvents(r.body)) == 0 {
		t.Fatalf("status %d body %q", r.status, r.body)
	}
}

func TestReasoningIsNotAnswerText(t *testing.T) {
	cases := []struct{ dialect, fixture string }{
		{"openai", "deepseek_stream_reasoning_content.sse"},
		{"openai", "openrouter_stream_reasoning.sse"},
		{"gemini", "gemini_stream_thinking.sse"},
	}
	for _, tc := range cases {
		t.Run(tc.fixture, func(t *testing.T) {
			e := newEnv(t, oneProvider(tc.dialect, tc.fixture))
			text := e.chat(hello, "Accept", "text/plain")
			if text.status != 200 || text.body == "" {
				t.Fatalf("status %d body %q", text.status, text.body)
			}
			// The /v1 stream carries the reasoning separately, as reasoning_content.
			r := e.do(http.MethodPost, "/v1/chat/completions", `{"model":"auto","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
			var content, reasoning strings.Builder
			for _, ev := range sseEvents(r.body) {
				data := strings.TrimPrefix(ev, "data: ")
				if data == "[DONE]" {
					continue
				}
				var c struct {
					Choices []struct {
						Delta struct {
							Content          string `json:"content"`
							ReasoningContent string `json:"reasoning_content"`
						} `json:"delta"`
					} `json:"choices"`
				}
				if err := json.Unmarshal([]byte(data), &c); err != nil {
					t.Fatalf("bad chunk %q: %v", data, err)
				}
				for _, ch := range c.Choices {
					content.WriteString(ch.Delta.Content)
					reasoning.WriteString(ch.Delta.ReasoningContent)
				}
			}
			if content.String() != text.body {
				t.Fatalf("/v1 content %q != /chat text %q", content.String(), text.body)
			}
			if reasoning.Len() == 0 {
				t.Fatal("no reasoning_content on /v1")
			}
			if strings.Contains(text.body, reasoning.String()) {
				t.Fatal("reasoning leaked into the answer text")
			}
		})
	}
}

func TestRoundRobinAndPinning(t *testing.T) {
	e := newEnv(t, `
providers:
  - {name: a, base_url: "{{MOCK}}/v1", model: mock}
  - {name: b, dialect: gemini, base_url: "{{MOCK}}/v1beta", model: mock}
  - {name: c, base_url: "{{MOCK}}/v1", model: mock}
store: memory://
`)
	var got []string
	for i := 0; i < 6; i++ {
		r := e.chat(hello)
		if r.status != 200 {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
		got = append(got, r.header.Get("X-Provider"))
	}
	if strings.Join(got, ",") != "a,b,c,a,b,c" {
		t.Fatalf("providers %v, want a,b,c,a,b,c", got)
	}
	for i := 0; i < 3; i++ {
		r := e.chat(`{"provider":"b","messages":[{"role":"user","content":"Hello"}]}`)
		if r.header.Get("X-Provider") != "b" {
			t.Fatalf("pinned to b, answered by %q", r.header.Get("X-Provider"))
		}
	}
	r := e.chat(`{"provider":"nope","messages":[{"role":"user","content":"Hello"}]}`)
	if r.status != 400 || !strings.Contains(r.body, "unknown provider") {
		t.Fatalf("unknown provider: %d %s", r.status, r.body)
	}
}

// TestFirstChunkIsFlushedAtOnce: the client sees the first chunk while the upstream is
// still stalled, so nothing is buffered.
func TestFirstChunkIsFlushedAtOnce(t *testing.T) {
	for _, dialect := range []string{"openai", "gemini"} {
		t.Run(dialect, func(t *testing.T) {
			e := newEnv(t, oneProvider(dialect, "x"))
			base := "{{MOCK}}/v1"
			if dialect == "gemini" {
				base = "{{MOCK}}/v1beta"
			}
			e.apply(`
providers:
  - {name: slow, dialect: ` + dialect + `, base_url: "` + base + `", model: "mock+hang_after=1"}
routing: {idle_timeout: 60s}
store: memory://
`)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, e.srv.URL+"/chat", strings.NewReader(hello))
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			buf := make([]byte, 256)
			n, err := res.Body.Read(buf)
			if err != nil || !strings.HasPrefix(string(buf[:n]), "data: ") {
				t.Fatalf("first read %q, %v: want the first event before the upstream finishes", buf[:n], err)
			}
			// The upstream is stalled after one chunk: closing the client must end the
			// upstream request too.
			cancel()
			waitFor(t, "upstream stream closed after the client left", func() bool { return e.mock.OpenConns() == 0 || e.mock.Streams() == 0 })
		})
	}
}

func TestClientDisconnectCancelsUpstream(t *testing.T) {
	e := newEnv(t, `
providers:
  - {name: slow, base_url: "{{MOCK}}/v1", model: "mock+chunks=200+slow=50ms"}
store: memory://
`)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, e.srv.URL+"/chat", strings.NewReader(hello))
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	if _, err := res.Body.Read(buf); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "upstream stream open", func() bool { return e.mock.Streams() == 1 })
	cancel()
	res.Body.Close()
	waitFor(t, "upstream stream cancelled", func() bool { return e.mock.Streams() == 0 })
}

// TestUpstreamConnectionReused: answers read to their end give the upstream
// connection back, for every relay, so sequential requests share one connection
// instead of paying a TCP handshake (and, in production, a TLS one) each time.
func TestUpstreamConnectionReused(t *testing.T) {
	for _, dialect := range []string{"openai", "gemini"} {
		t.Run(dialect, func(t *testing.T) {
			e := newEnv(t, `
providers:
  - {name: mock, dialect: `+dialect+`, base_url: "`+base(dialect)+`", model: mock}
store: memory://
`)
			for i, rq := range []struct{ path, body, accept string }{
				{"/chat", hello, ""},
				{"/chat", hello, "text/plain"},
				{"/v1/chat/completions", `{"model":"mock","stream":true,"messages":[{"role":"user","content":"Hi"}]}`, ""},
				{"/v1/chat/completions", `{"model":"mock","messages":[{"role":"user","content":"Hi"}]}`, ""},
				{"/chat", hello, ""},
			} {
				var hdr []string
				if rq.accept != "" {
					hdr = []string{"Accept", rq.accept}
				}
				if r := e.do(http.MethodPost, rq.path, rq.body, hdr...); r.status != 200 {
					t.Fatalf("request %d: %d %s", i, r.status, r.body)
				}
			}
			// The end of an upstream body is read in the background, so a request may
			// start before its predecessor's connection is back in the pool; but no
			// connection may be dropped.
			time.Sleep(150 * time.Millisecond) // longer than the background read may last
			if a, o := e.mock.Accepted(), e.mock.OpenConns(); a != o || a > 3 {
				t.Errorf("the mock accepted %d connections for 5 sequential requests and %d are open; want all open, at most 3", a, o)
			}
		})
	}
}

// TestAnswerDoesNotWaitForTheUpstreamBodyEnd: an upstream that sends [DONE] and
// ends its chunked body a second later still gets its connection reused, and the
// client's answer is complete at once: the gateway reads the end of the upstream
// body in the background.
func TestAnswerDoesNotWaitForTheUpstreamBodyEnd(t *testing.T) {
	const pause = time.Second
	var conns atomic.Int32
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, withSSE([]string{`{"choices":[{"delta":{"content":"Hi"}}]}`, `{"choices":[{"delta":{},"finish_reason":"stop"}]}`, "[DONE]"}))
		w.(http.Flusher).Flush()
		select { // the body's last chunk comes later
		case <-time.After(pause):
		case <-r.Context().Done():
		}
	}))
	up.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	up.Start()
	t.Cleanup(up.Close)
	e := newEnv(t, `
providers:
  - {name: late, base_url: "`+up.URL+`", model: m}
store: memory://
`)
	for i := 0; i < 2; i++ {
		start := time.Now()
		if r := e.chat(hello); r.status != 200 || !strings.Contains(r.body, "Hi") {
			t.Fatalf("request %d: %d %s", i, r.status, r.body)
		}
		// Not a speed check: half the upstream's pause is a wide margin, and an
		// answer that waited for the upstream's last bytes would take all of it.
		if d := time.Since(start); d >= pause/2 {
			t.Errorf("request %d: the answer took %v: it waited for the end of the upstream body", i, d)
		}
		waitFor(t, "the upstream answer over", func() bool { return time.Since(start) > pause+50*time.Millisecond })
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d upstream connections for 2 sequential streams, want 1", n)
	}
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var _ = io.EOF

// TestMaxTokensKeepsItsName: the token limit goes upstream under the name the client
// used: OpenAI's reasoning models refuse max_tokens and take only max_completion_tokens.
func TestMaxTokensKeepsItsName(t *testing.T) {
	e := newEnv(t, `
providers:
  - {name: m, base_url: "{{MOCK}}/v1", model: mock, params: {max_tokens: 100}}
store: memory://
`)
	for _, c := range []struct{ field, want, not string }{
		{`"max_completion_tokens":50`, `"max_completion_tokens":50`, `"max_tokens"`},
		{`"max_tokens":7`, `"max_tokens":7`, `"max_completion_tokens"`},
		{`"max_tokens":7,"max_completion_tokens":50`, `"max_tokens":7`, `"max_completion_tokens"`},
	} {
		r := e.do(http.MethodPost, "/v1/chat/completions", `{`+c.field+`,"messages":[{"role":"user","content":"Hi"}]}`)
		up := string(e.mock.LastRequest().Body)
		if r.status != 200 || !strings.Contains(up, c.want) || strings.Contains(up, c.not) {
			t.Errorf("client sent %s: status %d, upstream got %s; want %s and no %s", c.field, r.status, up, c.want, c.not)
		}
	}
}

// TestExtrasPassThrough: OpenAI fields ralf does not handle itself go upstream as
// sent (user included), and a null one does not erase a params default.
func TestExtrasPassThrough(t *testing.T) {
	e := newEnv(t, `
providers:
  - {name: m, base_url: "{{MOCK}}/v1", model: mock, params: {seed: 1}}
store: memory://
`)
	r := e.do(http.MethodPost, "/v1/chat/completions", `{"user":"u-42","seed":null,"messages":[{"role":"user","content":"Hi"}]}`)
	up := string(e.mock.LastRequest().Body)
	if r.status != 200 || !strings.Contains(up, `"user":"u-42"`) || !strings.Contains(up, `"seed":1`) {
		t.Fatalf("status %d, upstream got %s; want user passed and the seed default kept", r.status, up)
	}
	// A message's name (multi-agent frameworks set it) reaches an OpenAI-dialect upstream.
	r = e.do(http.MethodPost, "/v1/chat/completions", `{"messages":[{"role":"user","name":"alice","content":"Hi"},{"role":"user","name":null,"content":"Yo"}]}`)
	up = string(e.mock.LastRequest().Body)
	if r.status != 200 || !strings.Contains(up, `{"role":"user","content":"Hi","name":"alice"},{"role":"user","content":"Yo"}`) {
		t.Fatalf("status %d, upstream got %s; want the first message's name passed", r.status, up)
	}
	if r = e.do(http.MethodPost, "/v1/chat/completions", `{"messages":[{"role":"user","name":5,"content":"Hi"}]}`); r.status != 400 || !strings.Contains(r.body, "name") {
		t.Fatalf("a name that is not a string: %d %s", r.status, r.body)
	}
	// Clients that send the unsupported fields empty or off are served.
	r = e.do(http.MethodPost, "/v1/chat/completions", `{"tools":[ ],"functions":null,"logprobs":false,"top_logprobs":0,"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{"type":"object"}}},"messages":[{"role":"user","content":"Hi"}]}`)
	if r.status != 200 {
		t.Fatalf("empty tools, logprobs false: %d %s", r.status, r.body)
	}
}

// TestEmptyCutAnswerOnChatIsAnError: /chat has no finish reason, so an answer with no
// text that the provider cut short (content filter, token limit spent on thinking)
// is a 502 saying why, not an empty 200. /v1 keeps the answer and its finish_reason.
func TestEmptyCutAnswerOnChatIsAnError(t *testing.T) {
	cases := []struct{ name, dialect, body, finish, want string }{
		{"gemini safety", "gemini", "data: {\"candidates\": [{\"finishReason\": \"SAFETY\",\"index\": 0}]}\r\n\r\n", "content_filter", "content filter"},
		{"openai length", "openai", "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n" +
			"data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"length\"}]}\n\ndata: [DONE]\n\n", "length", "token limit"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			url := fakeUpstream(t, c.body)
			base := url + "/v1"
			if c.dialect == "gemini" {
				base = url + "/v1beta"
			}
			e := newEnv(t, `
routing: {failure_threshold: 1}
providers:
  - {name: cut, dialect: `+c.dialect+`, base_url: "`+base+`", model: m}
store: memory://
`)
			for _, accept := range []string{"text/event-stream", "text/plain"} {
				r := e.chat(hello, "Accept", accept)
				if r.status != 502 || !strings.Contains(r.body, "provider cut sent an empty answer") || !strings.Contains(r.body, c.want) || r.header.Get("X-Provider") != "cut" {
					t.Fatalf("%s: %d %q %s, want a 502 saying why", accept, r.status, r.header.Get("X-Provider"), r.body)
				}
			}
			r := e.do("POST", "/v1/chat/completions", `{"stream":true,"messages":[{"role":"user","content":"Hello"}]}`)
			if r.status != 200 || !strings.Contains(r.body, `"finish_reason":"`+c.finish+`"`) || !strings.Contains(r.body, "[DONE]") {
				t.Fatalf("/v1: %d %s", r.status, r.body)
			}
			if h := e.health(); h.Providers[0].State != "up" {
				t.Fatalf("an empty answer is not the provider's ill health: %s", h.raw)
			}
		})
	}
}
