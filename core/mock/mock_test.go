package mock

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func post(t *testing.T, url, body string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res, string(b)
}

func start(t *testing.T) *Server {
	t.Helper()
	s, err := Start(Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(); http.DefaultClient.CloseIdleConnections() })
	return s
}

const oaBody = `{"model":"%s","stream":%s,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Hello there"}]}`

func oa(model, stream string) string {
	return strings.Replace(strings.Replace(oaBody, "%s", model, 1), "%s", stream, 1)
}

func TestAnswerIsExactlyNChunks(t *testing.T) {
	for _, n := range []int{1, 5, 20, 100} {
		a := Answer("Hi", n)
		if len(a) != n {
			t.Fatalf("%d chunks, want %d", len(a), n)
		}
		for _, c := range a {
			if c == "" {
				t.Fatal("empty chunk")
			}
		}
	}
}

func TestOpenAIStream(t *testing.T) {
	s := start(t)
	res, body := post(t, s.URL()+"/v1/chat/completions", oa("mock", "true"))
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("%d %s", res.StatusCode, res.Header.Get("Content-Type"))
	}
	var text strings.Builder
	usage := false
	for _, line := range strings.Split(body, "\n") {
		d, ok := strings.CutPrefix(line, "data: ")
		if !ok || d == "[DONE]" {
			continue
		}
		var c struct {
			Choices []struct {
				Delta struct{ Content string }
			}
			Usage *struct {
				TotalTokens int `json:"total_tokens"`
			}
		}
		if err := json.Unmarshal([]byte(d), &c); err != nil {
			t.Fatalf("%q: %v", d, err)
		}
		if len(c.Choices) > 0 {
			text.WriteString(c.Choices[0].Delta.Content)
		}
		usage = usage || (c.Usage != nil && c.Usage.TotalTokens > 0)
	}
	if text.String() != strings.Join(Answer("Hello there", 20), "") || !usage || !strings.HasSuffix(body, "data: [DONE]\n\n") {
		t.Fatalf("text %q usage %v body end %q", text.String(), usage, body[len(body)-20:])
	}
	if s.Requests() != 1 || !strings.Contains(string(s.LastRequest().Body), "Hello there") {
		t.Fatal("request not recorded")
	}
}

func TestGeminiStreamAndNonStream(t *testing.T) {
	s := start(t)
	body := `{"contents":[{"role":"user","parts":[{"text":"Hi"}]}]}`
	res, b := post(t, s.URL()+"/v1beta/models/mock+chunks=3:streamGenerateContent?alt=sse", body)
	if res.StatusCode != 200 || strings.Count(b, "\r\n\r\n") != 4 || !strings.Contains(b, `"finishReason": "STOP"`) {
		t.Fatalf("%d %q", res.StatusCode, b)
	}
	res, b = post(t, s.URL()+"/v1beta/models/mock:generateContent", body)
	var g struct {
		Candidates []struct {
			Content struct{ Parts []struct{ Text string } }
		}
	}
	if err := json.Unmarshal([]byte(b), &g); err != nil || g.Candidates[0].Content.Parts[0].Text != strings.Join(Answer("Hi", 20), "") {
		t.Fatalf("%d %q %v", res.StatusCode, b, err)
	}
}

func TestDirectives(t *testing.T) {
	s := start(t)
	cases := []struct {
		name, model, header string
		status              int
		check               func(t *testing.T, res *http.Response, body string)
	}{
		{"status", "mock+status=503", "", 503, nil},
		{"retry after", "mock+status=429+retry_after=7", "", 429, func(t *testing.T, res *http.Response, _ string) {
			if res.Header.Get("Retry-After") != "7" {
				t.Fatal("no Retry-After")
			}
		}},
		{"header wins", "mock", "status=418", 418, nil},
		{"unknown directive", "mock+frobnicate", "", 400, nil},
		{"chunks", "mock+chunks=3", "", 200, func(t *testing.T, _ *http.Response, body string) {
			if strings.Count(body, `"content":`) != 4 { // role chunk + 3
				t.Fatalf("%q", body)
			}
		}},
		{"error event", "mock+error_event=2", "", 200, func(t *testing.T, _ *http.Response, body string) {
			if !strings.Contains(body, "event: error") || strings.Contains(body, "[DONE]") {
				t.Fatalf("%q", body)
			}
		}},
		{"error chunk", "mock+error_chunk=2", "", 200, func(t *testing.T, _ *http.Response, body string) {
			if !strings.Contains(body, `data: {"error":{"code":502`) {
				t.Fatalf("%q", body)
			}
		}},
		{"malformed", "mock+malformed", "", 200, func(t *testing.T, _ *http.Response, body string) {
			if !strings.Contains(body, `"oops"`+"\n") {
				t.Fatalf("%q", body)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var hdr []string
			if tc.header != "" {
				hdr = []string{"X-Mock", tc.header}
			}
			res, body := post(t, s.URL()+"/v1/chat/completions", oa(tc.model, "true"), hdr...)
			if res.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", res.StatusCode, tc.status, body)
			}
			if tc.check != nil {
				tc.check(t, res, body)
			}
		})
	}
}

func TestCutClosesAbruptly(t *testing.T) {
	s := start(t)
	res, err := http.Post(s.URL()+"/v1/chat/completions", "application/json", strings.NewReader(oa("mock+cut=2", "true")))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	_, err = io.ReadAll(res.Body)
	if err == nil {
		t.Fatal("a cut stream must end with an error (unexpected EOF), not a clean end")
	}
}

func TestHangEndsWhenClientLeaves(t *testing.T) {
	s := start(t)
	for _, model := range []string{"mock+hang", "mock+hang_after=2", "mock+delay=1h", "mock+slow=1h"} {
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.URL()+"/v1/chat/completions", strings.NewReader(oa(model, "true")))
		go func() {
			time.Sleep(100 * time.Millisecond)
			cancel()
		}()
		if res, err := http.DefaultClient.Do(req); err == nil {
			bufio.NewReader(res.Body).ReadString(0)
			res.Body.Close()
		}
		deadline := time.Now().Add(5 * time.Second)
		for s.Streams() != 0 {
			if time.Now().After(deadline) {
				t.Fatalf("%s: handler still running after the client left", model)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	http.DefaultClient.CloseIdleConnections()
	deadline := time.Now().Add(5 * time.Second)
	for s.OpenConns() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections still open", s.OpenConns())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func BenchmarkStream(b *testing.B) {
	h := New(Options{})
	body := oa("mock", "true")
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		req, _ := http.NewRequest(http.MethodPost, "/v1/chat/completions", strings.NewReader(body))
		w := &discard{h: http.Header{}}
		h.ServeHTTP(w, req)
	}
}

type discard struct{ h http.Header }

func (d *discard) Header() http.Header         { return d.h }
func (d *discard) Write(b []byte) (int, error) { return len(b), nil }
func (d *discard) WriteHeader(int)             {}
func (d *discard) Flush()                      {}
