package openai

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"go.uber.org/goleak"

	"github.com/ralf-gateway/ralf/core/config"
	"github.com/ralf-gateway/ralf/core/fixtures"
	"github.com/ralf-gateway/ralf/core/llm"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testKey is the provider key used in tests; no error or output may contain it.
const testKey = "sk-test-SECRET-0123456789"

// fixtureDir is the recorded upstream answers, ../shared/fixtures/upstream.
func fixtureDir(t testing.TB) string {
	t.Helper()
	return fixtures.Upstream(t)
}

func fixture(t testing.TB, name string) []byte {
	t.Helper()
	return fixtures.Read(t, "upstream/"+name)
}

// fixtureHeaders parses a recorded .headers file: the status line, then "Key: value" lines.
func fixtureHeaders(t testing.TB, name string) (int, http.Header) {
	t.Helper()
	sc := bufio.NewScanner(bytes.NewReader(fixture(t, name)))
	if !sc.Scan() {
		t.Fatalf("%s: empty", name)
	}
	parts := strings.Fields(sc.Text())
	status, err := strconv.Atoi(parts[1])
	if err != nil {
		t.Fatalf("%s: status line %q", name, sc.Text())
	}
	h := http.Header{}
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		h.Add(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	return status, h
}

// recorded is what the fake upstream received.
type recorded struct {
	Path   string
	Header http.Header
	Body   []byte
}

// upstream is an httptest server that records requests and answers with handle.
type upstream struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []recorded
}

func newUpstream(t testing.TB, handle http.HandlerFunc) *upstream {
	return newUpstreamWith(t, handle, nil)
}

// newUpstreamWith lets a test set up the http.Server (e.g. ConnState) before it starts.
func newUpstreamWith(t testing.TB, handle http.HandlerFunc, setup func(*http.Server)) *upstream {
	t.Helper()
	u := &upstream{}
	u.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		u.mu.Lock()
		u.reqs = append(u.reqs, recorded{Path: r.URL.Path, Header: r.Header.Clone(), Body: b})
		u.mu.Unlock()
		handle(w, r)
	}))
	if setup != nil {
		setup(u.Config)
	}
	u.Start()
	t.Cleanup(u.Close)
	return u
}

func (u *upstream) last(t testing.TB) recorded {
	t.Helper()
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.reqs) == 0 {
		t.Fatal("upstream received no request")
	}
	return u.reqs[len(u.reqs)-1]
}

// replay answers with body, flushed event by event so the client really streams.
func replay(status int, h http.Header, body []byte) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		for k, v := range h {
			if k == "Content-Length" {
				continue
			}
			w.Header()[k] = v
		}
		if w.Header().Get("Content-Type") == "" {
			w.Header().Set("Content-Type", "text/event-stream")
		}
		w.WriteHeader(status)
		for _, part := range bytes.SplitAfter(body, []byte("\n\n")) {
			_, _ = w.Write(part)
			w.(http.Flusher).Flush()
		}
	}
}

func sseBody(t testing.TB, name string) http.HandlerFunc {
	return replay(200, http.Header{"Content-Type": {"text/event-stream; charset=utf-8"}}, fixture(t, name))
}

// newTestProvider builds a provider for base with its own transport, closed at cleanup.
func newTestProvider(t testing.TB, base string, mod func(*config.Provider)) *Provider {
	t.Helper()
	cfg := config.Provider{
		Name: "testprov", Dialect: "openai", BaseURL: base + "/v1", Model: "cfg-model",
		APIKey: testKey, Weight: 1, Timeout: 30 * time.Second, Enabled: true,
	}
	if mod != nil {
		mod(&cfg)
	}
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	p, err := New(cfg, llm.Deps{Client: &http.Client{Transport: tr}})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return p.(*Provider)
}

func userReq(stream bool) *llm.ChatRequest {
	return &llm.ChatRequest{Stream: stream, Messages: []llm.Message{{Role: "user", Content: "hi"}}}
}

// result is everything a client of the stream observed.
type result struct {
	Text, Reasoning string
	Finishes        []string
	Usage           *llm.Usage
	Chunks          int
	Empty           int // chunks that carried nothing (must stay 0)
	Err             error
}

// collect reads st to its end; the bound only guards against a stream that never ends.
func collect(t testing.TB, st llm.Stream) result {
	t.Helper()
	var r result
	for i := 0; i < 1_000_000; i++ {
		c, err := st.Recv()
		if err != nil {
			if err != io.EOF {
				r.Err = err
			}
			if c2, err2 := st.Recv(); err2 == nil || (err != io.EOF && err2.Error() != err.Error()) || c2.Text != nil {
				t.Errorf("Recv after the end: chunk %+v err %v, want the same end %v", c2, err2, err)
			}
			_ = st.Close()
			return r
		}
		r.Chunks++
		r.Text += string(c.Text)
		r.Reasoning += string(c.Reasoning)
		if c.FinishReason != "" {
			r.Finishes = append(r.Finishes, c.FinishReason)
		}
		if c.Usage != nil {
			u := *c.Usage
			r.Usage = &u
		}
		if len(c.Text) == 0 && len(c.Reasoning) == 0 && c.FinishReason == "" && c.Usage == nil {
			r.Empty++
		}
	}
	t.Fatal("stream did not end")
	return r
}

// refDecode is an independent reading of an SSE fixture with encoding/json, used to
// check long reasoning texts without copying them into the test.
func refDecode(t testing.TB, body []byte) (text, reasoning string) {
	t.Helper()
	for _, line := range strings.Split(string(body), "\n") {
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok || data == "[DONE]" {
			continue
		}
		var v struct {
			Choices []struct {
				Delta map[string]json.RawMessage `json:"delta"`
			} `json:"choices"`
		}
		if err := json.Unmarshal([]byte(data), &v); err != nil {
			t.Fatalf("reference decode: %v", err)
		}
		if len(v.Choices) == 0 {
			continue
		}
		var s string
		if json.Unmarshal(v.Choices[0].Delta["content"], &s) == nil {
			text += s
		}
		for _, k := range []string{"reasoning", "reasoning_content"} {
			s = ""
			if json.Unmarshal(v.Choices[0].Delta[k], &s) == nil {
				reasoning += s
			}
		}
	}
	return text, reasoning
}

func asUpstream(t testing.TB, err error) *llm.UpstreamError {
	t.Helper()
	var ue *llm.UpstreamError
	if !errors.As(err, &ue) {
		t.Fatalf("error %v (%T) is not an *llm.UpstreamError", err, err)
	}
	return ue
}

// waitDone waits for ch to close, failing after a generous deadlock guard.
func waitDone(t testing.TB, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

func utf8Valid(s string) bool { return utf8.ValidString(s) }
