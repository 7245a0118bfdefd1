package mock

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestAnswer(t *testing.T) {
	long := strings.Repeat("ab", 50) // 100 characters: only 60 are echoed
	cases := []struct {
		name   string
		said   string
		chunks int
		text   string
	}{
		{"one chunk", "Hi", 1, "Hello from the ralf mock. You said: Hi"},
		{"default count", "Hello", 20, "Hello from the ralf mock. You said: Hello"},
		{"echo cut at 60 characters", long, 7, "Hello from the ralf mock. You said: " + long[:60]},
		{"multibyte characters stay whole", "héllo wörld ✓", 13, "Hello from the ralf mock. You said: héllo wörld ✓"},
		{"padded when chunks exceed the text", "", 40, "Hello from the ralf mock. You said: ...."},
		{"no chunks, no text", "Hi", 0, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := Answer(tc.said, tc.chunks)
			if len(got) != max(tc.chunks, 0) {
				t.Fatalf("%d deltas, want %d", len(got), tc.chunks)
			}
			for i, d := range got {
				if d == "" || !utf8.ValidString(d) {
					t.Fatalf("delta %d = %q: want non-empty valid UTF-8", i, d)
				}
			}
			if j := strings.Join(got, ""); j != tc.text {
				t.Fatalf("text %q, want %q", j, tc.text)
			}
		})
	}
}

func oaPrefix(model string) string {
	return `data: {"id":"chatcmpl-mock","object":"chat.completion.chunk","created":1700000000,"model":"` + model + `","choices":`
}

// TestOpenAIStreamBytes pins the exact bytes a client receives, with and without
// stream_options.include_usage.
func TestOpenAIStreamBytes(t *testing.T) {
	p := oaPrefix("mock+chunks=2")
	role := p + `[{"index":0,"delta":{"role":"assistant"},"finish_reason":null}]}` + "\n\n"
	c1 := p + `[{"index":0,"delta":{"content":"Hello from the ralf"},"finish_reason":null}]}` + "\n\n"
	c2 := p + `[{"index":0,"delta":{"content":" mock. You said: Hi"},"finish_reason":null}]}` + "\n\n"
	fin := p + `[{"index":0,"delta":{},"finish_reason":"stop"}]}` + "\n\n"
	use := p + `[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}` + "\n\n"
	done := "data: [DONE]\n\n"
	cases := []struct {
		name  string
		usage bool
		want  string
	}{
		{"include_usage", true, role + c1 + c2 + fin + use + done},
		{"no usage asked", false, role + c1 + c2 + fin + done},
	}
	e := newEnv(t, Options{})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := e.post("/v1/chat/completions", oaReq("mock+chunks=2", true, tc.usage, "Hi"))
			if a.err != nil || a.status != 200 {
				t.Fatalf("status %d err %v body %q", a.status, a.err, a.body)
			}
			if a.body != tc.want {
				t.Fatalf("body\n got %q\nwant %q", a.body, tc.want)
			}
			if ct, cc := a.header.Get("Content-Type"), a.header.Get("Cache-Control"); ct != "text/event-stream" || cc != "no-cache" {
				t.Fatalf("Content-Type %q Cache-Control %q", ct, cc)
			}
		})
	}
}

// oaStream is an OpenAI stream as a client decodes it.
type oaStream struct {
	roleFirst bool
	deltas    []string
	reasoning []string
	finish    string
	usage     *struct{ Prompt, Completion, Total int }
	done      bool
}

func parseOA(t *testing.T, body string) oaStream {
	t.Helper()
	var s oaStream
	for i, ev := range strings.Split(strings.TrimSuffix(body, "\n\n"), "\n\n") {
		data, ok := strings.CutPrefix(ev, "data: ")
		if !ok {
			t.Fatalf("event %d %q is not a data event", i, ev)
		}
		if data == "[DONE]" {
			s.done = true
			continue
		}
		var c struct {
			Object  string `json:"object"`
			Choices []struct {
				Delta struct {
					Role             *string `json:"role"`
					Content          *string `json:"content"`
					ReasoningContent *string `json:"reasoning_content"`
				} `json:"delta"`
				FinishReason *string `json:"finish_reason"`
			} `json:"choices"`
			Usage *struct {
				Prompt     int `json:"prompt_tokens"`
				Completion int `json:"completion_tokens"`
				Total      int `json:"total_tokens"`
			} `json:"usage"`
		}
		if err := json.Unmarshal([]byte(data), &c); err != nil {
			t.Fatalf("event %d %q: %v", i, data, err)
		}
		if c.Object != "chat.completion.chunk" {
			t.Fatalf("event %d object %q", i, c.Object)
		}
		if c.Usage != nil {
			if len(c.Choices) != 0 {
				t.Fatalf("usage chunk with choices: %q", data)
			}
			s.usage = &struct{ Prompt, Completion, Total int }{c.Usage.Prompt, c.Usage.Completion, c.Usage.Total}
		}
		for _, ch := range c.Choices {
			d := ch.Delta
			if i == 0 {
				s.roleFirst = d.Role != nil && *d.Role == "assistant" && d.Content == nil
			}
			if d.Content != nil {
				s.deltas = append(s.deltas, *d.Content)
			}
			if d.ReasoningContent != nil {
				s.reasoning = append(s.reasoning, *d.ReasoningContent)
			}
			if ch.FinishReason != nil {
				s.finish = *ch.FinishReason
			}
		}
	}
	return s
}

// TestOpenAIStreamIsAnswer: every delta is what Answer says, in order, for a long
// prompt with text parts and the default chunk count.
func TestOpenAIStreamIsAnswer(t *testing.T) {
	said := "Tell me about gateways, in a sentence that is longer than sixty characters for sure."
	cases := []struct {
		name, body string
		chunks     int
	}{
		{"string content, default chunks", oaReq("gpt-4o", true, true, said), 20},
		{"text parts", `{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":[{"type":"text","text":"Tell me about gateways, "},{"type":"text","text":"in a sentence that is longer than sixty characters for sure."}]}]}`, 20},
		{"chunks from options", oaReq("m", true, true, said), 7},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, Options{Chunks: tc.chunks})
			a := e.post("/v1/chat/completions", tc.body)
			if a.status != 200 || a.err != nil {
				t.Fatalf("status %d err %v", a.status, a.err)
			}
			s := parseOA(t, a.body)
			want := Answer(said, tc.chunks)
			if strings.Join(s.deltas, "|") != strings.Join(want, "|") {
				t.Fatalf("deltas %q\nwant %q", s.deltas, want)
			}
			if !s.roleFirst || s.finish != "stop" || !s.done || s.usage == nil || s.usage.Completion != tc.chunks {
				t.Fatalf("role first %v finish %q done %v usage %+v", s.roleFirst, s.finish, s.done, s.usage)
			}
		})
	}
}

func TestOpenAINonStream(t *testing.T) {
	e := newEnv(t, Options{})
	a := e.post("/v1/chat/completions", oaReq("mock+chunks=4", false, false, "Hi"))
	if a.status != 200 || a.header.Get("Content-Type") != "application/json" {
		t.Fatalf("status %d type %q", a.status, a.header.Get("Content-Type"))
	}
	var c struct {
		Object  string `json:"object"`
		Model   string `json:"model"`
		Choices []struct {
			Message      struct{ Role, Content string }
			FinishReason string `json:"finish_reason"`
		}
		Usage struct {
			Prompt     int `json:"prompt_tokens"`
			Completion int `json:"completion_tokens"`
			Total      int `json:"total_tokens"`
		}
	}
	if err := json.Unmarshal([]byte(a.body), &c); err != nil {
		t.Fatalf("%q: %v", a.body, err)
	}
	want := strings.Join(Answer("Hi", 4), "")
	if c.Object != "chat.completion" || c.Model != "mock+chunks=4" || len(c.Choices) != 1 ||
		c.Choices[0].Message.Role != "assistant" || c.Choices[0].Message.Content != want || c.Choices[0].FinishReason != "stop" {
		t.Fatalf("answer %+v", c)
	}
	if c.Usage.Prompt != 3 || c.Usage.Completion != 4 || c.Usage.Total != 7 {
		t.Fatalf("usage %+v", c.Usage)
	}
}

func gemEvent(text, extra string) string {
	return `data: {"candidates": [{"content": {"parts": [{"text": ` + quote(text) + `}],"role": "model"}` + extra
}

// TestGeminiStreamBytes pins the exact bytes of a Gemini SSE stream: CRLF CRLF between
// events, finishReason and usageMetadata on the last content event.
func TestGeminiStreamBytes(t *testing.T) {
	tail := `,"modelVersion": "mock+chunks=2","responseId": "mock"}` + "\r\n\r\n"
	want := gemEvent("Hello from the ralf", `,"index": 0}]`) + tail +
		gemEvent(" mock. You said: Hi", `,"finishReason": "STOP","index": 0}],"usageMetadata": {"promptTokenCount": 3,"candidatesTokenCount": 2,"totalTokenCount": 5}`) + tail
	e := newEnv(t, Options{})
	a := e.post(gemStream("mock+chunks=2"), gemReq)
	if a.err != nil || a.status != 200 || a.header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("status %d err %v type %q", a.status, a.err, a.header.Get("Content-Type"))
	}
	if a.body != want {
		t.Fatalf("body\n got %q\nwant %q", a.body, want)
	}
}

type gemAnswer struct {
	Candidates []struct {
		Content struct {
			Parts []struct {
				Text    string `json:"text"`
				Thought bool   `json:"thought"`
			} `json:"parts"`
			Role string `json:"role"`
		} `json:"content"`
		FinishReason string `json:"finishReason"`
	} `json:"candidates"`
	UsageMetadata *struct {
		Prompt     int `json:"promptTokenCount"`
		Candidates int `json:"candidatesTokenCount"`
		Total      int `json:"totalTokenCount"`
	} `json:"usageMetadata"`
	Error *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Status  string `json:"status"`
	} `json:"error"`
}

// parseGem decodes a Gemini SSE body: answer text, thought text, whether the last
// event finished with usage.
func parseGem(t *testing.T, body string) (text, thoughts string, finished bool) {
	t.Helper()
	for i, ev := range strings.Split(strings.TrimSuffix(body, "\r\n\r\n"), "\r\n\r\n") {
		var g gemAnswer
		if err := json.Unmarshal([]byte(strings.TrimPrefix(ev, "data: ")), &g); err != nil {
			t.Fatalf("event %d %q: %v", i, ev, err)
		}
		finished = len(g.Candidates) == 1 && g.Candidates[0].FinishReason == "STOP" && g.UsageMetadata != nil
		for _, c := range g.Candidates {
			for _, p := range c.Content.Parts {
				if p.Thought {
					thoughts += p.Text
				} else {
					text += p.Text
				}
			}
		}
	}
	return text, thoughts, finished
}

func TestGemini(t *testing.T) {
	e := newEnv(t, Options{})
	t.Run("stream default chunks", func(t *testing.T) {
		a := e.post(gemStream("gemini-3-flash-preview"), gemReq)
		if n := strings.Count(a.body, "\r\n\r\n"); a.status != 200 || n != 20 {
			t.Fatalf("status %d, %d events, want 20", a.status, n)
		}
		text, thoughts, finished := parseGem(t, a.body)
		if text != strings.Join(Answer("Hi", 20), "") || thoughts != "" || !finished {
			t.Fatalf("text %q thoughts %q finished %v", text, thoughts, finished)
		}
	})
	t.Run("generateContent", func(t *testing.T) {
		a := e.post(gemWhole("mock+chunks=3"), gemReq)
		var g gemAnswer
		if err := json.Unmarshal([]byte(a.body), &g); err != nil || a.status != 200 || a.header.Get("Content-Type") != "application/json" {
			t.Fatalf("status %d %q: %v", a.status, a.body, err)
		}
		if len(g.Candidates) != 1 || g.Candidates[0].Content.Parts[0].Text != strings.Join(Answer("Hi", 3), "") ||
			g.Candidates[0].Content.Role != "model" || g.Candidates[0].FinishReason != "STOP" {
			t.Fatalf("answer %+v", g)
		}
		if u := g.UsageMetadata; u == nil || u.Prompt != 3 || u.Candidates != 3 || u.Total != 6 {
			t.Fatalf("usage %+v", u)
		}
	})
	t.Run("last user turn is echoed", func(t *testing.T) {
		a := e.post(gemStream("m"), `{"contents":[{"role":"user","parts":[{"text":"first"}]},{"role":"model","parts":[{"text":"ok"}]},{"parts":[{"text":"second "},{"text":"turn"}]}]}`)
		if text, _, _ := parseGem(t, a.body); text != strings.Join(Answer("second turn", 20), "") {
			t.Fatalf("text %q", text)
		}
	})
	t.Run("streaming needs alt=sse", func(t *testing.T) {
		a := e.post("/v1beta/models/m:streamGenerateContent", gemReq)
		checkGeminiError(t, a, 400, "INVALID_ARGUMENT")
	})
	t.Run("models list", func(t *testing.T) {
		a := e.do(t.Context(), http.MethodGet, "/v1beta/models", "")
		if a.status != 200 || !strings.Contains(a.body, `"models/mock"`) {
			t.Fatalf("%d %q", a.status, a.body)
		}
	})
}

func checkGeminiError(t *testing.T, a answer, status int, code string) {
	t.Helper()
	var g gemAnswer
	if err := json.Unmarshal([]byte(a.body), &g); err != nil || a.status != status || g.Error == nil ||
		g.Error.Code != status || g.Error.Status != code || g.Error.Message == "" {
		t.Fatalf("status %d body %q (err %v): want %d %s", a.status, a.body, err, status, code)
	}
	if a.header.Get("Content-Type") != "application/json" {
		t.Fatalf("Content-Type %q", a.header.Get("Content-Type"))
	}
}

func checkOpenAIError(t *testing.T, a answer, status int, typ, contains string) {
	t.Helper()
	var o openAIError
	if err := json.Unmarshal([]byte(a.body), &o); err != nil || a.status != status || o.Error.Type != typ ||
		o.Error.Code == "" || !strings.Contains(o.Error.Message, contains) {
		t.Fatalf("status %d body %q (err %v): want %d %s containing %q", a.status, a.body, err, status, typ, contains)
	}
	if a.header.Get("Content-Type") != "application/json" {
		t.Fatalf("Content-Type %q", a.header.Get("Content-Type"))
	}
}

func TestBadRequests(t *testing.T) {
	e := newEnv(t, Options{})
	cases := []struct {
		name, method, path, body string
		status                   int
		gemini                   bool
		contains                 string
	}{
		{"malformed JSON", "POST", "/v1/chat/completions", `{"messages":[`, 400, false, "invalid JSON"},
		{"no messages", "POST", "/v1/chat/completions", `{"model":"m"}`, 400, false, "messages"},
		{"empty messages", "POST", "/v1/chat/completions", `{"model":"m","messages":[]}`, 400, false, "messages"},
		{"message without role", "POST", "/v1/chat/completions", `{"messages":[{"content":"hi"}]}`, 400, false, "messages[0].role"},
		{"content a number", "POST", "/v1/chat/completions", `{"messages":[{"role":"user","content":5}]}`, 400, false, "messages[0].content"},
		{"wrong method", "GET", "/v1/chat/completions", "", 405, false, "POST"},
		{"unknown path", "POST", "/v1/completions", "{}", 404, false, "unknown endpoint"},
		{"gemini malformed JSON", "POST", gemStream("m"), `{"contents":`, 400, true, ""},
		{"gemini no contents", "POST", gemWhole("m"), `{"contents":[]}`, 400, true, ""},
		{"gemini empty parts", "POST", gemWhole("m"), `{"contents":[{"role":"user","parts":[]}]}`, 400, true, ""},
		{"gemini unknown method", "POST", "/v1beta/models/m:countTokens", gemReq, 404, true, ""},
		{"gemini wrong method", "GET", gemWhole("m"), "", 405, true, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := e.s.Streams()
			a := e.do(t.Context(), tc.method, tc.path, tc.body)
			if tc.gemini {
				checkGeminiError(t, a, tc.status, map[int]string{400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 405: "UNIMPLEMENTED"}[tc.status])
			} else {
				checkOpenAIError(t, a, tc.status, "invalid_request_error", tc.contains)
			}
			if tc.status == 405 && a.header.Get("Allow") == "" {
				t.Fatal("405 without Allow")
			}
			if e.s.Streams() != before {
				t.Fatal("a rejected request left a stream open")
			}
		})
	}
}

func TestModels(t *testing.T) {
	e := newEnv(t, Options{})
	a := e.do(t.Context(), http.MethodGet, "/v1/models", "")
	var l struct {
		Object string
		Data   []struct{ ID, Object string }
	}
	if err := json.Unmarshal([]byte(a.body), &l); err != nil || a.status != 200 || l.Object != "list" || len(l.Data) == 0 || l.Data[0].ID != "mock" {
		t.Fatalf("%d %q %v", a.status, a.body, err)
	}
}

// TestHandlerWithRecorder: New works as a plain http.Handler, without a server.
func TestHandlerWithRecorder(t *testing.T) {
	h := New(Options{Chunks: 3})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/v1/chat/completions", strings.NewReader(oaReq("m", true, false, "Hi"))))
	s := parseOA(t, rec.Body.String())
	if rec.Code != 200 || !rec.Flushed || strings.Join(s.deltas, "") != strings.Join(Answer("Hi", 3), "") || !s.done {
		t.Fatalf("%d flushed %v %q", rec.Code, rec.Flushed, rec.Body.String())
	}
	if h.Requests() != 1 || h.Streams() != 0 {
		t.Fatalf("requests %d streams %d", h.Requests(), h.Streams())
	}
}

// BenchmarkStream is one 20-chunk streamed answer through the handler.
func BenchmarkStream(b *testing.B) {
	h := New(Options{})
	body := oaReq("mock", true, true, "Hello there")
	w := &discard{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", strings.NewReader(body))
		clear(w.h)
		h.ServeHTTP(w, req)
	}
}

// BenchmarkStreamGemini is the same for the Gemini dialect.
func BenchmarkStreamGemini(b *testing.B) {
	h := New(Options{})
	w := &discard{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest(http.MethodPost, gemStream("mock"), strings.NewReader(gemReq))
		clear(w.h)
		h.ServeHTTP(w, req)
	}
}

func TestTooLargeBody(t *testing.T) {
	h := New(Options{})
	for _, known := range []bool{true, false} {
		body := `{"messages":[{"role":"user","content":"` + strings.Repeat("a", maxBody) + `"}]}`
		req := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", strings.NewReader(body))
		if !known {
			req.ContentLength = -1 // chunked: the limit must hold while reading
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		var o openAIError
		if err := json.Unmarshal(rec.Body.Bytes(), &o); err != nil || rec.Code != http.StatusRequestEntityTooLarge || !strings.Contains(o.Error.Message, "8 MiB") {
			t.Fatalf("length known %v: %d %q", known, rec.Code, rec.Body.String())
		}
	}
}

// TestLongAnswersAreNotCached: the answer cache keeps usual answers, not long ones,
// so clients asking for chunks=100000 cannot make the mock hold gigabytes.
func TestLongAnswersAreNotCached(t *testing.T) {
	var c answerCache
	rq := req{model: "m", lastUser: "Hi"}
	c.get(openAI{}, &rq, 20, false)
	c.get(openAI{}, &rq, maxCachedChunks+1, false)
	if len(c.m) != 1 {
		t.Fatalf("%d answers cached, want only the 20-chunk one", len(c.m))
	}
}
