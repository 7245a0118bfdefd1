package gateway_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// BenchmarkEndToEnd streams 20-chunk answers from the mock through the gateway over
// loopback, one request per iteration (client, gateway and mock in one process, so
// allocs/op counts all three). Compare with BenchmarkDirect for the mock alone.
//
//	go test -run '^$' -bench 'EndToEnd|Direct' -benchmem ./core/gateway/
func BenchmarkEndToEnd(b *testing.B) {
	e := newEnv(b, `
providers:
  - {name: oai, dialect: openai, base_url: "{{MOCK}}/v1", model: mock}
  - {name: gem, dialect: gemini, base_url: "{{MOCK}}/v1beta", model: mock}
store: memory://
log: {level: error}
`)
	cases := []struct{ name, path, body, accept string }{
		{"chat-sse-openai", "/chat", `{"provider":"oai","messages":[{"role":"user","content":"Hello"}]}`, ""},
		{"chat-text-openai", "/chat", `{"provider":"oai","messages":[{"role":"user","content":"Hello"}]}`, "text/plain"},
		{"chat-sse-gemini", "/chat", `{"provider":"gem","messages":[{"role":"user","content":"Hello"}]}`, ""},
		{"v1-stream-openai", "/v1/chat/completions", `{"model":"oai","stream":true,"messages":[{"role":"user","content":"Hello"}]}`, ""},
		{"v1-stream-gemini", "/v1/chat/completions", `{"model":"gem","stream":true,"messages":[{"role":"user","content":"Hello"}]}`, ""},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			run(b, e.srv.URL+tc.path, tc.body, tc.accept)
		})
	}
}

// BenchmarkDirect is the same client against the mock alone: the baseline.
func BenchmarkDirect(b *testing.B) {
	e := newEnv(b, `
providers:
  - {name: oai, base_url: "{{MOCK}}/v1", model: mock}
store: memory://
`)
	run(b, e.mock.URL()+"/v1/chat/completions", `{"model":"mock","stream":true,"messages":[{"role":"user","content":"Hello"}]}`, "")
}

func run(b *testing.B, url, body, accept string) {
	client := &http.Client{}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		res, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, res.Body); err != nil {
			b.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 200 {
			b.Fatalf("status %d", res.StatusCode)
		}
	}
	b.StopTimer()
	client.CloseIdleConnections()
}
