package gemini

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ralf-gateway/ralf/core/config"
	"github.com/ralf-gateway/ralf/core/llm"
	"github.com/ralf-gateway/ralf/core/sse"
)

func fixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "..", "shared", "fixtures", "upstream", name))
	if err != nil {
		t.Fatalf("fixture %s: %v", name, err)
	}
	return b
}

type seen struct {
	path, query string
	header      http.Header
	body        map[string]any
}

// upstream answers every request with status and body, recording what it got.
func upstream(t testing.TB, status int, hdr map[string]string, body []byte) (*httptest.Server, *seen) {
	t.Helper()
	s := &seen{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.path, s.query, s.header = r.URL.Path, r.URL.RawQuery, r.Header.Clone()
		json.NewDecoder(r.Body).Decode(&s.body)
		for k, v := range hdr {
			w.Header().Set(k, v)
		}
		w.WriteHeader(status)
		w.Write(body)
	}))
	t.Cleanup(srv.Close)
	return srv, s
}

func provider(t testing.TB, base string, params map[string]any) llm.Provider {
	t.Helper()
	p, err := New(config.Provider{Name: "gem", Dialect: "gemini", BaseURL: base + "/v1beta", Model: "gemini-x",
		APIKey: "AIzaSECRETKEY1234567890", Timeout: 10 * time.Second, Params: params}, llm.Deps{Client: http.DefaultClient})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

type result struct {
	text, reasoning, finish string
	usage                   *llm.Usage
	chunks                  int
	err                     error
}

func collect(t testing.TB, st llm.Stream) result {
	t.Helper()
	defer st.Close()
	var r result
	var text, reason strings.Builder
	for {
		c, err := st.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			r.err = err
			break
		}
		r.chunks++
		text.Write(c.Text)
		reason.Write(c.Reasoning)
		if c.FinishReason != "" {
			r.finish = c.FinishReason
		}
		if c.Usage != nil {
			r.usage = c.Usage
		}
	}
	r.text, r.reasoning = text.String(), reason.String()
	return r
}

var hi = &llm.ChatRequest{Stream: true, Messages: []llm.Message{{Role: "user", Content: "hi"}}}

func TestReplayFixtures(t *testing.T) {
	cases := []struct {
		fixture, text string
		usage         llm.Usage
		reasoning     bool
	}{
		{"gemini_stream_basic.sse", "The capital of France is Paris.\n", llm.Usage{PromptTokens: 13, CompletionTokens: 8, TotalTokens: 21}, false},
		{"gemini_stream_single_event.sse", "Paris", llm.Usage{PromptTokens: 6, CompletionTokens: 36, TotalTokens: 42}, false},
		{"gemini_stream_thinking.sse", "", llm.Usage{PromptTokens: 34, CompletionTokens: 469 + 787, TotalTokens: 1290}, true},
		{"gemini_stream_usage_live.sse", "", llm.Usage{}, false},
	}
	for _, tc := range cases {
		t.Run(tc.fixture, func(t *testing.T) {
			srv, _ := upstream(t, 200, map[string]string{"Content-Type": "text/event-stream"}, fixture(t, tc.fixture))
			st, err := provider(t, srv.URL, nil).ChatStream(context.Background(), hi)
			if err != nil {
				t.Fatal(err)
			}
			r := collect(t, st)
			if r.err != nil || r.finish != "stop" {
				t.Fatalf("err %v finish %q", r.err, r.finish)
			}
			if tc.text != "" && r.text != tc.text {
				t.Fatalf("text %q, want %q", r.text, tc.text)
			}
			if r.text == "" {
				t.Fatal("no answer text")
			}
			if tc.usage != (llm.Usage{}) && (r.usage == nil || *r.usage != tc.usage) {
				t.Fatalf("usage %+v, want %+v", r.usage, tc.usage)
			}
			if tc.reasoning {
				if r.reasoning == "" || strings.Contains(r.text, "Clarifying User Goals") {
					t.Fatalf("thought parts must be reasoning, not text: text %q", r.text[:60])
				}
			}
		})
	}
}

func TestRequestShape(t *testing.T) {
	srv, got := upstream(t, 200, nil, fixture(t, "gemini_stream_basic.sse"))
	temp, max := 0.2, 77
	req := &llm.ChatRequest{Stream: true, Temperature: &temp, MaxTokens: &max, Stop: []string{"END"}, Messages: []llm.Message{
		{Role: "system", Content: "Be brief."}, {Role: "user", Content: "Q1"}, {Role: "assistant", Content: "A1"},
		{Role: "user", Content: "Q2"}, {Role: "user", Content: "Q2b"}}}
	st, err := provider(t, srv.URL, map[string]any{"temperature": 0.9, "thinkingConfig": map[string]any{"thinkingBudget": 0}}).ChatStream(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	collect(t, st)
	if got.path != "/v1beta/models/gemini-x:streamGenerateContent" || got.query != "alt=sse" {
		t.Fatalf("url %s?%s", got.path, got.query)
	}
	if strings.Contains(got.query, "key") || got.header.Get("x-goog-api-key") != "AIzaSECRETKEY1234567890" {
		t.Fatalf("the key must be in the x-goog-api-key header only: query %q", got.query)
	}
	b, _ := json.Marshal(got.body)
	for _, want := range []string{
		`"systemInstruction":{"parts":[{"text":"Be brief."}]}`,
		`"contents":[{"parts":[{"text":"Q1"}],"role":"user"},{"parts":[{"text":"A1"}],"role":"model"},{"parts":[{"text":"Q2"},{"text":"Q2b"}],"role":"user"}]`,
		`"temperature":0.2`, `"maxOutputTokens":77`, `"stopSequences":["END"]`, `"thinkingConfig":{"thinkingBudget":0}`,
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("body lacks %s:\n%s", want, b)
		}
	}
}

func TestNonStream(t *testing.T) {
	one := strings.TrimPrefix(strings.TrimSpace(string(fixture(t, "gemini_stream_single_event.sse"))), "data: ")
	srv, got := upstream(t, 200, nil, []byte(one))
	st, err := provider(t, srv.URL, nil).ChatStream(context.Background(), &llm.ChatRequest{Messages: hi.Messages})
	if err != nil {
		t.Fatal(err)
	}
	r := collect(t, st)
	if got.path != "/v1beta/models/gemini-x:generateContent" || r.text != "Paris" || r.chunks != 1 || r.usage == nil || r.usage.TotalTokens != 42 {
		t.Fatalf("path %s result %+v", got.path, r)
	}
}

func TestErrors(t *testing.T) {
	t.Run("403 fixture", func(t *testing.T) {
		srv, _ := upstream(t, 403, nil, fixture(t, "gemini_error_403.json"))
		_, err := provider(t, srv.URL, nil).ChatStream(context.Background(), hi)
		var ue *llm.UpstreamError
		if !errors.As(err, &ue) || ue.Status != 403 || !ue.Retryable() || ue.Message == "" {
			t.Fatalf("err %#v", err)
		}
		if strings.Contains(err.Error(), "AIzaSECRET") {
			t.Fatal("key in error")
		}
	})
	t.Run("429 retryDelay", func(t *testing.T) {
		body := `{"error":{"code":429,"message":"Quota exceeded for key AIzaSECRETKEY1234567890","status":"RESOURCE_EXHAUSTED",
			"details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"12s"}]}}`
		srv, _ := upstream(t, 429, nil, []byte(body))
		_, err := provider(t, srv.URL, nil).ChatStream(context.Background(), hi)
		var ue *llm.UpstreamError
		if !errors.As(err, &ue) || ue.RetryAfter != 12*time.Second || strings.Contains(ue.Message, "AIzaSECRET") {
			t.Fatalf("err %#v", err)
		}
	})
	t.Run("cut stream", func(t *testing.T) {
		b := fixture(t, "gemini_stream_basic.sse")
		first := b[:strings.Index(string(b), "\r\n\r\n")+4]
		srv, _ := upstream(t, 200, nil, first)
		st, _ := provider(t, srv.URL, nil).ChatStream(context.Background(), hi)
		if r := collect(t, st); !errors.Is(r.err, io.ErrUnexpectedEOF) || r.text != "The" {
			t.Fatalf("a stream cut between events must not look complete: %+v", r)
		}
		srv, _ = upstream(t, 200, nil, b[:len(b)/2])
		st, _ = provider(t, srv.URL, nil).ChatStream(context.Background(), hi)
		if r := collect(t, st); r.err == nil {
			t.Fatal("a stream cut inside an event must fail")
		}
	})
	t.Run("error event mid-stream", func(t *testing.T) {
		srv, _ := upstream(t, 200, nil, []byte("data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a\"}]}}]}\r\n\r\ndata: {\"error\":{\"code\":503,\"message\":\"overloaded\",\"status\":\"UNAVAILABLE\"}}\r\n\r\n"))
		st, _ := provider(t, srv.URL, nil).ChatStream(context.Background(), hi)
		r := collect(t, st)
		var ue *llm.UpstreamError
		if r.text != "a" || !errors.As(r.err, &ue) || ue.Status != 503 {
			t.Fatalf("%+v", r)
		}
	})
	t.Run("blocked prompt", func(t *testing.T) {
		srv, _ := upstream(t, 200, nil, []byte("data: {\"promptFeedback\":{\"blockReason\":\"SAFETY\"}}\r\n\r\n"))
		st, _ := provider(t, srv.URL, nil).ChatStream(context.Background(), hi)
		var ue *llm.UpstreamError
		if r := collect(t, st); !errors.As(r.err, &ue) || ue.Status != 400 {
			t.Fatalf("%+v", r)
		}
	})
}

func TestCancelReachesUpstream(t *testing.T) {
	gone := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a\"}]}}]}\r\n\r\n"))
		w.(http.Flusher).Flush()
		<-r.Context().Done()
		close(gone)
	}))
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	st, err := provider(t, srv.URL, nil).ChatStream(ctx, hi)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := st.Recv(); err != nil || string(c.Text) != "a" {
		t.Fatal(err)
	}
	cancel()
	select {
	case <-gone:
	case <-time.After(5 * time.Second):
		t.Fatal("upstream request not cancelled")
	}
	st.Close()
}

func FuzzStream(f *testing.F) {
	for _, n := range []string{"gemini_stream_basic.sse", "gemini_stream_single_event.sse", "gemini_stream_usage_live.sse"} {
		f.Add(fixture(f, n))
	}
	f.Add([]byte("data: {\"error\":{}}\r\n\r\n"))
	f.Fuzz(func(t *testing.T, body []byte) {
		s := &stream{p: &Provider{cfg: config.Provider{Name: "f"}}}
		s.rd = newReader(body)
		for i := 0; i < len(body)+2; i++ {
			if _, err := s.Recv(); err != nil {
				return
			}
		}
		t.Fatal("Recv did not terminate")
	})
}

func newReader(b []byte) *sse.Reader { return sse.NewReader(strings.NewReader(string(b)), 1<<16) }
