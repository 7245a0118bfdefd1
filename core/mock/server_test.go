package mock

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// streamUntil starts a request and reads its body until it holds want events
// (separated by sep); it returns what was read and the cancel that ends the request.
func (e *env) streamUntil(path, body, sep string, want int, hdr ...string) (string, context.CancelFunc, chan struct{}) {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, e.s.URL()+path, strings.NewReader(body))
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := e.client.Do(req)
	if err != nil {
		cancel()
		e.t.Fatal(err)
	}
	got := make(chan string, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer res.Body.Close()
		br := bufio.NewReader(res.Body)
		var sb strings.Builder
		sent := false
		for {
			if !sent && strings.Count(sb.String(), sep) == want {
				got <- sb.String()
				sent = true
			}
			b, err := br.ReadByte()
			if err != nil {
				break
			}
			sb.WriteByte(b)
		}
		if !sent {
			got <- sb.String()
		}
	}()
	select {
	case s := <-got:
		return s, cancel, done
	case <-time.After(guard):
		cancel()
		e.t.Fatal("stream never reached the expected events")
	}
	return "", cancel, done
}

// TestWaitsEndWhenClientLeaves: hang, hang_after, delay and slow hold the answer, and
// end the moment the client goes away, so no handler outlives its client.
func TestWaitsEndWhenClientLeaves(t *testing.T) {
	e := newEnv(t, Options{})
	cases := []struct {
		name, path, body, directive, sep string
		events                           int // what the client sees before the stall (-1: no answer at all)
	}{
		{"hang", "/v1/chat/completions", oaReq("m", true, false, "Hi"), "hang", "", -1},
		{"delay", "/v1/chat/completions", oaReq("m", true, false, "Hi"), "delay=1h", "", -1},
		{"gemini hang", gemStream("m"), gemReq, "hang", "", -1},
		{"hang non-stream", "/v1/chat/completions", oaReq("m", false, false, "Hi"), "hang", "", -1},
		{"hang_after", "/v1/chat/completions", oaReq("m", true, false, "Hi"), "hang_after=2", "\n\n", 3},
		{"slow", "/v1/chat/completions", oaReq("m", true, false, "Hi"), "slow=1h", "\n\n", 2},
		{"gemini hang_after", gemStream("m"), gemReq, "hang_after=2", "\r\n\r\n", 2},
		{"gemini slow", gemStream("m"), gemReq, "slow=1h", "\r\n\r\n", 1},
		{"gemini hang_after=0 sends the headers", gemStream("m"), gemReq, "hang_after=0", "\r\n\r\n", 0},
		{"hang_after non-stream sends the headers", "/v1/chat/completions", oaReq("m", false, false, "Hi"), "hang_after=1", "\n", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.events < 0 {
				ctx, cancel := context.WithCancel(context.Background())
				res := make(chan answer, 1)
				go func() { res <- e.do(ctx, http.MethodPost, tc.path, tc.body, "X-Mock", tc.directive) }()
				waitFor(t, "handler running", func() bool { return e.s.Streams() == 1 })
				select {
				case a := <-res:
					t.Fatalf("answered %d %q while it should hold", a.status, a.body)
				case <-time.After(50 * time.Millisecond):
				}
				cancel()
				if a := <-res; !errors.Is(a.err, context.Canceled) {
					t.Fatalf("client got %v", a.err)
				}
			} else {
				got, cancel, done := e.streamUntil(tc.path, tc.body, tc.sep, tc.events, "X-Mock", tc.directive)
				if strings.Count(got, tc.sep) != tc.events {
					t.Fatalf("got %q, want %d events", got, tc.events)
				}
				if e.s.Streams() != 1 {
					t.Fatalf("%d streams open mid-answer", e.s.Streams())
				}
				cancel()
				<-done
			}
			waitFor(t, "handler ended after the client left", func() bool { return e.s.Streams() == 0 })
		})
	}
}

func TestOpenConnsDropAfterClientsClose(t *testing.T) {
	e := newEnv(t, Options{})
	const n = 3
	ctx, cancel := context.WithCancel(context.Background())
	res := make(chan answer, n)
	for range n {
		go func() { res <- e.do(ctx, http.MethodPost, "/v1/chat/completions", oaReq("m+hang", true, false, "Hi")) }()
	}
	waitFor(t, "3 connections open", func() bool { return e.s.OpenConns() == n && e.s.Streams() == n })
	cancel()
	for range n {
		<-res
	}
	waitFor(t, "connections closed", func() bool { return e.s.OpenConns() == 0 && e.s.Streams() == 0 })

	// A finished keep-alive request holds its connection until the client drops it.
	if a := e.post("/v1/chat/completions", oaReq("m", false, false, "Hi")); a.status != 200 {
		t.Fatalf("status %d", a.status)
	}
	if e.s.OpenConns() != 1 {
		t.Fatalf("%d open connections, want the idle keep-alive one", e.s.OpenConns())
	}
	e.client.CloseIdleConnections()
	waitFor(t, "idle connection closed", func() bool { return e.s.OpenConns() == 0 })
}

func TestLastRequestAndCounters(t *testing.T) {
	e := newEnv(t, Options{})
	body := oaReq("m", true, false, "Hi")
	req, _ := http.NewRequest(http.MethodPost, e.s.URL()+"/v1/chat/completions?trace=1", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer test-key")
	req.Header.Set("X-Mock", "chunks=1")
	res, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	r := e.s.LastRequest()
	if r.Method != "POST" || r.Path != "/v1/chat/completions" || r.Query != "trace=1" ||
		r.Header.Get("Authorization") != "Bearer test-key" || string(r.Body) != body {
		t.Fatalf("recorded %+v", r)
	}
	r.Header.Set("Authorization", "changed")
	r.Body[0] = 'X'
	if again := e.s.LastRequest(); again.Header.Get("Authorization") != "Bearer test-key" || again.Body[0] != '{' {
		t.Fatal("LastRequest hands out the recorder's own maps")
	}
	e.do(t.Context(), http.MethodGet, "/v1/models", "")
	if e.s.Requests() != 2 || e.s.LastRequest().Path != "/v1/models" {
		t.Fatalf("requests %d last %q", e.s.Requests(), e.s.LastRequest().Path)
	}
	e.post(gemWhole("m"), gemReq, "x-goog-api-key", "g-key")
	if r := e.s.LastRequest(); e.s.Requests() != 3 || r.Header.Get("X-Goog-Api-Key") != "g-key" || !strings.HasSuffix(r.Path, ":generateContent") {
		t.Fatalf("requests %d last %+v", e.s.Requests(), r)
	}
}

// TestCloseEndsEverything: Close returns with handlers held by hang, and they are done.
func TestCloseEndsEverything(t *testing.T) {
	s, err := Start(Options{})
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	errc := make(chan error, 2)
	for _, model := range []string{"m+hang", "m+hang_after=1"} {
		go func() {
			res, err := client.Post(s.URL()+"/v1/chat/completions", "application/json", strings.NewReader(oaReq(model, true, false, "Hi")))
			if err == nil {
				_, err = bufio.NewReader(res.Body).ReadString(0)
				res.Body.Close()
			}
			errc <- err
		}()
	}
	waitFor(t, "both handlers running", func() bool { return s.Streams() == 2 })
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("close: %v", err)
		}
	case <-time.After(guard):
		t.Fatal("Close did not return")
	}
	if s.Streams() != 0 {
		t.Fatalf("%d handlers still running after Close", s.Streams())
	}
	for range 2 {
		if err := <-errc; err == nil {
			t.Fatal("a client saw a complete answer from a closed mock")
		}
	}
	if _, err := client.Get(s.URL() + "/v1/models"); err == nil {
		t.Fatal("the mock still accepts requests after Close")
	}
}

func TestShutdown(t *testing.T) {
	t.Run("lets answers finish", func(t *testing.T) {
		s, err := Start(Options{})
		if err != nil {
			t.Fatal(err)
		}
		tr := &http.Transport{}
		defer tr.CloseIdleConnections()
		got := make(chan string, 1)
		go func() {
			res, err := (&http.Client{Transport: tr}).Post(s.URL()+"/v1/chat/completions", "application/json",
				strings.NewReader(oaReq("m+chunks=5+slow=20ms", true, false, "Hi")))
			if err != nil {
				got <- err.Error()
				return
			}
			b, _ := bufio.NewReader(res.Body).ReadString(0)
			res.Body.Close()
			got <- b
		}()
		waitFor(t, "stream running", func() bool { return s.Streams() == 1 })
		ctx, cancel := context.WithTimeout(context.Background(), guard)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Fatalf("shutdown: %v", err)
		}
		if b := <-got; !strings.HasSuffix(b, "data: [DONE]\n\n") {
			t.Fatalf("answer cut by a graceful shutdown: %q", b)
		}
	})
	t.Run("cuts what outlives its context", func(t *testing.T) {
		s, err := Start(Options{})
		if err != nil {
			t.Fatal(err)
		}
		tr := &http.Transport{}
		defer tr.CloseIdleConnections()
		done := make(chan struct{})
		go func() {
			defer close(done)
			if res, err := (&http.Client{Transport: tr}).Post(s.URL()+"/v1/chat/completions", "application/json", strings.NewReader(oaReq("m+hang", true, false, "Hi"))); err == nil {
				res.Body.Close()
			}
		}()
		waitFor(t, "handler running", func() bool { return s.Streams() == 1 })
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		if err := s.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("shutdown: %v", err)
		}
		if s.Streams() != 0 {
			t.Fatal("a handler outlived Shutdown")
		}
		<-done
	})
}

func TestRun(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Run(ctx, "127.0.0.1:0", nil); err != nil {
		t.Fatalf("run: %v", err)
	}
	if err := Run(context.Background(), "127.0.0.1:notaport", nil); err == nil || !strings.Contains(err.Error(), "listen") {
		t.Fatalf("run on a bad address: %v", err)
	}
}

// TestListenServes: Listen on a given address answers there.
func TestListenServes(t *testing.T) {
	s, err := Listen("127.0.0.1:0", Options{Chunks: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	if !strings.HasPrefix(s.URL(), "http://127.0.0.1:") || s.URL() != "http://"+s.Addr() {
		t.Fatalf("URL %q Addr %q", s.URL(), s.Addr())
	}
	res, err := (&http.Client{Transport: tr}).Post(s.URL()+"/v1/chat/completions", "application/json", strings.NewReader(oaReq("m", false, false, "Hi")))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 || s.Requests() != 1 {
		t.Fatalf("status %d requests %d", res.StatusCode, s.Requests())
	}
}

// TestTLS: with Options.TLS the mock serves HTTPS (HTTP/1.1) with SelfSigned's
// certificate, which a client trusts from its PEM and a client without it refuses.
func TestTLS(t *testing.T) {
	cfg, certPEM, err := SelfSigned()
	if err != nil {
		t.Fatal(err)
	}
	s, err := Start(Options{TLS: cfg})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !strings.HasPrefix(s.URL(), "https://127.0.0.1:") {
		t.Fatalf("URL %s", s.URL())
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(certPEM) {
		t.Fatal("the PEM holds no certificate")
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}
	defer tr.CloseIdleConnections()
	body := `{"model":"mock","stream":true,"messages":[{"role":"user","content":"hi"}]}`
	res, err := (&http.Client{Transport: tr}).Post(s.URL()+"/v1/chat/completions", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || res.TLS == nil || res.Proto != "HTTP/1.1" || !strings.HasSuffix(string(b), "data: [DONE]\n\n") {
		t.Fatalf("%d %s tls=%v: %q", res.StatusCode, res.Proto, res.TLS != nil, b)
	}
	untrusting := &http.Transport{}
	defer untrusting.CloseIdleConnections()
	_, err = (&http.Client{Transport: untrusting}).Get(s.URL() + "/v1/models")
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		t.Fatalf("a client that does not trust the certificate: %v", err)
	}
}
