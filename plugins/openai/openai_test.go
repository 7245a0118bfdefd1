package openai

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ralf-gateway/ralf/core/config"
	"github.com/ralf-gateway/ralf/core/llm"
)

func TestRegistered(t *testing.T) {
	if !llm.Known("openai") {
		t.Fatal(`dialect "openai" is not registered`)
	}
}

func TestFixtureReplay(t *testing.T) {
	tests := []struct {
		fixture       string
		text          string // exact answer; "ref" = compare with the encoding/json reference
		reasoning     string // exact reasoning; "ref" = reference
		finishes      []string
		usage         *llm.Usage
		errStatus     int    // >0: the stream must end with this *UpstreamError status
		errMsg        string // substring of that error's message
		wantChunksMin int
	}{
		{fixture: "openai_stream_usage.sse", text: "1, 2, 3, 4, 5", finishes: []string{"stop"},
			usage: &llm.Usage{PromptTokens: 14, CompletionTokens: 13, TotalTokens: 27}},
		{fixture: "openrouter_stream_basic.sse", text: "test response", finishes: []string{"stop"},
			usage: &llm.Usage{PromptTokens: 586, CompletionTokens: 3, TotalTokens: 589}},
		{fixture: "openrouter_stream_reasoning.sse", text: "2 + 2 = 4",
			reasoning: "This is a simple arithmetic question. 2+2 equals 4.", finishes: []string{"stop"},
			usage: &llm.Usage{PromptTokens: 43, CompletionTokens: 36, TotalTokens: 79}},
		{fixture: "openrouter_stream_midstream_error.sse", reasoning: "We need to respond to a greeting. The user",
			finishes: []string{"length"}, usage: &llm.Usage{PromptTokens: 43, CompletionTokens: 10, TotalTokens: 53},
			errStatus: 400, errMsg: "Token limit reached"},
		{fixture: "groq_stream_reasoning_xgroq.sse", text: "The tool returned the expected result for the valid call.",
			reasoning: "ref", finishes: []string{"stop"},
			usage: &llm.Usage{PromptTokens: 339, CompletionTokens: 58, TotalTokens: 397}},
		{fixture: "groq_stream_midstream_error.sse", reasoning: "ref", errStatus: 400,
			errMsg: "Tool call validation failed: tool call validation failed: parameters for tool get_something_by_name did not match schema"},
		{fixture: "deepseek_stream_reasoning_content.sse", text: "Hello there! 😊 How can I help you today?",
			reasoning: "ref", finishes: []string{"stop"},
			usage: &llm.Usage{PromptTokens: 6, CompletionTokens: 212, TotalTokens: 218}},
		{fixture: "hf_router_stream_basic.sse", text: "Paris", finishes: []string{"stop"},
			usage: &llm.Usage{PromptTokens: 40, CompletionTokens: 2, TotalTokens: 42}},
	}
	for _, tc := range tests {
		t.Run(strings.TrimSuffix(tc.fixture, ".sse"), func(t *testing.T) {
			body := fixture(t, tc.fixture)
			refText, refReasoning := refDecode(t, body)
			if tc.text == "ref" {
				tc.text = refText
			}
			if tc.reasoning == "ref" {
				tc.reasoning = refReasoning
				if len(tc.reasoning) < 100 {
					t.Fatalf("reference reasoning too short: %q", tc.reasoning)
				}
			}
			up := newUpstream(t, sseBody(t, tc.fixture))
			p := newTestProvider(t, up.URL, nil)
			st, err := p.ChatStream(context.Background(), userReq(true))
			if err != nil {
				t.Fatalf("ChatStream: %v", err)
			}
			got := collect(t, st)
			if got.Text != tc.text {
				t.Errorf("text = %q, want %q", got.Text, tc.text)
			}
			if got.Reasoning != tc.reasoning {
				t.Errorf("reasoning = %q, want %q", got.Reasoning, tc.reasoning)
			}
			if strings.Contains(got.Text, "reasoning") || (tc.reasoning != "" && strings.Contains(got.Text, tc.reasoning[:10])) {
				t.Errorf("reasoning leaked into the answer text: %q", got.Text)
			}
			if !reflect.DeepEqual(got.Finishes, tc.finishes) {
				t.Errorf("finish reasons = %q, want %q", got.Finishes, tc.finishes)
			}
			if !reflect.DeepEqual(got.Usage, tc.usage) {
				t.Errorf("usage = %+v, want %+v", got.Usage, tc.usage)
			}
			if got.Empty != 0 {
				t.Errorf("%d chunks carried nothing", got.Empty)
			}
			if tc.errStatus == 0 {
				if got.Err != nil {
					t.Fatalf("stream error: %v", got.Err)
				}
				return
			}
			ue := asUpstream(t, got.Err)
			if ue.Status != tc.errStatus || !strings.Contains(ue.Message, tc.errMsg) || ue.Provider != "testprov" {
				t.Errorf("error = %+v, want status %d and message containing %q", ue, tc.errStatus, tc.errMsg)
			}
			if len(ue.Message) > maxMessage {
				t.Errorf("message is %d bytes, want <= %d", len(ue.Message), maxMessage)
			}
		})
	}
}

func f64(v float64) *float64 { return &v }
func intp(v int) *int        { return &v }

func TestRequestBody(t *testing.T) {
	tests := []struct {
		name     string
		mod      func(*config.Provider)
		req      *llm.ChatRequest
		want     map[string]any // expected decoded body
		noAuth   bool
		headers  map[string]string
		absentHd []string
	}{
		{
			name: "stream asks for usage and uses the configured model",
			req:  userReq(true),
			want: map[string]any{"model": "cfg-model", "messages": []any{map[string]any{"role": "user", "content": "hi"}},
				"stream": true, "stream_options": map[string]any{"include_usage": true}},
			headers: map[string]string{"Authorization": "Bearer " + testKey, "Content-Type": "application/json", "Accept": "text/event-stream"},
		},
		{
			name: "request parameters win over params, extras pass through, reserved keys stay ours",
			mod: func(c *config.Provider) {
				c.Params = map[string]any{"temperature": 0.6, "top_p": 0.9, "max_tokens": 100, "seed": 7,
					"reasoning_effort": "low", "model": "evil", "stream": false}
			},
			req: &llm.ChatRequest{Stream: true, Model: "req-model", Messages: []llm.Message{{Role: "system", Content: "be <brief> & \"exact\""}, {Role: "user", Content: "ünï\ncode"}},
				Temperature: f64(0.2), MaxTokens: intp(50), Stop: []string{"END"},
				Extra: map[string]json.RawMessage{"seed": json.RawMessage(`42`), "presence_penalty": json.RawMessage(` 0.5 `),
					"messages": json.RawMessage(`[]`), "stream_options": json.RawMessage(`{"include_usage":false}`)}},
			want: map[string]any{"model": "req-model",
				"messages": []any{map[string]any{"role": "system", "content": "be <brief> & \"exact\""}, map[string]any{"role": "user", "content": "ünï\ncode"}},
				"stream":   true, "stream_options": map[string]any{"include_usage": true},
				"temperature": 0.2, "top_p": 0.9, "max_tokens": 50.0, "stop": []any{"END"}, "seed": 42.0,
				"presence_penalty": 0.5, "reasoning_effort": "low"},
		},
		{
			// For upstreams that refuse the field (Mistral answers 422 extra_forbidden).
			name: "params stream_options null sends none",
			mod:  func(c *config.Provider) { c.Params = map[string]any{"stream_options": nil} },
			req:  userReq(true),
			want: map[string]any{"model": "cfg-model", "messages": []any{map[string]any{"role": "user", "content": "hi"}}, "stream": true},
		},
		{
			name: "no key, no Authorization; configured headers are sent",
			mod: func(c *config.Provider) {
				c.APIKey = ""
				c.Headers = map[string]string{"HTTP-Referer": "https://example.org", "X-Title": "ralf"}
			},
			req:     userReq(false),
			want:    map[string]any{"model": "cfg-model", "messages": []any{map[string]any{"role": "user", "content": "hi"}}, "stream": false},
			headers: map[string]string{"Http-Referer": "https://example.org", "X-Title": "ralf", "Accept": "application/json"},
			noAuth:  true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var h http.HandlerFunc = sseBody(t, "openai_stream_usage.sse")
			if !tc.req.Stream {
				h = replay(200, http.Header{"Content-Type": {"application/json"}}, []byte(`{"choices":[{"message":{"content":"ok"},"finish_reason":"stop"}]}`))
			}
			up := newUpstream(t, h)
			p := newTestProvider(t, up.URL, tc.mod)
			st, err := p.ChatStream(context.Background(), tc.req)
			if err != nil {
				t.Fatalf("ChatStream: %v", err)
			}
			if r := collect(t, st); r.Err != nil {
				t.Fatalf("stream: %v", r.Err)
			}
			rec := up.last(t)
			if rec.Path != "/v1/chat/completions" {
				t.Errorf("path = %q", rec.Path)
			}
			var got map[string]any
			if err := json.Unmarshal(rec.Body, &got); err != nil {
				t.Fatalf("body %s: %v", rec.Body, err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("body = %s\nwant %v", rec.Body, tc.want)
			}
			for k, v := range tc.headers {
				if g := rec.Header.Get(k); g != v {
					t.Errorf("header %s = %q, want %q", k, g, v)
				}
			}
			if tc.noAuth && rec.Header.Get("Authorization") != "" {
				t.Errorf("Authorization sent without a key: %q", rec.Header.Get("Authorization"))
			}
		})
	}
}

func TestHTTPErrors(t *testing.T) {
	date := "Fri, 08 Aug 2025 15:40:34 GMT"
	s429, h429 := fixtureHeaders(t, "openrouter_error_429.headers")
	h429.Set("Date", date)
	tests := []struct {
		name       string
		status     int
		header     http.Header
		body       string
		wantMsg    string // exact message
		wantPrefix string
		retryAfter time.Duration
	}{
		{name: "openai 401 fixture", status: 401, header: http.Header{"Content-Type": {"application/json"}},
			body:    string(fixture(t, "openai_error_401.json")),
			wantMsg: "Incorrect API key provided: [redacted]. You can find your API key at https://platform.openai.com/account/api-keys."},
		{name: "openrouter 429 fixture, reset in epoch ms", status: s429, header: h429,
			body:       string(fixture(t, "openrouter_error_429.json")),
			wantPrefix: "Rate limit exceeded: limit_rpm/meta-llama/llama-3.2-3b-instruct/", retryAfter: 26 * time.Second},
		{name: "retry-after seconds", status: 503, header: http.Header{"Retry-After": {"7"}},
			body: `{"error":"overloaded"}`, wantMsg: "overloaded", retryAfter: 7 * time.Second},
		{name: "retry-after http date", status: 429, header: http.Header{"Date": {date}, "Retry-After": {"Fri, 08 Aug 2025 15:41:34 GMT"}},
			body: `{"message":"slow down"}`, wantMsg: "slow down", retryAfter: time.Minute},
		{name: "fastapi detail", status: 400, body: `{"detail":"model not found"}`, wantMsg: "model not found"},
		{name: "text body excerpt, key echoed", status: 502,
			body:    "<html>\n<body>bad gateway for key " + testKey + " via https://x.test/?api_key=abc&x=1 Bearer zzz</body></html>",
			wantMsg: "<html> <body>bad gateway for key [redacted] via https://x.test/?api_key=[redacted]&x=1 Bearer [redacted]</body></html>"},
		{name: "empty body", status: 500, wantMsg: "Internal Server Error"},
		{name: "long message is bounded", status: 400, body: `{"error":{"message":"` + strings.Repeat("é", 400) + `"}}`,
			wantPrefix: "ééé"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			up := newUpstream(t, replay(tc.status, tc.header, []byte(tc.body)))
			p := newTestProvider(t, up.URL, nil)
			st, err := p.ChatStream(context.Background(), userReq(true))
			if err == nil {
				st.Close()
				t.Fatal("ChatStream succeeded on an error answer")
			}
			ue := asUpstream(t, err)
			if ue.Status != tc.status || ue.Provider != "testprov" {
				t.Errorf("status/provider = %d/%q, want %d/testprov", ue.Status, ue.Provider, tc.status)
			}
			if tc.wantMsg != "" && ue.Message != tc.wantMsg {
				t.Errorf("message = %q\nwant      %q", ue.Message, tc.wantMsg)
			}
			if !strings.HasPrefix(ue.Message, tc.wantPrefix) {
				t.Errorf("message = %q, want prefix %q", ue.Message, tc.wantPrefix)
			}
			if len(ue.Message) > maxMessage || !utf8Valid(ue.Message) {
				t.Errorf("message not bounded/valid: %d bytes", len(ue.Message))
			}
			if ue.RetryAfter != tc.retryAfter {
				t.Errorf("RetryAfter = %v, want %v", ue.RetryAfter, tc.retryAfter)
			}
			if strings.Contains(err.Error(), testKey) || strings.Contains(err.Error(), "sk-XXX") {
				t.Errorf("error shows a key: %v", err)
			}
		})
	}
}

func TestClean(t *testing.T) {
	tests := []struct{ in, want string }{
		{"key sk-or-v1-abcdef0123 is invalid", "key [redacted] is invalid"},
		{"groq gsk_ABCdef123456 and hf_abcdefghijkl", "groq [redacted] and [redacted]"},
		{"google AIzaSyA1234567890abcdefghijkl ok", "google [redacted] ok"},
		{"Authorization: Bearer abc.def-ghi", "Authorization: Bearer [redacted]"},
		{"GET /v1?key=AAAA&alt=sse&token=x", "GET /v1?key=[redacted]&alt=sse&token=[redacted]"},
		{"the provided " + testKey + "!", "the provided [redacted]!"},
		{"a task-based max_tokens=5 answer", "a task-based max_tokens=5 answer"},
		{"multi\nline\t\ttext ", "multi line text"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			if got := llm.Sanitize(tc.in, testKey, maxMessage); got != tc.want {
				t.Errorf("clean = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestNonStreaming(t *testing.T) {
	tests := []struct {
		name      string
		stream    bool // the request's Stream flag
		body      string
		text      string
		reasoning string
		finish    string
		usage     *llm.Usage
		errStatus int
		ct        string // answer Content-Type, default application/json
		chunks    int    // default 1
	}{
		{name: "chat.completion", body: `{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Hi \"there\"\n\u00e9\ud83d\ude00","reasoning_content":"think"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}`,
			text: "Hi \"there\"\né😀", reasoning: "think", finish: "stop", usage: &llm.Usage{PromptTokens: 3, CompletionTokens: 4, TotalTokens: 7}},
		{name: "cerebras reasoning field", body: `{"choices":[{"message":{"content":"4","reasoning":"2+2"},"finish_reason":"length"}],"time_info":{"queue_time":0.1}}`,
			text: "4", reasoning: "2+2", finish: "length"},
		{name: "stream request answered with JSON", stream: true, body: `{"choices":[{"message":{"content":"whole"},"finish_reason":"stop"}]}`,
			text: "whole", finish: "stop"},
		{name: "error object in a 200", body: `{"error":{"message":"upstream overloaded","code":503}}`, errStatus: 503},
		{name: "non-stream request answered with SSE", ct: "text/event-stream",
			body: "data: {\"choices\":[{\"delta\":{\"content\":\"Pa\"}}]}\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"ris\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n",
			text: "Paris", finish: "stop", chunks: 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.ct == "" {
				tc.ct = "application/json"
			}
			if tc.chunks == 0 {
				tc.chunks = 1
			}
			up := newUpstream(t, replay(200, http.Header{"Content-Type": {tc.ct}}, []byte(tc.body)))
			p := newTestProvider(t, up.URL, nil)
			st, err := p.ChatStream(context.Background(), userReq(tc.stream))
			if tc.errStatus != 0 {
				if ue := asUpstream(t, err); ue.Status != tc.errStatus || ue.Message != "upstream overloaded" {
					t.Errorf("error = %+v", ue)
				}
				return
			}
			if err != nil {
				t.Fatalf("ChatStream: %v", err)
			}
			got := collect(t, st)
			want := result{Text: tc.text, Reasoning: tc.reasoning, Finishes: []string{tc.finish}, Usage: tc.usage, Chunks: tc.chunks}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got %+v\nwant %+v", got, want)
			}
		})
	}
}

// TestStreamEnds covers how a stream may end: cut bodies must never look complete.
func TestStreamEnds(t *testing.T) {
	const role = `data: {"choices":[{"delta":{"role":"assistant"}}]}` + "\n\n"
	const c1 = `data: {"choices":[{"delta":{"content":"Hel"}}]}` + "\n\n"
	const fin = `data: {"choices":[{"delta":{},"finish_reason":"stop"}]}` + "\n\n"
	tests := []struct {
		name    string
		body    string
		abrupt  bool // kill the connection instead of ending the response
		text    string
		wantErr func(error) bool
	}{
		{name: "cut before finish", body: role + c1, text: "Hel", wantErr: func(e error) bool { return errors.Is(e, io.ErrUnexpectedEOF) }},
		{name: "connection dropped mid-body", body: role + c1 + `data: {"choices":[{"del`, abrupt: true, text: "Hel",
			wantErr: func(e error) bool { return e != nil && !errors.Is(e, io.EOF) }},
		{name: "finish without [DONE] is complete", body: role + c1 + fin, text: "Hel", wantErr: func(e error) bool { return e == nil }},
		{name: "malformed chunk fails the stream", body: c1 + "data: {\"choices\":[{\"delta\":{\"content\":\"x\"}]}\n\n" + fin + "data: [DONE]\n\n", text: "Hel",
			wantErr: func(e error) bool { return errors.Is(e, errMalformed) && !strings.Contains(e.Error(), "\"x\"") }},
		{name: "empty data and unknown events are skipped", body: "data:\n\nevent: ping\ndata: {}\n\n" + c1 + fin + "data: [DONE]\n\n", text: "Hel",
			wantErr: func(e error) bool { return e == nil }},
		{name: "event error without an error key", body: c1 + "event: error\ndata: {\"message\":\"boom\"}\n\n", text: "Hel",
			wantErr: func(e error) bool {
				var ue *llm.UpstreamError
				return errors.As(e, &ue) && ue.Status == 502 && ue.Message == "boom"
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/event-stream")
				if !tc.abrupt {
					_, _ = io.WriteString(w, tc.body)
					return
				}
				w.(http.Flusher).Flush()
				_, _ = io.WriteString(w, tc.body)
				w.(http.Flusher).Flush()
				conn, _, err := http.NewResponseController(w).Hijack()
				if err == nil {
					conn.Close()
				}
			})
			p := newTestProvider(t, up.URL, nil)
			st, err := p.ChatStream(context.Background(), userReq(true))
			if err != nil {
				t.Fatalf("ChatStream: %v", err)
			}
			got := collect(t, st)
			if got.Text != tc.text {
				t.Errorf("text = %q, want %q", got.Text, tc.text)
			}
			if !tc.wantErr(got.Err) {
				t.Errorf("unexpected end: %v", got.Err)
			}
		})
	}
}

// blockingUpstream sends one chunk (unless before is set, then nothing), then waits
// for the request's context to end and reports it on done.
func blockingUpstream(t *testing.T, before bool) (*upstream, chan struct{}) {
	done := make(chan struct{})
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		defer close(done)
		if !before {
			w.Header().Set("Content-Type", "text/event-stream")
			_, _ = io.WriteString(w, `data: {"choices":[{"delta":{"content":"first"}}]}`+"\n\n")
			w.(http.Flusher).Flush()
		}
		select {
		case <-r.Context().Done():
		case <-time.After(20 * time.Second):
			t.Error("upstream request was never cancelled")
		}
	})
	return up, done
}

func TestCancellation(t *testing.T) {
	tests := []struct {
		name    string
		before  bool                               // cancel before the answer headers
		timeout time.Duration                      // provider timeout, 0 = 30s
		stop    func(cancel func(), st llm.Stream) // what the client does after the first chunk
		wantErr func(error) bool
	}{
		{name: "client disconnect mid-stream", stop: func(cancel func(), _ llm.Stream) { cancel() },
			wantErr: func(e error) bool { return errors.Is(e, context.Canceled) }},
		{name: "Close mid-stream", stop: func(_ func(), st llm.Stream) { _ = st.Close() },
			wantErr: func(e error) bool { return errors.Is(e, errClosed) }},
		{name: "Close from another goroutine unblocks Recv", stop: func(_ func(), st llm.Stream) {
			go func() { time.Sleep(50 * time.Millisecond); _ = st.Close() }()
		}, wantErr: func(e error) bool { return errors.Is(e, errClosed) }},
		{name: "provider timeout covers the body", timeout: 300 * time.Millisecond,
			wantErr: func(e error) bool { return errors.Is(e, context.DeadlineExceeded) }},
		{name: "client disconnect before headers", before: true, stop: func(cancel func(), _ llm.Stream) { cancel() },
			wantErr: func(e error) bool { return errors.Is(e, context.Canceled) }},
		{name: "provider timeout before headers", before: true, timeout: 300 * time.Millisecond,
			wantErr: func(e error) bool { return errors.Is(e, context.DeadlineExceeded) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			up, done := blockingUpstream(t, tc.before)
			p := newTestProvider(t, up.URL, func(c *config.Provider) {
				if tc.timeout > 0 {
					c.Timeout = tc.timeout
				}
			})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tc.before {
				if tc.stop != nil {
					time.AfterFunc(100*time.Millisecond, cancel)
				}
				st, err := p.ChatStream(ctx, userReq(true))
				if err == nil {
					st.Close()
					t.Fatal("ChatStream succeeded")
				}
				if !tc.wantErr(err) || strings.Contains(err.Error(), "127.0.0.1") && strings.Contains(err.Error(), "?") {
					t.Errorf("error = %v", err)
				}
				waitDone(t, done, "the upstream to see the cancellation")
				return
			}
			st, err := p.ChatStream(ctx, userReq(true))
			if err != nil {
				t.Fatalf("ChatStream: %v", err)
			}
			defer st.Close()
			c, err := st.Recv()
			if err != nil || string(c.Text) != "first" {
				t.Fatalf("first Recv = %q, %v", c.Text, err)
			}
			if tc.stop != nil {
				tc.stop(cancel, st)
			}
			if _, err := st.Recv(); !tc.wantErr(err) {
				t.Errorf("Recv after stop = %v", err)
			}
			waitDone(t, done, "the upstream to see the cancellation")
		})
	}
}

func TestTransportErrorHidesURL(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now: the dial fails
	p := newTestProvider(t, "http://user:pw@"+addr, func(c *config.Provider) { c.BaseURL += "?key=QUERYSECRET" })
	_, err = p.ChatStream(context.Background(), userReq(true))
	if err == nil {
		t.Fatal("ChatStream succeeded against a closed port")
	}
	msg := err.Error()
	for _, bad := range []string{"QUERYSECRET", "pw@", testKey} {
		if strings.Contains(msg, bad) {
			t.Errorf("error %q contains %q", msg, bad)
		}
	}
	if !strings.HasPrefix(msg, "testprov: ") {
		t.Errorf("error %q does not name the provider", msg)
	}
}

func TestNewRejectsBadBaseURL(t *testing.T) {
	for _, u := range []string{"", "ftp://x", "not a url", "/relative"} {
		t.Run(u, func(t *testing.T) {
			if _, err := New(config.Provider{Name: "x", BaseURL: u}, llm.Deps{}); err == nil {
				t.Errorf("New accepted base_url %q", u)
			}
		})
	}
}

func TestNewRejectsAStreamOptionsValue(t *testing.T) {
	_, err := New(config.Provider{Name: "x", BaseURL: "http://x/v1", Params: map[string]any{"stream_options": map[string]any{"include_usage": false}}}, llm.Deps{})
	if err == nil || !strings.Contains(err.Error(), "params.stream_options: only null or false") {
		t.Fatalf("New: %v, want params.stream_options refused", err)
	}
}

// TestConnectionReused: streams read to [DONE] give their connection back, so a
// busy gateway does not open one TCP connection per request. Close reads the end of
// the body in the background, even when it comes a moment after [DONE].
func TestConnectionReused(t *testing.T) {
	for _, late := range []time.Duration{0, 30 * time.Millisecond} {
		t.Run(late.String(), func(t *testing.T) {
			var opened, closed atomic.Int32
			body := sseBody(t, "openai_stream_usage.sse")
			up := newUpstreamWith(t, func(w http.ResponseWriter, r *http.Request) {
				body(w, r)
				w.(http.Flusher).Flush()
				time.Sleep(late) // the end of the chunked body comes later
			}, func(s *http.Server) {
				s.ConnState = func(_ net.Conn, st http.ConnState) {
					switch st {
					case http.StateNew:
						opened.Add(1)
					case http.StateClosed:
						closed.Add(1)
					}
				}
			})
			p := newTestProvider(t, up.URL, nil)
			for i := 0; i < 3; i++ {
				st, err := p.ChatStream(context.Background(), userReq(true))
				if err != nil {
					t.Fatal(err)
				}
				if r := collect(t, st); r.Err != nil || r.Text != "1, 2, 3, 4, 5" {
					t.Fatalf("stream %d: %+v", i, r)
				}
				time.Sleep(late + 100*time.Millisecond) // let the background read finish
			}
			time.Sleep(200 * time.Millisecond) // a connection dropped instead would be closed by now
			if n := closed.Load(); n != 0 {
				t.Errorf("%d upstream connections closed after clean streams, want 0", n)
			}
			if n := opened.Load(); n != 1 {
				t.Errorf("%d connections for 3 sequential streams, want 1", n)
			}
		})
	}
}

// TestConfiguredHeaderNamesKeepTheirCase: on the wire, a configured header is sent
// with its name exactly as written, and one that names a header the dialect sets
// (authorization) replaces it instead of going out twice.
func TestConfiguredHeaderNamesKeepTheirCase(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	head := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		var got []byte
		buf := make([]byte, 4096)
		for !strings.Contains(string(got), "\r\n\r\n") {
			n, err := c.Read(buf)
			got = append(got, buf[:n]...)
			if err != nil {
				break
			}
		}
		head <- string(got)
		body := `{"choices":[{"message":{"content":"ok"},"finish_reason":"stop"}]}`
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: "+
			strconv.Itoa(len(body))+"\r\n\r\n"+body)
	}()
	p := newTestProvider(t, "http://"+ln.Addr().String(), func(c *config.Provider) {
		c.Headers = map[string]string{"x-my-lower": "a", "X-MiXed": "b", "authorization": "Bearer other", "user-agent": "myapp/1.0"}
	})
	st, err := p.ChatStream(context.Background(), userReq(false))
	if err != nil {
		t.Fatal(err)
	}
	collect(t, st)
	h := <-head
	for _, line := range []string{"\r\nx-my-lower: a\r\n", "\r\nX-MiXed: b\r\n", "\r\nauthorization: Bearer other\r\n"} {
		if !strings.Contains(h, line) {
			t.Errorf("request head lacks %q:\n%s", strings.TrimSpace(line), h)
		}
	}
	if strings.Contains(h, testKey) || strings.Count(strings.ToLower(h), "\r\nauthorization:") != 1 {
		t.Errorf("the configured authorization must replace the api_key's:\n%s", h)
	}
	// net/http writes User-Agent itself: set in any case, it goes out once, ours.
	if strings.Count(strings.ToLower(h), "\r\nuser-agent:") != 1 || !strings.Contains(h, "\r\nUser-Agent: myapp/1.0\r\n") {
		t.Errorf("user-agent must go out once, as configured:\n%s", h)
	}
}

// TestLongErrorBodyNeverShowsPartOfTheKey: an upstream that echoes the key far into a
// long error page, after padding that folds away, never shows any of it.
func TestLongErrorBodyNeverShowsPartOfTheKey(t *testing.T) {
	const key = "3f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c" // no shape a key pattern would catch: only the key itself
	body := []byte("<html><body>Bad request " + strings.Repeat(" ", 1160) + key + " was refused</body></html>")
	up := newUpstream(t, replay(400, http.Header{"Content-Type": {"text/html"}}, body))
	p := newTestProvider(t, up.URL, func(c *config.Provider) { c.APIKey = key })
	_, err := p.ChatStream(context.Background(), userReq(false))
	var ue *llm.UpstreamError
	if !errors.As(err, &ue) {
		t.Fatalf("err %v", err)
	}
	for i := 0; i+8 <= len(key); i++ {
		if strings.Contains(ue.Message, key[i:i+8]) {
			t.Fatalf("message %q shows part of the key (%q)", ue.Message, key[i:i+8])
		}
	}
	// The same key cut where the body's read stops (maxErrorBody).
	head := "<html><body>Bad request "
	body = []byte(head + strings.Repeat(" ", maxErrorBody-len(head)-16) + key + " was refused</body></html>")
	up = newUpstream(t, replay(400, http.Header{"Content-Type": {"text/html"}}, body))
	p = newTestProvider(t, up.URL, func(c *config.Provider) { c.APIKey = key })
	_, err = p.ChatStream(context.Background(), userReq(false))
	if !errors.As(err, &ue) || strings.Contains(ue.Message, key[:8]) {
		t.Fatalf("cut at the read limit: %v", err)
	}
}
