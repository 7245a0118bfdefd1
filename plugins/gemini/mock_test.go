package gemini

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ralf-gateway/ralf/core/config"
	"github.com/ralf-gateway/ralf/core/llm"
	"github.com/ralf-gateway/ralf/core/mock"
)

// TestAgainstMock talks to ralf's built-in mock upstream (the one `ralf demo` and the
// benchmarks use) in the Gemini dialect; directives ride on the model name.
func TestAgainstMock(t *testing.T) {
	srv, err := mock.Start(mock.Options{FixtureDir: fixtureDir(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	const said = "what is ralf"
	answer := mock.Answer(said, 20)
	cases := []struct {
		name, model string
		stream      bool
		text        string
		reasoning   bool
		check       func(t *testing.T, err error)
	}{
		{name: "stream", model: "mock", stream: true, text: strings.Join(answer, "")},
		{name: "non-stream", model: "mock", text: strings.Join(answer, "")},
		{name: "reasoning stays apart", model: "mock+reasoning", stream: true, text: strings.Join(answer, ""), reasoning: true},
		{name: "429 with retry-after", model: "mock+status=429+retry_after=2", stream: true, check: func(t *testing.T, err error) {
			var ue *llm.UpstreamError
			if !errors.As(err, &ue) || ue.Status != 429 || ue.RetryAfter != 2*time.Second {
				t.Errorf("error = %v", err)
			}
		}},
		{name: "cut connection", model: "mock+cut=5", stream: true, text: strings.Join(answer[:5], ""), check: func(t *testing.T, err error) {
			if err == nil {
				t.Error("a cut stream looked complete")
			}
		}},
		{name: "malformed event", model: "mock+malformed", stream: true, text: answer[0], check: func(t *testing.T, err error) {
			if !errors.Is(err, errMalformed) {
				t.Errorf("error = %v", err)
			}
		}},
		{name: "error event", model: "mock+error_event=3", stream: true, text: strings.Join(answer[:3], ""), check: func(t *testing.T, err error) {
			var ue *llm.UpstreamError
			if !errors.As(err, &ue) {
				t.Errorf("error = %v", err)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := newProvider(t, func(c *config.Provider) { c.BaseURL = srv.URL() + "/v1beta"; c.Model = tc.model })
			st, err := p.ChatStream(context.Background(), &llm.ChatRequest{Stream: tc.stream,
				Messages: []llm.Message{{Role: "system", Content: "be kind"}, {Role: "user", Content: said}}})
			var r result
			if err == nil {
				r = collect(t, st)
				err = r.err
			}
			if tc.check != nil {
				tc.check(t, err)
			} else if err != nil {
				t.Fatal(err)
			}
			if r.text != tc.text {
				t.Errorf("text %q, want %q", r.text, tc.text)
			}
			if (r.reasoning != "") != tc.reasoning {
				t.Errorf("reasoning %q", r.reasoning)
			}
			if tc.check == nil && (r.finish != "stop" || r.usages != 1 || r.usage.TotalTokens == 0) {
				t.Errorf("finish %q usage %+v in %d chunks", r.finish, r.usage, r.usages)
			}
		})
	}
}
