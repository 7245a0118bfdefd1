//go:build !race

// Allocation counts are only meaningful without the race detector (it changes
// sync.Pool and adds its own allocations); .ci/run runs these tests without -race too.

package gateway_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestNoAllocationsPerChunk: a 400-chunk stream costs (almost) no more allocations
// than a 20-chunk one, end to end through the gateway, for both dialects and all
// framings. Allocation counts are deterministic, unlike timings.
func TestNoAllocationsPerChunk(t *testing.T) {
	if testing.Short() {
		t.Skip("allocation counting")
	}
	e := newEnv(t, `
providers:
  - {name: oai20, dialect: openai, base_url: "{{MOCK}}/v1", model: "mock+chunks=20"}
  - {name: oai400, dialect: openai, base_url: "{{MOCK}}/v1", model: "mock+chunks=400"}
  - {name: gem20, dialect: gemini, base_url: "{{MOCK}}/v1beta", model: "mock+chunks=20"}
  - {name: gem400, dialect: gemini, base_url: "{{MOCK}}/v1beta", model: "mock+chunks=400"}
store: memory://
log: {level: error}
`)
	client := &http.Client{}
	defer client.CloseIdleConnections()
	allocs := func(path, body, accept string) float64 {
		return testing.AllocsPerRun(20, func() {
			req, _ := http.NewRequest(http.MethodPost, e.srv.URL+path, strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			if accept != "" {
				req.Header.Set("Accept", accept)
			}
			res, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
		})
	}
	for _, d := range []string{"oai", "gem"} {
		for _, tc := range []struct{ name, path, body, accept string }{
			{"chat-sse", "/chat", `{"provider":"%s","messages":[{"role":"user","content":"Hi"}]}`, ""},
			{"chat-text", "/chat", `{"provider":"%s","messages":[{"role":"user","content":"Hi"}]}`, "text/plain"},
			{"v1-stream", "/v1/chat/completions", `{"model":"%s","stream":true,"messages":[{"role":"user","content":"Hi"}]}`, ""},
		} {
			small := allocs(tc.path, strings.Replace(tc.body, "%s", d+"20", 1), tc.accept)
			large := allocs(tc.path, strings.Replace(tc.body, "%s", d+"400", 1), tc.accept)
			perChunk := (large - small) / 380
			t.Logf("%s %s: %.0f allocs for 20 chunks, %.0f for 400: %.3f per chunk", d, tc.name, small, large, perChunk)
			if perChunk > 0.25 {
				t.Errorf("%s %s: %.2f allocations per chunk (client, gateway and mock together), want ~0", d, tc.name, perChunk)
			}
		}
	}
}
