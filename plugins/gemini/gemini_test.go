package gemini

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ralf-gateway/ralf/core/config"
	"github.com/ralf-gateway/ralf/core/llm"
)

func TestRegistered(t *testing.T) {
	f, ok := llm.Lookup("gemini")
	if !ok {
		t.Fatal("gemini dialect not registered")
	}
	p, err := f(config.Provider{Name: "g", BaseURL: "https://generativelanguage.googleapis.com/v1beta"}, llm.Deps{})
	if err != nil || p.Name() != "g" {
		t.Fatalf("factory: %v", err)
	}
}

func TestReplayFixtures(t *testing.T) {
	cases := []struct {
		fixture   string
		text      string // exact answer; "" = compare with the reference decoder only
		reasoning bool
		usage     llm.Usage
	}{
		{"gemini_stream_basic.sse", "The capital of France is Paris.\n", false, llm.Usage{PromptTokens: 13, CompletionTokens: 8, TotalTokens: 21}},
		{"gemini_stream_single_event.sse", "Paris", false, llm.Usage{PromptTokens: 6, CompletionTokens: 1 + 35, TotalTokens: 42}},
		{"gemini_stream_thinking.sse", "", true, llm.Usage{PromptTokens: 34, CompletionTokens: 469 + 787, TotalTokens: 1290}},
		{"gemini_stream_usage_live.sse", "1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n11\n12\n13\n14\n15\n16\n17\n18\n19\n20\n21\n22\n23\n24\n25\n26\n27\n28\n29\n30",
			false, llm.Usage{PromptTokens: 18, CompletionTokens: 80 + 35, TotalTokens: 133}},
	}
	for _, tc := range cases {
		t.Run(tc.fixture, func(t *testing.T) {
			body := fixture(t, tc.fixture)
			srv, got := upstream(t, 200, sseHeader, body)
			st, err := providerAt(t, srv.URL, nil).ChatStream(context.Background(), hi(true))
			if err != nil {
				t.Fatal(err)
			}
			r := collect(t, st)
			if r.err != nil {
				t.Fatalf("stream error: %v", r.err)
			}
			wantText, wantReason := reference(t, body)
			if tc.text != "" && wantText != tc.text {
				t.Fatalf("reference decoder disagrees with the expected text: %q", wantText)
			}
			if r.text != wantText {
				t.Fatalf("text %q, want %q", r.text, wantText)
			}
			if r.reasoning != wantReason {
				t.Fatalf("reasoning %q, want %q", r.reasoning, wantReason)
			}
			if tc.reasoning {
				if !strings.HasPrefix(r.reasoning, "**Clarifying User Goals**") || !strings.HasPrefix(r.text, "This is a great question!") ||
					strings.Contains(r.text, "Clarifying User Goals") {
					t.Fatalf("thought parts must be reasoning only: text starts %q", r.text[:40])
				}
			}
			if r.finish != "stop" {
				t.Fatalf("finish %q", r.finish)
			}
			if r.usages != 1 || *r.usage != tc.usage {
				t.Fatalf("usage %+v in %d chunks, want %+v once", r.usage, r.usages, tc.usage)
			}
			g := got.get()
			if g.method != http.MethodPost || g.path != "/v1beta/models/gemini-x:streamGenerateContent" || g.query != "alt=sse" {
				t.Fatalf("request %s %s?%s", g.method, g.path, g.query)
			}
			if g.header.Get("x-goog-api-key") != testKey {
				t.Fatal("x-goog-api-key header missing")
			}
			noSecret(t, "URL", g.path+"?"+g.query)
		})
	}
}

func TestRequestBody(t *testing.T) {
	temp, topP, maxTok := 0.2, 0.5, 77
	cases := []struct {
		name   string
		params map[string]any
		req    llm.ChatRequest
		want   string // the whole body, compared as JSON
	}{
		{
			name: "roles and system",
			req: llm.ChatRequest{Messages: []llm.Message{
				{Role: "system", Content: "Be brief."}, {Role: "user", Content: "Q1"}, {Role: "system", Content: "In French."},
				{Role: "assistant", Content: "A1"}, {Role: "user", Content: "Q2"}, {Role: "user", Content: "Q2b"}, {Role: "assistant", Content: ""}}},
			want: `{"contents":[{"role":"user","parts":[{"text":"Q1"}]},{"role":"model","parts":[{"text":"A1"}]},
				{"role":"user","parts":[{"text":"Q2"},{"text":"Q2b"}]}],
				"systemInstruction":{"parts":[{"text":"Be brief.\n\nIn French."}]}}`,
		},
		{
			name: "system only becomes a user turn",
			req:  llm.ChatRequest{Messages: []llm.Message{{Role: "system", Content: "Say hi."}}},
			want: `{"contents":[{"role":"user","parts":[{"text":"Say hi."}]}]}`,
		},
		{
			name:   "request values over params",
			params: map[string]any{"temperature": 0.9, "max_tokens": 10, "top_p": 0.1, "stop": "X"},
			req: llm.ChatRequest{Temperature: &temp, TopP: &topP, MaxTokens: &maxTok, Stop: []string{"END"},
				Messages: []llm.Message{{Role: "user", Content: "hi"}}},
			want: `{"contents":[{"role":"user","parts":[{"text":"hi"}]}],
				"generationConfig":{"temperature":0.2,"topP":0.5,"maxOutputTokens":77,"stopSequences":["END"]}}`,
		},
		{
			name:   "max_completion_tokens in params is maxOutputTokens",
			params: map[string]any{"max_completion_tokens": 100},
			req:    llm.ChatRequest{Messages: []llm.Message{{Role: "user", Content: "hi"}}},
			want: `{"contents":[{"role":"user","parts":[{"text":"hi"}]}],
				"generationConfig":{"maxOutputTokens":100}}`,
		},
		{
			name:   "several names for one field: the Gemini name wins",
			params: map[string]any{"max_tokens": 100, "max_completion_tokens": 200, "maxOutputTokens": 300},
			req:    llm.ChatRequest{Messages: []llm.Message{{Role: "user", Content: "hi"}}},
			want: `{"contents":[{"role":"user","parts":[{"text":"hi"}]}],
				"generationConfig":{"maxOutputTokens":300}}`,
		},
		{
			name:   "params as defaults",
			params: map[string]any{"temperature": 0.9, "max_tokens": 10, "stop": "X"},
			req:    llm.ChatRequest{Messages: []llm.Message{{Role: "user", Content: "hi"}}},
			want: `{"contents":[{"role":"user","parts":[{"text":"hi"}]}],
				"generationConfig":{"temperature":0.9,"maxOutputTokens":10,"stopSequences":["X"]}}`,
		},
		{
			name: "params in Gemini form",
			params: map[string]any{"thinkingConfig": map[string]any{"thinkingBudget": 0, "includeThoughts": true}, "topK": 40,
				"generationConfig": map[string]any{"candidateCount": 1},
				"safetySettings":   []any{map[string]any{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}}},
			req: llm.ChatRequest{Messages: []llm.Message{{Role: "user", Content: "hi"}}},
			want: `{"contents":[{"role":"user","parts":[{"text":"hi"}]}],
				"generationConfig":{"thinkingConfig":{"thinkingBudget":0,"includeThoughts":true},"topK":40,"candidateCount":1},
				"safetySettings":[{"category":"HARM_CATEGORY_HARASSMENT","threshold":"BLOCK_NONE"}]}`,
		},
		{
			name: "OpenAI extras Gemini can express",
			req: llm.ChatRequest{Messages: []llm.Message{{Role: "user", Content: "hi"}},
				Extra: map[string]json.RawMessage{"seed": json.RawMessage(`7`), "presence_penalty": json.RawMessage(`0.5`),
					"logit_bias": json.RawMessage(`{"1":2}`), "frequency_penalty": json.RawMessage(`null`)}},
			// The penalties are not sent: Gemini 2.5 and later refuse them.
			want: `{"contents":[{"role":"user","parts":[{"text":"hi"}]}],"generationConfig":{"seed":7}}`,
		},
		{
			name: "response_format json_object",
			req: llm.ChatRequest{Messages: []llm.Message{{Role: "user", Content: "hi"}},
				Extra: map[string]json.RawMessage{"response_format": json.RawMessage(`{"type":"json_object"}`)}},
			want: `{"contents":[{"role":"user","parts":[{"text":"hi"}]}],"generationConfig":{"responseMimeType":"application/json"}}`,
		},
		{
			name: "response_format json_schema",
			req: llm.ChatRequest{Messages: []llm.Message{{Role: "user", Content: "hi"}},
				Extra: map[string]json.RawMessage{"response_format": json.RawMessage(`{"type":"json_schema","json_schema":{"name":"city","strict":true,
					"schema":{"type":"object","properties":{"name":{"type":"string"}},"required":["name"]}}}`)}},
			want: `{"contents":[{"role":"user","parts":[{"text":"hi"}]}],"generationConfig":{"responseMimeType":"application/json",
				"responseJsonSchema":{"type":"object","properties":{"name":{"type":"string"}},"required":["name"]}}}`,
		},
		{
			name: "response_format json_object beside a stray json_schema",
			req: llm.ChatRequest{Messages: []llm.Message{{Role: "user", Content: "hi"}},
				Extra: map[string]json.RawMessage{"response_format": json.RawMessage(`{"type":"json_object","json_schema":"stray"}`)}},
			want: `{"contents":[{"role":"user","parts":[{"text":"hi"}]}],"generationConfig":{"responseMimeType":"application/json"}}`,
		},
		{
			name: "response_format text",
			req: llm.ChatRequest{Messages: []llm.Message{{Role: "user", Content: "hi"}},
				Extra: map[string]json.RawMessage{"response_format": json.RawMessage(`{"type":"text"}`)}},
			want: `{"contents":[{"role":"user","parts":[{"text":"hi"}]}]}`,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv, got := upstream(t, 200, nil, fixture(t, "gemini_stream_single_event.sse"))
			p := providerAt(t, srv.URL, func(c *config.Provider) { c.Params = tc.params })
			req := tc.req
			req.Stream = true
			if r := collect(t, must(p.ChatStream(context.Background(), &req))); r.err != nil {
				t.Fatal(r.err)
			}
			var gotBody, wantBody any
			if err := json.Unmarshal(got.get().raw, &gotBody); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal([]byte(tc.want), &wantBody); err != nil {
				t.Fatal(err)
			}
			g, _ := json.Marshal(gotBody)
			w, _ := json.Marshal(wantBody)
			if !bytes.Equal(g, w) {
				t.Fatalf("body\n got %s\nwant %s", g, w)
			}
		})
	}
}

func must(st llm.Stream, err error) llm.Stream {
	if err != nil {
		panic(err)
	}
	return st
}

func TestRequestHeadersAndModel(t *testing.T) {
	cases := []struct {
		name, key, model, wantPath string
		headers                    map[string]string
	}{
		{"config model and headers", testKey, "", "/v1beta/models/gemini-x:streamGenerateContent", map[string]string{"X-Goog-User-Project": "p1"}},
		{"request model, escaped", testKey, "tuned/a b", "/v1beta/models/tuned%2Fa%20b:streamGenerateContent", nil},
		{"no key, no key header", "", "", "/v1beta/models/gemini-x:streamGenerateContent", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv, got := upstream(t, 200, nil, fixture(t, "gemini_stream_basic.sse"))
			p := providerAt(t, srv.URL, func(c *config.Provider) {
				c.BaseURL += "/" // a trailing slash must not double up
				c.APIKey, c.Headers = tc.key, tc.headers
			})
			req := hi(true)
			req.Model = tc.model
			if r := collect(t, must(p.ChatStream(context.Background(), req))); r.err != nil {
				t.Fatal(r.err)
			}
			g := got.get()
			if g.path != tc.wantPath || g.query != "alt=sse" {
				t.Fatalf("url %s?%s, want %s?alt=sse", g.path, g.query, tc.wantPath)
			}
			if v, ok := g.header["X-Goog-Api-Key"]; (tc.key == "") != !ok || (ok && v[0] != tc.key) {
				t.Fatalf("x-goog-api-key %q", v)
			}
			for k, v := range tc.headers {
				if g.header.Get(k) != v {
					t.Fatalf("header %s = %q", k, g.header.Get(k))
				}
			}
			if g.header.Get("Content-Type") != "application/json" {
				t.Fatalf("content type %q", g.header.Get("Content-Type"))
			}
		})
	}
}

func TestNonStream(t *testing.T) {
	// generateContent answers with one pretty-printed object shaped like one event.
	one := bytes.TrimPrefix(bytes.TrimSpace(fixture(t, "gemini_stream_single_event.sse")), []byte("data: "))
	var pretty bytes.Buffer
	if err := json.Indent(&pretty, one, "", "  "); err != nil {
		t.Fatal(err)
	}
	srv, got := upstream(t, 200, http.Header{"Content-Type": {"application/json"}}, pretty.Bytes())
	st, err := providerAt(t, srv.URL, nil).ChatStream(context.Background(), hi(false))
	if err != nil {
		t.Fatal(err)
	}
	r := collect(t, st)
	want := llm.Usage{PromptTokens: 6, CompletionTokens: 36, TotalTokens: 42}
	if r.err != nil || r.text != "Paris" || r.chunks != 1 || r.finish != "stop" || r.usage == nil || *r.usage != want {
		t.Fatalf("result %+v usage %+v", r, r.usage)
	}
	if g := got.get(); g.path != "/v1beta/models/gemini-x:generateContent" || g.query != "" {
		t.Fatalf("url %s?%s", g.path, g.query)
	}
}

func TestHTTPErrors(t *testing.T) {
	status403, hdr403 := fixtureHeaders(t, "gemini_error_403.headers")
	long := strings.Repeat("quota exceeded ", 100)
	cases := []struct {
		name       string
		status     int
		header     http.Header
		body       string
		wantMsg    string // prefix of the message
		wantRetry  time.Duration
		retryable  bool
		streamMode bool
	}{
		{"403 fixture", status403, hdr403, string(fixture(t, "gemini_error_403.json")),
			"PERMISSION_DENIED: Method doesn't allow unregistered callers (callers without established identity).", 0, true, true},
		{"429 retryDelay", 429, nil, `{"error":{"code":429,"message":"Resource has been exhausted.","status":"RESOURCE_EXHAUSTED",
			"details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[]},
			{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"12s"}]}}`,
			"RESOURCE_EXHAUSTED: Resource has been exhausted.", 12 * time.Second, true, true},
		{"429 fractional retryDelay", 429, nil, `{"error":{"code":429,"message":"slow down","status":"RESOURCE_EXHAUSTED",
			"details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"12.5s"}]}}`,
			"RESOURCE_EXHAUSTED: slow down", 12500 * time.Millisecond, true, false},
		{"Retry-After wins", 503, http.Header{"Retry-After": {"3"}}, `{"error":{"code":503,"message":"overloaded","status":"UNAVAILABLE",
			"details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"40s"}]}}`,
			"UNAVAILABLE: overloaded", 3 * time.Second, true, true},
		{"array envelope", 400, nil, `[{"error":{"code":400,"message":"Invalid JSON payload received.","status":"INVALID_ARGUMENT"}}]`,
			"INVALID_ARGUMENT: Invalid JSON payload received.", 0, false, true},
		{"secrets redacted", 400, nil, `{"error":{"code":400,"message":"API key not valid: ` + testKey + ` (see https://x.test/?key=abcdef123&a=1)","status":"INVALID_ARGUMENT"}}`,
			"INVALID_ARGUMENT: API key not valid: [redacted] (see https://x.test/?key=[redacted]&a=1)", 0, false, true},
		// Google's answer to a bad key is a 400 (ErrorInfo reason API_KEY_INVALID), and to
		// an unsupported region a 400 FAILED_PRECONDITION: our access is broken, not the
		// request, so another provider is tried.
		{"bad key is a 400", 400, nil, `{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT",
			"details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID","domain":"googleapis.com",
			"metadata":{"service":"generativelanguage.googleapis.com"}},
			{"@type":"type.googleapis.com/google.rpc.LocalizedMessage","locale":"en-US","message":"API key not valid. Please pass a valid API key."}]}}`,
			"INVALID_ARGUMENT: API key not valid. Please pass a valid API key.", 0, true, true},
		{"unsupported region", 400, nil, `{"error":{"code":400,"message":"User location is not supported for the API use.","status":"FAILED_PRECONDITION"}}`,
			"FAILED_PRECONDITION: User location is not supported for the API use.", 0, true, false},
		{"not JSON", 502, nil, "<html><body>Bad Gateway</body></html>", "<html><body>Bad Gateway</body></html>", 0, true, true},
		{"empty body", 500, nil, "", "Internal Server Error", 0, true, true},
		{"long message bounded", 400, nil, `{"error":{"code":400,"message":"` + long + `"}}`, "quota exceeded quota", 0, false, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv, _ := upstream(t, tc.status, tc.header, []byte(tc.body))
			_, err := providerAt(t, srv.URL, nil).ChatStream(context.Background(), hi(tc.streamMode))
			var ue *llm.UpstreamError
			if !errors.As(err, &ue) {
				t.Fatalf("err %v, want *llm.UpstreamError", err)
			}
			if ue.Provider != "gem" || ue.Status != tc.status || ue.RetryAfter != tc.wantRetry || ue.Retryable() != tc.retryable {
				t.Fatalf("got %+v", ue)
			}
			if !strings.HasPrefix(ue.Message, tc.wantMsg) {
				t.Fatalf("message %q, want prefix %q", ue.Message, tc.wantMsg)
			}
			if len(ue.Message) > 300+len("…") {
				t.Fatalf("message is %d bytes", len(ue.Message))
			}
			noSecret(t, "error", err.Error())
			if strings.Contains(err.Error(), "abcdef123") {
				t.Fatalf("key= value not redacted: %s", err)
			}
		})
	}
}

func TestStreamErrors(t *testing.T) {
	basic := fixture(t, "gemini_stream_basic.sse")
	firstEvent := basic[:bytes.Index(basic, []byte("\r\n\r\n"))+4]
	const ev = "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a\"}]}}]}\r\n\r\n"
	cases := []struct {
		name       string
		body       string
		wantText   string
		unexpected bool // error wraps io.ErrUnexpectedEOF
		status     int  // *UpstreamError with this status
		retry      time.Duration
		msg        string
	}{
		{name: "cut between events", body: string(firstEvent), wantText: "The", unexpected: true},
		{name: "cut inside an event", body: string(basic[:len(firstEvent)+40]), wantText: "The"},
		{name: "empty body", body: "", unexpected: true},
		{name: "no finish reason", body: ev + ev, wantText: "aa", unexpected: true},
		{name: "error event mid-stream", wantText: "a", status: 503, msg: "UNAVAILABLE: overloaded",
			body: ev + "data: {\"error\":{\"code\":503,\"message\":\"overloaded\",\"status\":\"UNAVAILABLE\"}}\r\n\r\n"},
		{name: "error event with retryDelay and key", status: 429, retry: 7 * time.Second, msg: "RESOURCE_EXHAUSTED: quota for [redacted]",
			body: "data: {\"error\":{\"code\":429,\"message\":\"quota for " + testKey + "\",\"status\":\"RESOURCE_EXHAUSTED\",\"details\":[{\"retryDelay\":\"7s\"}]}}\r\n\r\n"},
		{name: "error event without code", status: 502, msg: "boom", body: "data: {\"error\":{\"message\":\"boom\"}}\n\n"},
		{name: "blocked prompt", status: 400, msg: "prompt blocked: PROHIBITED_CONTENT",
			body: "data: {\"promptFeedback\":{\"blockReason\":\"PROHIBITED_CONTENT\"},\"usageMetadata\":{\"promptTokenCount\":5,\"totalTokenCount\":5}}\r\n\r\n"},
		{name: "malformed JSON", body: ev + "data: {\"candidates\":[}\r\n\r\n", wantText: "a"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv, _ := upstream(t, 200, sseHeader, []byte(tc.body))
			r := collect(t, must(providerAt(t, srv.URL, nil).ChatStream(context.Background(), hi(true))))
			if r.text != tc.wantText {
				t.Fatalf("text %q, want %q", r.text, tc.wantText)
			}
			if r.err == nil {
				t.Fatal("the stream must not look complete")
			}
			if errors.Is(r.err, io.ErrUnexpectedEOF) != tc.unexpected {
				t.Fatalf("err %v: wraps ErrUnexpectedEOF = %v, want %v", r.err, !tc.unexpected, tc.unexpected)
			}
			var ue *llm.UpstreamError
			if errors.As(r.err, &ue) != (tc.status != 0) {
				t.Fatalf("err %v: upstream error = %v, want status %d", r.err, ue != nil, tc.status)
			}
			if ue != nil && (ue.Status != tc.status || ue.RetryAfter != tc.retry || ue.Message != tc.msg) {
				t.Fatalf("got %+v", ue)
			}
			noSecret(t, "error", r.err.Error())
		})
	}
}

func TestFinishAndUsage(t *testing.T) {
	ev := func(body string) string { return "data: " + body + "\r\n\r\n" }
	cases := []struct {
		name, body, text, finish string
		usage                    *llm.Usage
		usages                   int
	}{
		{"max tokens", ev(`{"candidates":[{"content":{"parts":[{"text":"a"}]},"finishReason":"MAX_TOKENS"}]}`), "a", "length", nil, 0},
		{"safety", ev(`{"candidates":[{"finishReason":"SAFETY"}]}`), "", "content_filter", nil, 0},
		{"recitation", ev(`{"candidates":[{"finishReason":"RECITATION"}]}`), "", "content_filter", nil, 0},
		// Only OpenAI's own values: some clients throw on any other.
		{"language", ev(`{"candidates":[{"content":{"parts":[{"text":"x"}]},"finishReason":"LANGUAGE"}]}`), "x", "content_filter", nil, 0},
		{"other", ev(`{"candidates":[{"content":{"parts":[{"text":"x"}]},"finishReason":"OTHER"}]}`), "x", "stop", nil, 0},
		{"unknown", ev(`{"candidates":[{"content":{"parts":[{"text":"x"}]},"finishReason":"SOMETHING_NEW"}]}`), "x", "stop", nil, 0},
		{"usage after the finish event", ev(`{"candidates":[{"content":{"parts":[{"text":"a"}]},"finishReason":"STOP"}]}`) +
			ev(`{"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":1,"totalTokenCount":4}}`),
			"a", "stop", &llm.Usage{PromptTokens: 3, CompletionTokens: 1, TotalTokens: 4}, 1},
		{"only the latest usage", ev(`{"candidates":[{"content":{"parts":[{"text":"a"}]}}],"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":1,"totalTokenCount":4}}`) +
			ev(`{"candidates":[{"content":{"parts":[{"text":"b"}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":2,"thoughtsTokenCount":5,"totalTokenCount":10}}`),
			"ab", "stop", &llm.Usage{PromptTokens: 3, CompletionTokens: 7, TotalTokens: 10}, 1},
		{"candidate 0 only", ev(`{"candidates":[{"content":{"parts":[{"text":"one"}]},"index":1},{"content":{"parts":[{"text":"zero"},{"text":"-think","thought":true}]},"index":0,"finishReason":"STOP"},{"content":{"parts":[{"text":"dup"}]}}]}`),
			"zero", "stop", nil, 0},
		{"escapes and several parts", ev(`{"candidates":[{"content":{"parts":[{"text":"caf\u00e9 \ud83d\ude00 \"q\"\n"},{"functionCall":{"name":"f","args":{}}},{"text":"2"}]},"finishReason":"STOP"}]}`),
			"café 😀 \"q\"\n2", "stop", nil, 0},
		{"LF separators and comments", ": keepalive\n\ndata: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a\"}]},\"finishReason\":\"STOP\"}]}\n\n", "a", "stop", nil, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv, _ := upstream(t, 200, sseHeader, []byte(tc.body))
			r := collect(t, must(providerAt(t, srv.URL, nil).ChatStream(context.Background(), hi(true))))
			if r.err != nil || r.text != tc.text || r.finish != tc.finish || r.usages != tc.usages {
				t.Fatalf("got %+v", r)
			}
			if tc.usage != nil && *r.usage != *tc.usage {
				t.Fatalf("usage %+v, want %+v", r.usage, tc.usage)
			}
		})
	}
}

// hanging is an upstream that sends one event and then waits for the request to end,
// reporting when it saw the end.
func hanging(t *testing.T) (*httptest.Server, chan struct{}) {
	gone := make(chan struct{})
	var once sync.Once
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a\"}]}}]}\r\n\r\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
		once.Do(func() { close(gone) })
	}))
	t.Cleanup(srv.Close)
	return srv, gone
}

func waitGone(t *testing.T, gone chan struct{}) {
	t.Helper()
	select {
	case <-gone:
	case <-time.After(10 * time.Second): // deadlock guard only
		t.Fatal("upstream request not aborted")
	}
}

func TestAbort(t *testing.T) {
	t.Run("context cancel", func(t *testing.T) {
		srv, gone := hanging(t)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		st := must(providerAt(t, srv.URL, nil).ChatStream(ctx, hi(true)))
		defer st.Close()
		if c, err := st.Recv(); err != nil || string(c.Text) != "a" {
			t.Fatalf("first chunk: %v", err)
		}
		cancel()
		waitGone(t, gone)
		if _, err := st.Recv(); !errors.Is(err, context.Canceled) {
			t.Fatalf("Recv after cancel: %v", err)
		}
	})
	t.Run("Close unblocks a pending Recv", func(t *testing.T) {
		srv, gone := hanging(t)
		st := must(providerAt(t, srv.URL, nil).ChatStream(context.Background(), hi(true)))
		if _, err := st.Recv(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { _, err := st.Recv(); done <- err }()
		st.Close()
		waitGone(t, gone)
		select {
		case err := <-done:
			if err == nil || err == io.EOF {
				t.Fatalf("Recv after Close: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Recv still blocked after Close")
		}
		if _, err := st.Recv(); err == nil || err == io.EOF {
			t.Fatalf("Recv after Close: %v", err)
		}
		st.Close() // twice is fine
	})
	t.Run("timeout is a deadline on the whole request", func(t *testing.T) {
		srv, gone := hanging(t)
		st := must(providerAt(t, srv.URL, func(c *config.Provider) { c.Timeout = 200 * time.Millisecond }).ChatStream(context.Background(), hi(true)))
		defer st.Close()
		r := collect(t, st)
		if r.text != "a" || !errors.Is(r.err, context.DeadlineExceeded) {
			t.Fatalf("got %+v", r)
		}
		waitGone(t, gone)
	})
}

func TestTransportError(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	base := srv.URL
	srv.Close()
	_, err := providerAt(t, base, nil).ChatStream(context.Background(), hi(true))
	var ue *llm.UpstreamError
	if err == nil || errors.As(err, &ue) || !strings.HasPrefix(err.Error(), "gem: ") {
		t.Fatalf("err %v", err)
	}
	noSecret(t, "error", err.Error())
	if strings.Contains(err.Error(), "alt=sse") || strings.Contains(err.Error(), "/models/") {
		t.Fatalf("transport error carries the URL: %v", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = providerAt(t, base, nil).ChatStream(ctx, hi(true))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled before sending: %v", err)
	}
}

func TestNewErrors(t *testing.T) {
	cases := []struct {
		name   string
		base   string
		params map[string]any
	}{
		{"relative base_url", "generativelanguage.googleapis.com/v1beta", nil},
		{"base_url with query", "https://g.test/v1beta?key=abc", nil},
		{"generationConfig not a mapping", "https://g.test/v1beta", map[string]any{"generationConfig": 3}},
		{"param JSON cannot hold", "https://g.test/v1beta", map[string]any{"topK": map[any]any{1: 2}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(config.Provider{Name: "gem", BaseURL: tc.base, APIKey: testKey, Params: tc.params}, llm.Deps{})
			if err == nil || !strings.HasPrefix(err.Error(), "gem: ") {
				t.Fatalf("err %v", err)
			}
			noSecret(t, "error", err.Error())
			if strings.Contains(err.Error(), "abc") {
				t.Fatalf("error shows the URL: %v", err)
			}
		})
	}
}

// TestConcurrentOverrides runs requests with different overrides over one provider:
// the params defaults are shared and must never take one request's values.
func TestConcurrentOverrides(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			GenerationConfig map[string]any `json:"generationConfig"`
		}
		json.NewDecoder(r.Body).Decode(&body)
		fmt.Fprintf(w, `data: {"candidates":[{"content":{"parts":[{"text":"%v"}]},"finishReason":"STOP"}]}`+"\n\n", body.GenerationConfig["temperature"])
	}))
	defer srv.Close()
	p := providerAt(t, srv.URL, func(c *config.Provider) { c.Params = map[string]any{"temperature": 0.5, "topK": 3} })
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, want := hi(true), "0.5"
			if i%2 == 0 {
				temp := float64(i) / 100
				req.Temperature, want = &temp, fmt.Sprint(temp)
			}
			st, err := p.ChatStream(context.Background(), req)
			if err != nil {
				errs <- err
				return
			}
			if r := collect(t, st); r.err != nil || r.text != want {
				errs <- fmt.Errorf("request %d: text %q err %v, want %s", i, r.text, r.err, want)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestParamsOrderIsFixed: two OpenAI-style names for one Gemini field give the same
// request every time, not whichever the map's order brings last.
func TestParamsOrderIsFixed(t *testing.T) {
	var first string
	for i := 0; i < 30; i++ {
		p := providerAt(t, "http://127.0.0.1:1", func(c *config.Provider) {
			c.Params = map[string]any{"max_tokens": 100, "max_completion_tokens": 200, "stop": "X", "stopSequences": []any{"Y"}}
		})
		b, err := p.(*Provider).body(&llm.ChatRequest{Messages: []llm.Message{{Role: "user", Content: "hi"}}})
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = string(b)
		} else if string(b) != first {
			t.Fatalf("run %d: %s, run 0: %s", i, b, first)
		}
	}
}
