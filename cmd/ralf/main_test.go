package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ralf-gateway/ralf/core/config"
	"github.com/ralf-gateway/ralf/core/fixtures"
	"github.com/ralf-gateway/ralf/core/mock"
)

// TestMain lets tests run this binary as the real ralf process (RALF_RUN_MAIN=1).
func TestMain(m *testing.M) {
	if os.Getenv("RALF_RUN_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func fakeEnv(k string) (string, bool) {
	if strings.HasSuffix(k, "_API_KEY") || k == "HF_TOKEN" || k == "MASTER_API_KEY" {
		return "test-value-" + k, true
	}
	return "", false
}

// TestShippedConfigsLoad: gateway.yaml and every example in configs/ are valid, with
// and without provider keys in the environment.
func TestShippedConfigsLoad(t *testing.T) {
	root := fixtures.Root(t)
	files, _ := filepath.Glob(filepath.Join(root, "configs", "*.yaml"))
	files = append(files, filepath.Join(root, "gateway.yaml"))
	if len(files) < 4 {
		t.Fatalf("expected gateway.yaml and at least 3 examples in configs/, found %v", files)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			for _, getenv := range []func(string) (string, bool){fakeEnv, func(string) (string, bool) { return "", false }} {
				opts := loadOptions()
				opts.Getenv = getenv
				cfg, err := config.Load(f, opts)
				if err != nil {
					t.Fatalf("%s: %v", f, err)
				}
				if len(cfg.Providers) == 0 {
					t.Fatal("no providers")
				}
			}
		})
	}
	// The shipped gateway.yaml declares the five seed providers, each enabled by its key.
	opts := loadOptions()
	opts.Getenv = fakeEnv
	cfg, err := config.Load(filepath.Join(root, "gateway.yaml"), opts)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range cfg.Providers {
		if p.Enabled {
			names = append(names, p.Name)
		}
	}
	if strings.Join(names, ",") != "groq,cerebras,openrouter,gemini,huggingface" {
		t.Fatalf("enabled providers %v", names)
	}
	opts.Getenv = func(k string) (string, bool) {
		if k == "GEMINI_API_KEY" {
			return "x", true
		}
		return "", false
	}
	cfg, err = config.Load(filepath.Join(root, "gateway.yaml"), opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range cfg.Providers {
		if p.Enabled != (p.Name == "gemini") {
			t.Fatalf("with only GEMINI_API_KEY set, %s enabled=%v", p.Name, p.Enabled)
		}
	}
}

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte("providers:\n  - {name: local, base_url: \"http://127.0.0.1:8000/v1\", model: m}\nstore: memory://\n"), 0o644)
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte(`providers:
  - {name: a, base_url: "http://127.0.0.1:8000/v1", model: m}
  - {name: a, base_url: "not a url", model: m, dialect: klingon}
routing: {cooldown: 3x}
`), 0o644)
	var out, errb bytes.Buffer
	if err := run(context.Background(), []string{"check", "--config", good}, &out, &errb); err != nil {
		t.Fatalf("good file: %v %s", err, errb.String())
	}
	if !strings.Contains(out.String(), "ok") {
		t.Fatalf("output %q", out.String())
	}
	out.Reset()
	errb.Reset()
	err := run(context.Background(), []string{"check", "--config", bad}, &out, &errb)
	if ee, ok := err.(exitError); !ok || ee != 1 {
		t.Fatalf("bad file: err %v, want exit status 1", err)
	}
	for _, want := range []string{"providers[1].name", "providers[1].base_url", "providers[1].dialect", "routing.cooldown"} {
		if !strings.Contains(errb.String(), want) {
			t.Errorf("check output lacks %q:\n%s", want, errb.String())
		}
	}
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// proc is a real ralf process started from the test binary.
type proc struct {
	cmd  *exec.Cmd
	logs *lockedBuffer
	url  string
	done chan error
}

// lockedBuffer is a bytes.Buffer safe for a writer goroutine and a reader.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func startRalf(t *testing.T, dir string, env []string, args ...string) *proc {
	t.Helper()
	port := freePort(t)
	cmd := exec.Command(os.Args[0], args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), append([]string{"RALF_RUN_MAIN=1", fmt.Sprintf("PORT=%d", port)}, env...)...)
	logs := &lockedBuffer{}
	pr, pw := io.Pipe()
	cmd.Stderr = pw
	cmd.Stdout = pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, logs: logs, url: fmt.Sprintf("http://127.0.0.1:%d", port), done: make(chan error, 1)}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		once := false
		for sc.Scan() {
			logs.Write([]byte(sc.Text() + "\n"))
			if !once && strings.Contains(sc.Text(), "ralf listening") {
				once = true
				close(ready)
			}
		}
	}()
	go func() { p.done <- cmd.Wait(); pw.Close() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-p.done
		}
	})
	select {
	case <-ready:
	case err := <-p.done:
		t.Fatalf("ralf exited before listening: %v\n%s", err, logs.String())
	case <-time.After(20 * time.Second):
		t.Fatalf("ralf did not start:\n%s", logs.String())
	}
	return p
}

// startStream starts ralf with one provider of this mock model and the shutdown
// timeout, and a /chat stream through it; it returns once the first line is read.
func startStream(t *testing.T, mockURL, model, shutdownTimeout string) (p *proc, br *bufio.Reader, first string) {
	t.Helper()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "gateway.yaml"), []byte(`
server: {listen: "127.0.0.1:3000", shutdown_timeout: `+shutdownTimeout+`}
providers:
  - {name: slow, base_url: "`+mockURL+`/v1", model: "`+model+`"}
store: memory://
`), 0o644)
	p = startRalf(t, dir, nil)
	res, err := http.Post(p.url+"/chat", "application/json", strings.NewReader(`{"messages":[{"role":"user","content":"Hello"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { res.Body.Close() })
	br = bufio.NewReader(res.Body)
	if first, err = br.ReadString('\n'); err != nil || !strings.HasPrefix(first, "data: ") {
		t.Fatalf("first line %q %v", first, err)
	}
	return p, br, first
}

// TestGracefulShutdown: SIGTERM stops accepting, lets the in-flight stream finish,
// then the process exits 0.
func TestGracefulShutdown(t *testing.T) {
	mk, err := mock.Start(mock.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer mk.Close()
	p, br, first := startStream(t, mk.URL(), "mock+chunks=10+slow=150ms", "20s")
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// New connections are refused soon after the signal.
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", strings.TrimPrefix(p.url, "http://"), time.Second)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("still accepting connections after SIGTERM")
		}
		time.Sleep(50 * time.Millisecond)
	}
	rest, err := io.ReadAll(br)
	if err != nil {
		t.Fatalf("in-flight stream broken by shutdown: %v", err)
	}
	var got strings.Builder
	for _, line := range strings.Split(first+string(rest), "\n") {
		if strings.HasPrefix(line, "data: ") {
			got.WriteString(strings.TrimPrefix(line, "data: "))
		}
	}
	if want := strings.Join(mock.Answer("Hello", 10), ""); got.String() != want {
		t.Fatalf("stream after SIGTERM: %q, want the full answer %q", got.String(), want)
	}
	select {
	case err := <-p.done:
		if err != nil {
			t.Fatalf("exit: %v\n%s", err, p.logs.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("did not exit after the stream finished")
	}
}

// TestDemo: `ralf demo` answers /chat with no provider key.
// TestShutdownTimeoutAndSecondSignal: a stream longer than shutdown_timeout, or one
// still running when a second signal comes, ends with an error event saying the
// gateway is shutting down, and the process exits 0 soon after.
func TestShutdownTimeoutAndSecondSignal(t *testing.T) {
	mk, err := mock.Start(mock.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer mk.Close()
	for _, c := range []struct {
		name, timeout string
		signals       int
	}{{"timeout", "1s", 1}, {"second signal", "60s", 2}} {
		t.Run(c.name, func(t *testing.T) {
			p, br, _ := startStream(t, mk.URL(), "mock+chunks=200+slow=100ms", c.timeout)
			for i := 0; i < c.signals; i++ {
				if i > 0 {
					waitLog(t, p, "shutting down")
				}
				if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
					t.Fatal(err)
				}
			}
			rest, err := io.ReadAll(br)
			if err != nil {
				t.Fatalf("stream cut instead of ended with an error: %v", err)
			}
			want := "event: error\ndata: {\"error\":\"the gateway is shutting down\",\"status\":503}\n\n"
			if !strings.HasSuffix(string(rest), want) {
				t.Fatalf("stream ends with %q, want the shutdown error event", rest[max(0, len(rest)-120):])
			}
			select {
			case err := <-p.done:
				if err != nil {
					t.Fatalf("exit: %v\n%s", err, p.logs.String())
				}
			case <-time.After(10 * time.Second):
				t.Fatal("did not exit after the shutdown error")
			}
		})
	}
}

// waitLog waits for a log line of p containing s.
func waitLog(t *testing.T, p *proc, s string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(p.logs.String(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("no log line with %q:\n%s", s, p.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestDemo(t *testing.T) {
	port := freePort(t)
	t.Setenv("PORT", fmt.Sprint(port))
	t.Setenv("REQUIRE_AUTH", "true") // the demo ignores the environment but PORT
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	errb := &lockedBuffer{}
	go func() { done <- run(ctx, []string{"demo"}, io.Discard, errb) }()
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	var res *http.Response
	var err error
	for i := 0; i < 100; i++ {
		res, err = http.Post(url+"/chat", "application/x-www-form-urlencoded", strings.NewReader(`{"messages":[{"role":"user","content":"Hello"}]}`))
		if err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || !strings.Contains(string(body), "data: ") {
		t.Fatalf("demo /chat: %d %q", res.StatusCode, body)
	}
	hr, err := http.Get(url + "/health")
	if err != nil {
		t.Fatal(err)
	}
	var h struct{ Services []string }
	json.NewDecoder(hr.Body).Decode(&h)
	hr.Body.Close()
	if len(h.Services) != 2 {
		t.Fatalf("demo services %v", h.Services)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("demo did not stop")
	}
}

func TestVersion(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"version"}, &out, io.Discard); err != nil || !strings.HasPrefix(out.String(), "ralf ") {
		t.Fatalf("%v %q", err, out.String())
	}
	if err := run(context.Background(), []string{"frobnicate"}, io.Discard, io.Discard); err == nil {
		t.Fatal("unknown command accepted")
	}
}

// TestCheckRunsTheDialectsChecks: a file that ralf serve would refuse (a param only
// the dialect checks) fails ralf check too, with the same message.
func TestCheckRunsTheDialectsChecks(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("providers:\n  - {name: g, dialect: gemini, base_url: \"http://127.0.0.1:8000/v1beta\", model: m, params: {generationConfig: 5}}\nstore: memory://\n"), 0o644)
	var out, errb bytes.Buffer
	err := run(context.Background(), []string{"check", bad}, &out, &errb)
	if ee, ok := err.(exitError); !ok || ee != 1 {
		t.Fatalf("err %v, want exit status 1; stdout %q", err, out.String())
	}
	if !strings.Contains(errb.String(), "providers[0] (g)") || !strings.Contains(errb.String(), "generationConfig") {
		t.Fatalf("check output:\n%s", errb.String())
	}
	// Reported together with the file's other errors, not after they are fixed.
	both := filepath.Join(dir, "both.yaml")
	os.WriteFile(both, []byte("routing: {cooldown: 3x}\nproviders:\n  - {name: g, dialect: gemini, base_url: \"http://127.0.0.1:8000/v1beta\", model: m, params: {generationConfig: 5}}\n  - {name: x, base_url: \"ftp://h\", model: m}\nstore: memory://\n"), 0o644)
	errb.Reset()
	if err := run(context.Background(), []string{"check", both}, &out, &errb); err == nil ||
		!strings.Contains(errb.String(), "routing.cooldown") || !strings.Contains(errb.String(), "generationConfig") || !strings.Contains(errb.String(), "providers[1].base_url") {
		t.Fatalf("check with several errors: %v\n%s", err, errb.String())
	}
	if strings.Count(errb.String(), "providers[1]") != 1 {
		t.Fatalf("a provider with a settings error is not built on top of it:\n%s", errb.String())
	}
	// A disabled provider is not built, as when serving.
	off := filepath.Join(dir, "off.yaml")
	os.WriteFile(off, []byte("providers:\n  - {name: ok, base_url: \"http://127.0.0.1:8000/v1\", model: m}\n  - {name: g, enabled: false, dialect: gemini, base_url: \"http://127.0.0.1:8000/v1beta\", model: m, params: {generationConfig: 5}}\nstore: memory://\n"), 0o644)
	out.Reset()
	errb.Reset()
	if err := run(context.Background(), []string{"check", off}, &out, &errb); err != nil {
		t.Fatalf("disabled provider: %v %s", err, errb.String())
	}
}

// TestArguments: the config file may be given as the one argument; more arguments,
// or both forms at once, are refused rather than ignored; --version and --help work
// in first place.
func TestArguments(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte("providers:\n  - {name: local, base_url: \"http://127.0.0.1:8000/v1\", model: m}\nstore: memory://\n"), 0o644)
	for _, c := range []struct {
		args       []string
		code       int
		out, inErr string
	}{
		{[]string{"check", good}, 0, good + ": ok", ""},
		{[]string{"check", filepath.Join(dir, "missing.yaml")}, 1, "", "missing.yaml"},
		{[]string{"check", good, "extra"}, 2, "", "unexpected arguments after " + good + ": extra"},
		{[]string{"check", "--config", good, good}, 2, "", "not both"},
		{[]string{"serve", good, "x"}, 2, "", "unexpected arguments"},
		{[]string{"mock", "x"}, 2, "", "unexpected arguments: x"},
		{[]string{"--version"}, 0, "ralf ", ""},
		{[]string{"-v"}, 0, "ralf ", ""},
		{[]string{"--help"}, 0, "Usage:", ""},
		{[]string{"-h"}, 0, "Usage:", ""},
		{[]string{"version", "extra"}, 2, "", "takes no arguments"},
		{[]string{"help", "extra"}, 2, "", "takes no arguments"},
	} {
		var out, errb bytes.Buffer
		err := run(context.Background(), c.args, &out, &errb)
		code := 0
		if ee, ok := err.(exitError); ok {
			code = int(ee)
		} else if err != nil {
			code = -1
		}
		if code != c.code || !strings.Contains(out.String(), c.out) || !strings.Contains(errb.String(), c.inErr) {
			t.Errorf("ralf %q: exit %d (err %v), stdout %q, stderr %q; want exit %d, stdout with %q, stderr with %q",
				c.args, code, err, out.String(), errb.String(), c.code, c.out, c.inErr)
		}
	}
}

// TestConsoleLogsHaveNoColourCodesInAFile: log.format console writes plain level
// names where the output is not a terminal (a file, a pipe, a log shipper).
func TestConsoleLogsHaveNoColourCodesInAFile(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	log, _, stop, err := buildLogger(config.Log{Level: "info", Format: "console"}, f, false)
	if err != nil {
		t.Fatal(err)
	}
	log.Info("hello")
	stop()
	b, _ := os.ReadFile(f.Name())
	if !strings.Contains(string(b), "INFO") || strings.Contains(string(b), "\x1b[") {
		t.Fatalf("console log line %q: want INFO with no colour codes", b)
	}
}
