package gemini

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/ralf-gateway/ralf/core/config"
	"github.com/ralf-gateway/ralf/core/fixtures"
	"github.com/ralf-gateway/ralf/core/llm"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testKey is the provider key used in tests; no error, URL or output may contain it.
const testKey = "AIzaSyTESTSECRET-0123456789abcdef"

// fixtureDir is the recorded upstream answers, ../shared/fixtures/upstream.
func fixtureDir(t testing.TB) string {
	t.Helper()
	return fixtures.Upstream(t)
}

func fixture(t testing.TB, name string) []byte {
	t.Helper()
	return fixtures.Read(t, "upstream/"+name)
}

// fixtureHeaders reads a recorded status line + headers file.
func fixtureHeaders(t testing.TB, name string) (int, http.Header) {
	t.Helper()
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(append(fixture(t, name), "\r\n"...))), nil)
	if err != nil {
		t.Fatalf("fixture %s: %v", name, err)
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header
}

// seen is what the fake upstream received.
type seen struct {
	mu     sync.Mutex
	method string
	path   string // escaped path as sent
	query  string
	header http.Header
	raw    []byte
}

func (s *seen) get() seen {
	s.mu.Lock()
	defer s.mu.Unlock()
	return seen{method: s.method, path: s.path, query: s.query, header: s.header, raw: s.raw}
}

// upstream answers every request with status, headers and body, recording the request.
func upstream(t testing.TB, status int, hdr http.Header, body []byte) (*httptest.Server, *seen) {
	t.Helper()
	s := &seen{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		s.method, s.path, s.query, s.header, s.raw = r.Method, r.URL.EscapedPath(), r.URL.RawQuery, r.Header.Clone(), raw
		s.mu.Unlock()
		for k, v := range hdr {
			w.Header()[k] = v
		}
		w.WriteHeader(status)
		w.Write(body)
	}))
	t.Cleanup(srv.Close)
	return srv, s
}

// client is an HTTP client whose idle connections are closed when the test ends, so
// goleak sees no leftover connection goroutines.
func client(t testing.TB) *http.Client {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func newProvider(t testing.TB, mod func(*config.Provider)) llm.Provider {
	t.Helper()
	cfg := config.Provider{Name: "gem", Dialect: "gemini", BaseURL: "http://127.0.0.1:1/v1beta", Model: "gemini-x",
		APIKey: testKey, Timeout: 30 * time.Second}
	if mod != nil {
		mod(&cfg)
	}
	p, err := New(cfg, llm.Deps{Client: client(t)})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// providerAt is a provider for the server at base.
func providerAt(t testing.TB, base string, mod func(*config.Provider)) llm.Provider {
	t.Helper()
	return newProvider(t, func(c *config.Provider) {
		c.BaseURL = base + "/v1beta"
		if mod != nil {
			mod(c)
		}
	})
}

type result struct {
	text, reasoning, finish string
	usage                   *llm.Usage
	usages                  int // chunks that carried usage
	chunks                  int
	err                     error
}

// collect reads a stream to its end, copying what chunks alias.
func collect(t testing.TB, st llm.Stream) result {
	t.Helper()
	defer st.Close()
	var r result
	var text, reason strings.Builder
	for i := 0; ; i++ {
		if i > 100000 {
			t.Fatal("stream does not end")
		}
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
			r.usages++
		}
	}
	r.text, r.reasoning = text.String(), reason.String()
	return r
}

// reference decodes an SSE fixture with encoding/json: the answer text and the
// reasoning of candidate 0, as a second opinion on the hand-written scanner.
func reference(t testing.TB, body []byte) (text, reasoning string) {
	t.Helper()
	for _, ev := range strings.Split(strings.ReplaceAll(string(body), "\r\n", "\n"), "\n\n") {
		ev = strings.TrimSpace(ev)
		if ev == "" {
			continue
		}
		var d struct {
			Candidates []struct {
				Content struct {
					Parts []struct {
						Text    string `json:"text"`
						Thought bool   `json:"thought"`
					} `json:"parts"`
				} `json:"content"`
			} `json:"candidates"`
		}
		if err := json.Unmarshal([]byte(strings.TrimPrefix(ev, "data: ")), &d); err != nil {
			t.Fatalf("reference decode: %v", err)
		}
		for _, p := range d.Candidates[0].Content.Parts {
			if p.Thought {
				reasoning += p.Text
			} else {
				text += p.Text
			}
		}
	}
	return text, reasoning
}

var sseHeader = http.Header{"Content-Type": {"text/event-stream"}}

func hi(stream bool) *llm.ChatRequest {
	return &llm.ChatRequest{Stream: stream, Messages: []llm.Message{{Role: "user", Content: "hi"}}}
}

// noSecret fails when s contains the provider key.
func noSecret(t testing.TB, what, s string) {
	t.Helper()
	if strings.Contains(s, testKey) || strings.Contains(s, "AIzaSy") {
		t.Fatalf("%s leaks the key: %q", what, s)
	}
}
