package mock

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/ralf-gateway/ralf/core/fixtures"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// guard bounds every wait in these tests: only a deadlock ever reaches it.
const guard = 10 * time.Second

// fixtureDir is ../shared/fixtures/upstream next to the repository root.
func fixtureDir(t testing.TB) string {
	t.Helper()
	return fixtures.Upstream(t)
}

// env is a running mock and a client of its own, both closed when the test ends.
type env struct {
	t      *testing.T
	s      *Server
	client *http.Client
}

func newEnv(t *testing.T, opts Options) *env {
	t.Helper()
	s, err := Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{}
	e := &env{t: t, s: s, client: &http.Client{Transport: tr, Timeout: guard}}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		if err := s.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return e
}

// answer is what a client got: status, headers, the body bytes read and the read error.
type answer struct {
	status int
	header http.Header
	body   string
	err    error
}

func (e *env) do(ctx context.Context, method, path, body string, hdr ...string) answer {
	e.t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, e.s.URL()+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	res, err := e.client.Do(req)
	if err != nil {
		return answer{err: err}
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return answer{status: res.StatusCode, header: res.Header, body: string(b), err: err}
}

func (e *env) post(path, body string, hdr ...string) answer {
	e.t.Helper()
	return e.do(context.Background(), http.MethodPost, path, body, hdr...)
}

// waitFor polls cond until it holds; the guard only catches a handler that never ends.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(guard)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// oaReq is an OpenAI chat request body.
func oaReq(model string, stream, usage bool, user string) string {
	s := `{"model":` + quote(model) + `,"messages":[{"role":"system","content":"Be brief"},{"role":"user","content":` + quote(user) + `}]`
	if stream {
		s += `,"stream":true`
	}
	if usage {
		s += `,"stream_options":{"include_usage":true}`
	}
	return s + "}"
}

const gemReq = `{"systemInstruction":{"parts":[{"text":"Be brief"}]},"contents":[{"role":"user","parts":[{"text":"Hi"}]}]}`

func gemStream(model string) string {
	return "/v1beta/models/" + model + ":streamGenerateContent?alt=sse"
}
func gemWhole(model string) string { return "/v1beta/models/" + model + ":generateContent" }

func quote(s string) string { return string(appendJSONString(nil, s)) }

// discard is a ResponseWriter that keeps nothing, for the benchmark.
type discard struct{ h http.Header }

func (d *discard) Header() http.Header         { return d.h }
func (d *discard) Write(b []byte) (int, error) { return len(b), nil }
func (d *discard) WriteHeader(int)             {}
func (d *discard) Flush()                      {}
