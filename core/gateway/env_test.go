package gateway_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/ralf-gateway/ralf/core/auth"
	"github.com/ralf-gateway/ralf/core/config"
	"github.com/ralf-gateway/ralf/core/fixtures"
	"github.com/ralf-gateway/ralf/core/gateway"
	"github.com/ralf-gateway/ralf/core/llm"
	"github.com/ralf-gateway/ralf/core/metrics"
	"github.com/ralf-gateway/ralf/core/mock"
	"github.com/ralf-gateway/ralf/core/store"
	_ "github.com/ralf-gateway/ralf/plugins/all"
)

// fixturesDir is ../shared/fixtures next to the repository.
func fixturesDir(t testing.TB) string {
	t.Helper()
	return fixtures.Dir(t)
}

func readFixture(t testing.TB, rel string) string {
	t.Helper()
	return string(fixtures.Read(t, rel))
}

// env is a gateway under test in front of the built-in mock upstream.
type env struct {
	t    testing.TB
	gw   *gateway.Gateway
	srv  *httptest.Server
	mock *mock.Server
	logs *observer.ObservedLogs
	st   store.Store
	keys *auth.Keys
	m    *metrics.Metrics
}

var noEnv = func(string) (string, bool) { return "", false }

func parseConfig(t testing.TB, yaml, mockURL string) *config.Config {
	t.Helper()
	yaml = strings.ReplaceAll(yaml, "{{MOCK}}", mockURL)
	cfg, err := config.Parse([]byte(yaml), config.Options{KnownDialect: llm.Known, KnownStore: store.Known, Getenv: noEnv})
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	if !strings.Contains(yaml, "rate:") {
		// The default 10 requests a minute would cut most tests short; tests of the
		// limiter configure it.
		cfg.Limits.Rate.Enabled = false
	}
	return cfg
}

// newEnv starts the mock upstream and a gateway configured by yaml, where {{MOCK}} is
// the mock's base URL (e.g. {{MOCK}}/v1).
func newEnv(t testing.TB, yaml string) *env {
	t.Helper()
	mk, err := mock.Start(mock.Options{FixtureDir: filepath.Join(fixturesDir(t), "upstream")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mk.Close() })
	cfg := parseConfig(t, yaml, mk.URL())
	core, logs := observer.New(zap.DebugLevel)
	log := zap.New(core)
	st, err := store.Open("memory://", log)
	if err != nil {
		t.Fatal(err)
	}
	keys := auth.NewKeys(st, log, auth.KeysOptions{})
	m := metrics.New()
	gw, err := gateway.New(cfg, gateway.Deps{Logger: log, Metrics: m, Store: st, Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gw)
	t.Cleanup(func() {
		srv.Close()
		gw.Close()
		keys.Close()
		st.Close()
	})
	return &env{t: t, gw: gw, srv: srv, mock: mk, logs: logs, st: st, keys: keys, m: m}
}

func (e *env) apply(yaml string) {
	e.t.Helper()
	if err := e.gw.Apply(parseConfig(e.t, yaml, e.mock.URL())); err != nil {
		e.t.Fatal(err)
	}
}

type resp struct {
	status int
	header http.Header
	body   string
}

func (e *env) do(method, path, body string, hdr ...string) resp {
	e.t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatalf("read body: %v", err)
	}
	return resp{res.StatusCode, res.Header, string(b)}
}

func (e *env) chat(body string, hdr ...string) resp {
	e.t.Helper()
	return e.do(http.MethodPost, "/chat", body, hdr...)
}

const hello = `{"messages":[{"role":"user","content":"Hello"}]}`

// sseEvents splits an SSE body into its events.
func sseEvents(body string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var cur []string
	for sc.Scan() {
		if sc.Text() == "" {
			if cur != nil {
				out = append(out, strings.Join(cur, "\n"))
			}
			cur = nil
			continue
		}
		cur = append(cur, sc.Text())
	}
	if cur != nil {
		out = append(out, strings.Join(cur, "\n"))
	}
	return out
}

// withoutEmptyEvents drops the seed's empty "data: " events, a quirk not to copy.
func withoutEmptyEvents(body string) string {
	parts := strings.Split(body, "\n\n")
	var b strings.Builder
	for _, p := range parts[:len(parts)-1] {
		if p != "data: " {
			b.WriteString(p + "\n\n")
		}
	}
	return b.String() + parts[len(parts)-1]
}

// fakeUpstream serves body as an OpenAI-style SSE answer to any request; it returns its
// base URL (use it as base_url).
func fakeUpstream(t testing.TB, body string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, body)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// healthView is the part of GET /health the tests look at.
type healthView struct {
	Status    string `json:"status"`
	Providers []struct {
		Name, State   string
		CooldownUntil *time.Time
	} `json:"providers"`
	raw string
}

// health fetches and decodes GET /health.
func (e *env) health() healthView {
	e.t.Helper()
	r := e.do("GET", "/health", "")
	var h healthView
	if err := json.Unmarshal([]byte(r.body), &h); err != nil {
		e.t.Fatalf("health %q: %v", r.body, err)
	}
	h.raw = r.body
	return h
}

// rawConn is a connection to the gateway for tests that speak HTTP/1.1 by hand (a
// client that stops reading, or sends half a body); it is closed with the test.
func (e *env) rawConn() net.Conn {
	e.t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(e.srv.URL, "http://"))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	return c
}

// postRaw writes a POST with a JSON body on c, with extra header lines ("Name: value").
func postRaw(c net.Conn, path, body string, headers ...string) {
	var h strings.Builder
	for _, l := range headers {
		h.WriteString(l + "\r\n")
	}
	fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n%sContent-Length: %d\r\n\r\n%s", path, h.String(), len(body), body)
}
