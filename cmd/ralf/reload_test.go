package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/ralf-gateway/ralf/core/mock"
)

// live is an in-process `ralf serve` on a watched temp config file.
type live struct {
	t    *testing.T
	path string
	url  string
	mock *mock.Server
	stop func()
}

func startLive(t *testing.T, yaml string) *live {
	t.Helper()
	mk, err := mock.Start(mock.Options{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	l := &live{t: t, path: filepath.Join(dir, "gateway.yaml"), mock: mk}
	l.write(yaml)
	cfg, err := loadConfig(l.path)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Server.Listen = "127.0.0.1:0"
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, l.path, io.Discard, func(a string) { ready <- a }) }()
	select {
	case a := <-ready:
		l.url = "http://" + a
	case err := <-done:
		t.Fatal(err)
	}
	l.stop = func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
		mk.Close()
		http.DefaultClient.CloseIdleConnections()
	}
	return l
}

// write replaces the file the way most editors save: write a temp file, rename it over.
func (l *live) write(yaml string) {
	l.t.Helper()
	yaml = strings.ReplaceAll(yaml, "{{MOCK}}", func() string {
		if l.mock == nil {
			return ""
		}
		return l.mock.URL()
	}())
	tmp := l.path + ".tmp"
	if err := os.WriteFile(tmp, []byte(yaml), 0o644); err != nil {
		l.t.Fatal(err)
	}
	if err := os.Rename(tmp, l.path); err != nil {
		l.t.Fatal(err)
	}
}

type health struct {
	Status    string   `json:"status"`
	Services  []string `json:"services"`
	Providers []struct {
		Name, State string
	} `json:"providers"`
	Config struct {
		Generation int64  `json:"generation"`
		LastError  string `json:"lastError"`
	} `json:"config"`
}

func (l *live) health() health {
	l.t.Helper()
	res, err := http.Get(l.url + "/health")
	if err != nil {
		l.t.Fatal(err)
	}
	defer res.Body.Close()
	var h health
	if err := json.NewDecoder(res.Body).Decode(&h); err != nil {
		l.t.Fatal(err)
	}
	return h
}

func (l *live) waitHealth(what string, cond func(health) bool) health {
	l.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		h := l.health()
		if cond(h) {
			return h
		}
		if time.Now().After(deadline) {
			l.t.Fatalf("timed out waiting for %s; health %+v", what, h)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// chat streams one answer and returns the provider and the text.
func (l *live) chat(ctx context.Context, pin string) (string, string, error) {
	body := `{"messages":[{"role":"user","content":"Hello"}]}`
	if pin != "" {
		body = `{"provider":"` + pin + `","messages":[{"role":"user","content":"Hello"}]}`
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, l.url+"/chat", strings.NewReader(body))
	req.Header.Set("Accept", "text/plain")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", "", err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return "", "", err
	}
	if res.StatusCode != 200 {
		return "", "", fmt.Errorf("status %d: %s", res.StatusCode, b)
	}
	return res.Header.Get("X-Provider"), string(b), nil
}

func providersYAML(names ...string) string {
	var b strings.Builder
	b.WriteString("server: {listen: \"127.0.0.1:0\"}\nlog: {level: error}\nstore: memory://\nlimits: {rate: {enabled: false}}\nproviders:\n")
	for _, n := range names {
		b.WriteString(fmt.Sprintf("  - {name: %s, base_url: \"{{MOCK}}/v1\", model: \"mock+chunks=5\"}\n", n))
	}
	return b.String()
}

func TestReloadAddsRemovesAndKeepsServing(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	l := startLive(t, providersYAML("a", "b"))
	defer l.stop()
	want := strings.Join(mock.Answer("Hello", 5), "")

	// Add a provider: live for new requests without a restart.
	l.write(providersYAML("a", "b", "c"))
	l.waitHealth("provider c added", func(h health) bool { return len(h.Services) == 3 })
	if p, text, err := l.chat(context.Background(), "c"); err != nil || p != "c" || text != want {
		t.Fatalf("new provider: %q %q %v", p, text, err)
	}

	// An in-flight stream finishes on the provider it started with, even once removed.
	l.write(strings.Replace(providersYAML("a", "c"), "providers:\n", "providers:\n  - {name: slow, base_url: \"{{MOCK}}/v1\", model: \"mock+chunks=8+slow=100ms\"}\n", 1))
	l.waitHealth("slow provider", func(h health) bool { return len(h.Services) == 3 && h.Services[0] == "slow" })
	type out struct {
		p, text string
		err     error
	}
	res := make(chan out, 1)
	go func() {
		p, text, err := l.chat(context.Background(), "slow")
		res <- out{p, text, err}
	}()
	time.Sleep(250 * time.Millisecond) // the stream is under way
	l.write(providersYAML("a"))
	l.waitHealth("slow removed", func(h health) bool { return len(h.Services) == 1 })
	r := <-res
	if r.err != nil || r.p != "slow" || r.text != strings.Join(mock.Answer("Hello", 8), "") {
		t.Fatalf("in-flight stream across a reload: %+v", r)
	}

	// A broken file changes nothing; the error shows in /health; the next good save clears it.
	gen := l.health().Config.Generation
	l.write(providersYAML("a") + "  - {name: b, dialect: klingon, base_url: \"{{MOCK}}/v1\", model: m}\n")
	h := l.waitHealth("lastError", func(h health) bool { return h.Config.LastError != "" })
	if !strings.Contains(h.Config.LastError, "providers[1].dialect") || h.Config.Generation != gen || len(h.Services) != 1 {
		t.Fatalf("broken file: %+v", h)
	}
	if _, text, err := l.chat(context.Background(), ""); err != nil || text != want {
		t.Fatalf("old config stopped serving: %v", err)
	}
	l.write("providers: [")
	l.waitHealth("YAML error", func(h health) bool { return strings.Contains(h.Config.LastError, "yaml") })
	l.write(providersYAML("a", "b"))
	h = l.waitHealth("recovered", func(h health) bool { return len(h.Services) == 2 })
	if h.Config.LastError != "" || h.Config.Generation <= gen {
		t.Fatalf("good save after a bad one: %+v", h)
	}
}

func TestReloadKeepsHealthAndRingPosition(t *testing.T) {
	l := startLive(t, `
server: {listen: "127.0.0.1:0"}
log: {level: error}
store: memory://
limits: {rate: {enabled: false}}
routing: {failure_threshold: 1, cooldown: 60s, max_attempts: 3}
providers:
  - {name: broken, base_url: "{{MOCK}}/v1", model: "mock+status=500"}
  - {name: a, base_url: "{{MOCK}}/v1", model: mock}
  - {name: b, base_url: "{{MOCK}}/v1", model: mock}
  - {name: c, base_url: "{{MOCK}}/v1", model: mock}
`)
	defer l.stop()
	ctx := context.Background()
	if p, _, err := l.chat(ctx, ""); err != nil || p != "a" {
		t.Fatalf("first request: %q %v", p, err)
	}
	l.waitHealth("broken cooling", func(h health) bool { return h.Status == "degraded" })
	p1, _, _ := l.chat(ctx, "")
	// Reload with one unrelated change (c's model): broken keeps its cooldown, and the
	// ring goes on from where it was instead of restarting at the first provider.
	gen := l.health().Config.Generation
	l.write(`
server: {listen: "127.0.0.1:0"}
log: {level: error}
store: memory://
limits: {rate: {enabled: false}}
routing: {failure_threshold: 1, cooldown: 60s, max_attempts: 3}
providers:
  - {name: broken, base_url: "{{MOCK}}/v1", model: "mock+status=500"}
  - {name: a, base_url: "{{MOCK}}/v1", model: mock}
  - {name: b, base_url: "{{MOCK}}/v1", model: mock}
  - {name: c, base_url: "{{MOCK}}/v1", model: "mock+chunks=3"}
`)
	h := l.waitHealth("reloaded", func(h health) bool { return h.Config.Generation > gen })
	if h.Providers[0].State != "cooldown" {
		t.Fatalf("the unchanged provider lost its cooldown: %+v", h.Providers)
	}
	p2, _, _ := l.chat(ctx, "")
	order := map[string]string{"a": "b", "b": "c", "c": "a"}
	if p1 == "" || p2 != order[p1] {
		t.Fatalf("ring restarted after reload: %q then %q", p1, p2)
	}
}

// TestReloadUnderLoad: 32 streaming clients while the file is rewritten 60 times
// (every third write invalid): every request completes with the full answer.
func TestReloadUnderLoad(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	// Each write must be a reload of its own, not coalesced by the debounce.
	reloadDebounce = 15 * time.Millisecond
	defer func() { reloadDebounce = 0 }()
	l := startLive(t, providersYAML("a", "b"))
	want := strings.Join(mock.Answer("Hello", 5), "")
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < 32; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				_, text, err := l.chat(ctx, "")
				cancel()
				if err == nil && text != want {
					err = fmt.Errorf("incomplete answer %q", text)
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				} else {
					ok.Add(1)
				}
			}
		}()
	}
	sets := [][]string{{"a", "b"}, {"a", "b", "c"}, {"b", "c"}, {"c", "d", "a"}}
	for i := 0; i < 60; i++ {
		switch {
		case i%3 == 2:
			l.write(providersYAML("a") + "  - {name: bad, dialect: nope, base_url: x, model: m}\n")
		default:
			l.write(providersYAML(sets[i%len(sets)]...) + fmt.Sprintf("cors: {allowed_origins: [\"https://x%d.example\"]}\n", i))
		}
		time.Sleep(40 * time.Millisecond)
	}
	l.write(providersYAML("a", "b"))
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d of %d requests failed during reloads; first: %v", failed.Load(), ok.Load()+failed.Load(), firstErr.Load())
	}
	if ok.Load() < 100 {
		t.Fatalf("only %d requests completed", ok.Load())
	}
	if g := l.health().Config.Generation; g < 20 {
		t.Fatalf("generation %d: the file changes were not applied", g)
	}
	l.stop()
}

// TestReloadAuthLimitsCORSAndPools: auth keys, limits and CORS change live; an
// unchanged provider keeps its upstream connection pool.
func TestReloadAuthLimitsCORSAndPools(t *testing.T) {
	base := providersYAML("a")
	l := startLive(t, base)
	defer l.stop()
	do := func(key, origin string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, l.url+"/chat", strings.NewReader(`{"messages":[{"role":"user","content":"Hello"}]}`))
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		// After a clean answer the gateway reads the upstream body's last bytes in the
		// background, then pools the connection: a request sent at once may find the
		// pool empty and open a second one, which is not the loss this test is after.
		time.Sleep(100 * time.Millisecond)
		return res
	}
	if res := do("", ""); res.StatusCode != 200 {
		t.Fatalf("auth off: %d", res.StatusCode)
	}
	conns := l.mock.OpenConns()

	gen := l.health().Config.Generation
	l.write(base + "auth: {enabled: true, keys: [client-key-1]}\ncors: {allowed_origins: [\"https://app.example\"]}\n")
	l.waitHealth("auth on", func(h health) bool { return h.Config.Generation > gen })
	if res := do("", ""); res.StatusCode != 401 {
		t.Fatalf("auth turned on by a reload: no key got %d", res.StatusCode)
	}
	res := do("client-key-1", "https://app.example")
	if res.StatusCode != 200 || res.Header.Get("Access-Control-Allow-Origin") != "https://app.example" {
		t.Fatalf("new static key / CORS origin: %d %q", res.StatusCode, res.Header.Get("Access-Control-Allow-Origin"))
	}
	if got := do("client-key-1", "https://other.example").Header.Get("Access-Control-Allow-Origin"); got != "" {
		t.Fatalf("origin outside the new list allowed: %q", got)
	}
	if n := l.mock.OpenConns(); n != conns {
		t.Fatalf("upstream connections %d → %d: the unchanged provider lost its pool", conns, n)
	}

	gen = l.health().Config.Generation
	l.write(strings.Replace(base, "limits: {rate: {enabled: false}}", "limits: {rate: {enabled: true, requests: 2, window: 1m}}", 1))
	l.waitHealth("limit on", func(h health) bool { return h.Config.Generation > gen })
	codes := []int{do("", "").StatusCode, do("", "").StatusCode, do("", "").StatusCode}
	if codes[0] != 200 || codes[1] != 200 || codes[2] != 429 {
		t.Fatalf("rate limit set by a reload: %v, want [200 200 429]", codes)
	}
}

// TestLargeHeadersAreRefused: a request whose headers exceed 64 KiB gets 431 before any
// work, and the server keeps serving.
func TestLargeHeadersAreRefused(t *testing.T) {
	l := startLive(t, providersYAML("a"))
	defer l.stop()
	req, _ := http.NewRequest("GET", l.url+"/health", nil)
	req.Header.Set("X-Big", strings.Repeat("a", 80<<10))
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("80 KiB of headers: %d, want 431", res.StatusCode)
	}
	req.Header.Set("X-Big", strings.Repeat("a", 32<<10))
	if res, err = http.DefaultClient.Do(req); err != nil || res.StatusCode != 200 {
		t.Fatalf("32 KiB of headers: %v %v, want 200", res, err)
	}
	res.Body.Close()
}
