package openai

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/ralf-gateway/ralf/core/config"
	"github.com/ralf-gateway/ralf/core/llm"
	"github.com/ralf-gateway/ralf/core/mock"
)

// startMock runs ralf's built-in mock upstream, the one `ralf demo` and the
// benchmarks talk to.
func startMock(t testing.TB) *mock.Server {
	t.Helper()
	srv, err := mock.Start(mock.Options{FixtureDir: fixtureDir(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return srv
}

func TestAgainstMock(t *testing.T) {
	const said = "what is ralf"
	answer := strings.Join(mock.Answer(said, 20), "")
	srv := startMock(t)
	tests := []struct {
		name      string
		model     string // mock directives ride on the model name
		stream    bool
		text      string
		reasoning bool
		check     func(t *testing.T, err error)
	}{
		{name: "stream", model: "mock", stream: true, text: answer},
		{name: "non-stream", model: "mock", text: answer},
		{name: "reasoning stays apart", model: "mock+reasoning", stream: true, text: answer, reasoning: true},
		{name: "429 with retry-after", model: "mock+status=429+retry_after=2", stream: true, check: func(t *testing.T, err error) {
			if ue := asUpstream(t, err); ue.Status != 429 || ue.RetryAfter != 2*time.Second {
				t.Errorf("error = %+v", ue)
			}
		}},
		{name: "cut connection", model: "mock+cut=5", stream: true, text: strings.Join(mock.Answer(said, 20)[:5], ""), check: func(t *testing.T, err error) {
			if err == nil {
				t.Error("a cut stream looked complete")
			}
		}},
		{name: "malformed chunk", model: "mock+malformed", stream: true, text: mock.Answer(said, 20)[0], check: func(t *testing.T, err error) {
			if !errors.Is(err, errMalformed) {
				t.Errorf("error = %v", err)
			}
		}},
		{name: "groq-style error event", model: "mock+error_event=3", stream: true, text: strings.Join(mock.Answer(said, 20)[:3], ""), check: func(t *testing.T, err error) { asUpstream(t, err) }},
		{name: "openrouter-style error chunk", model: "mock+error_chunk=3", stream: true, text: strings.Join(mock.Answer(said, 20)[:3], ""), check: func(t *testing.T, err error) { asUpstream(t, err) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := newTestProvider(t, srv.URL(), func(c *config.Provider) { c.Model = tc.model })
			req := &llm.ChatRequest{Stream: tc.stream, Messages: []llm.Message{{Role: "user", Content: said}}}
			st, err := p.ChatStream(context.Background(), req)
			var got result
			if err == nil {
				got = collect(t, st)
				err = got.Err
			}
			if tc.check != nil {
				tc.check(t, err)
			} else if err != nil {
				t.Fatalf("error: %v", err)
			}
			if got.Text != tc.text {
				t.Errorf("text = %q, want %q", got.Text, tc.text)
			}
			if tc.reasoning != (got.Reasoning != "") || strings.Contains(got.Text, "Thinking") {
				t.Errorf("reasoning = %q (text %q)", got.Reasoning, got.Text)
			}
			if tc.check == nil && (got.Usage == nil || got.Usage.CompletionTokens != 20 || len(got.Finishes) != 1) {
				t.Errorf("usage %+v finishes %q", got.Usage, got.Finishes)
			}
		})
	}
}

// BenchmarkChatStreamMock is one whole 20-chunk streamed request against the mock
// over loopback HTTP (the mock's own cost included).
func BenchmarkChatStreamMock(b *testing.B) {
	srv := startMock(b)
	p := newTestProvider(b, srv.URL(), func(c *config.Provider) { c.Model = "mock" })
	req := &llm.ChatRequest{Stream: true, Messages: []llm.Message{{Role: "user", Content: "hello"}}}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		st, err := p.ChatStream(context.Background(), req)
		if err != nil {
			b.Fatal(err)
		}
		for {
			if _, err := st.Recv(); err != nil {
				if err != io.EOF {
					b.Fatal(err)
				}
				break
			}
		}
		st.Close()
	}
}
