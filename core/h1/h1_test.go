package h1

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// server is an httptest server that counts the connections it accepts.
type server struct {
	*httptest.Server
	conns  atomic.Int64 // accepted
	closed atomic.Int64 // closed, by either side
}

func newServer(t testing.TB, h http.HandlerFunc, tlsOn bool) *server {
	t.Helper()
	s := &server{Server: httptest.NewUnstartedServer(h)}
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		switch st {
		case http.StateNew:
			s.conns.Add(1)
		case http.StateClosed, http.StateHijacked:
			s.closed.Add(1)
		}
	}
	s.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused certificate of TestDialErrors
	if tlsOn {
		s.EnableHTTP2 = true // offered; the transport must still speak HTTP/1.1
		s.StartTLS()
	} else {
		s.Start()
	}
	t.Cleanup(s.Close)
	return s
}

func newTransport(t testing.TB, s *server) *Transport {
	tr := &Transport{IdleConnTimeout: time.Minute, MaxIdleConnsPerHost: 64}
	if s != nil && s.TLS != nil {
		tr.TLSClientConfig = &tls.Config{RootCAs: s.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs}
	}
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

func post(t *testing.T, c *http.Client, u, body string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, u, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", u, err)
	}
	b, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return res, string(b)
}

// echo answers with the request's method, path, body and a header, in the framing
// the query asks for: chunked (flushed parts), length, or none.
func echo(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	w.Header().Set("X-Proto", r.Proto)
	msg := fmt.Sprintf("%s %s %s ua=%q", r.Method, r.URL.Path, b, r.UserAgent())
	switch r.URL.Query().Get("frame") {
	case "chunked":
		for _, part := range strings.SplitAfter(msg, " ") {
			io.WriteString(w, part)
			w.(http.Flusher).Flush()
		}
	case "empty":
		w.WriteHeader(http.StatusNoContent)
	default:
		w.Header().Set("Content-Length", fmt.Sprint(len(msg)))
		io.WriteString(w, msg)
	}
}

func TestRequestsShareOneConnection(t *testing.T) {
	for _, tlsOn := range []bool{false, true} {
		t.Run(fmt.Sprintf("tls=%v", tlsOn), func(t *testing.T) {
			s := newServer(t, echo, tlsOn)
			c := &http.Client{Transport: newTransport(t, s)}
			for i, frame := range []string{"length", "chunked", "empty", "length", "chunked"} {
				body := fmt.Sprintf(`{"n":%d}`, i)
				res, got := post(t, c, s.URL+"/v1/x?frame="+frame, body)
				if res.Proto != "HTTP/1.1" || res.Header.Get("X-Proto") != "HTTP/1.1" {
					t.Fatalf("protocol %s / %s, want HTTP/1.1", res.Proto, res.Header.Get("X-Proto"))
				}
				if frame == "empty" {
					if res.StatusCode != http.StatusNoContent || got != "" {
						t.Fatalf("status %d body %q", res.StatusCode, got)
					}
					continue
				}
				want := fmt.Sprintf(`POST /v1/x %s ua="Go-http-client/1.1"`, body)
				if got != want {
					t.Fatalf("frame %s: got %q, want %q", frame, got, want)
				}
			}
			if n := s.conns.Load(); n != 1 {
				t.Fatalf("%d connections for 5 sequential requests, want 1", n)
			}
		})
	}
}

func TestConcurrentRequests(t *testing.T) {
	s := newServer(t, echo, false)
	tr := newTransport(t, s)
	tr.MaxIdleConnsPerHost = 4
	c := &http.Client{Transport: tr}
	var wg sync.WaitGroup
	errs := make(chan error, 400)
	for g := 0; g < 20; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				body := fmt.Sprintf("g%d-%d", g, i)
				res, err := c.Post(s.URL+"/c?frame=chunked", "text/plain", strings.NewReader(body))
				if err != nil {
					errs <- err
					return
				}
				b, err := io.ReadAll(res.Body)
				res.Body.Close()
				if err != nil || !strings.Contains(string(b), " "+body+" ") {
					errs <- fmt.Errorf("answer %q, %v", b, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	tr.mu.Lock()
	idle := len(tr.pools["http://"+s.Listener.Addr().String()].idle)
	tr.mu.Unlock()
	if idle > 4 {
		t.Fatalf("%d idle connections kept, want at most MaxIdleConnsPerHost=4", idle)
	}
}

// A body closed before its end cannot leave its connection in the pool half read.
func TestEarlyCloseDropsTheConnection(t *testing.T) {
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/long" {
			io.WriteString(w, "first part ")
			w.(http.Flusher).Flush()
			<-r.Context().Done() // until the client goes
			return
		}
		echo(w, r)
	}, false)
	c := &http.Client{Transport: newTransport(t, s)}
	res, err := c.Post(s.URL+"/long", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(res.Body, buf); err != nil || string(buf) != "first" {
		t.Fatalf("read %q, %v", buf, err)
	}
	res.Body.Close()
	if _, err := res.Body.Read(buf); err == nil {
		t.Fatal("read after Close succeeded")
	}
	_, got := post(t, c, s.URL+"/next", "y")
	if !strings.HasPrefix(got, "POST /next y") {
		t.Fatalf("next answer %q", got)
	}
	if n := s.conns.Load(); n != 2 {
		t.Fatalf("%d connections, want 2 (the half-read one is not reused)", n)
	}
}

// Close from another goroutine wakes a Read blocked on a silent upstream.
func TestCloseUnblocksRead(t *testing.T) {
	release := make(chan struct{})
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "x")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}, false)
	defer close(release)
	c := &http.Client{Transport: newTransport(t, s)}
	res, err := c.Post(s.URL, "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := io.ReadAll(res.Body)
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	res.Body.Close()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("ReadAll ended without an error after Close")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Read still blocked 5s after Close")
	}
}

func TestCancellation(t *testing.T) {
	stalled := make(chan struct{})
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/body" {
			io.WriteString(w, "head")
			w.(http.Flusher).Flush()
		}
		select {
		case <-stalled:
		case <-r.Context().Done():
		}
	}, false)
	defer close(stalled)
	c := &http.Client{Transport: newTransport(t, s)}

	t.Run("waiting for the answer", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.URL+"/head", strings.NewReader("x"))
		_, err := c.Do(req)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err %v, want context.DeadlineExceeded", err)
		}
	})
	t.Run("reading the body", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.URL+"/body", strings.NewReader("x"))
		res, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		time.AfterFunc(20*time.Millisecond, cancel)
		b, err := io.ReadAll(res.Body)
		if string(b) != "head" || !errors.Is(err, context.Canceled) {
			t.Fatalf("read %q, %v; want \"head\" then context.Canceled", b, err)
		}
	})
	t.Run("already cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.URL+"/head", strings.NewReader("x"))
		if _, err := c.Do(req); !errors.Is(err, context.Canceled) {
			t.Fatalf("err %v, want context.Canceled", err)
		}
	})
}

// serverTLS is, for a raw server, the TLS config to serve with (nil for plain HTTP)
// and a Transport that trusts it.
func serverTLS(t *testing.T, tlsOn bool) (*tls.Config, *Transport) {
	if !tlsOn {
		return nil, newTransport(t, nil)
	}
	s := newServer(t, echo, true) // for its certificate
	return s.TLS, newTransport(t, s)
}

// rawServer accepts connections and runs fn on each, counting them.
func rawServer(t *testing.T, fn func(n int, c net.Conn)) (string, *atomic.Int64) {
	return rawServerWith(t, nil, 0, fn)
}

// rawServerWith is rawServer over TLS when cfg is set, with each connection's receive
// buffer set to rcvbuf bytes when it is not zero.
func rawServerWith(t *testing.T, cfg *tls.Config, rcvbuf int, fn func(n int, c net.Conn)) (string, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var count atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	var open []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range open { // a failed test may have left a client connection open
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if rcvbuf > 0 {
				c.(*net.TCPConn).SetReadBuffer(rcvbuf)
			}
			if cfg != nil {
				c = tls.Server(c, cfg)
			}
			mu.Lock()
			open = append(open, c)
			mu.Unlock()
			n := int(count.Add(1))
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				fn(n, c)
			}()
		}
	}()
	scheme := "http://"
	if cfg != nil {
		scheme = "https://"
	}
	return scheme + ln.Addr().String(), &count
}

// answer reads one request from br and writes a fixed answer.
func answer(br *bufio.Reader, c net.Conn, extra string) bool {
	req, err := http.ReadRequest(br)
	if err != nil {
		return false
	}
	b, _ := io.ReadAll(req.Body)
	msg := "got " + string(b)
	fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s", len(msg), extra, msg)
	return true
}

// An upstream ends a kept-alive connection while it sits in the pool, in the ways
// servers do. The next request, even one whose body could not be sent twice, goes
// out on a new connection: the pooled one is checked before anything is written.
func TestStaleConnectionIsReplaced(t *testing.T) {
	cases := []struct {
		name  string
		after func(c net.Conn) // what the upstream does once it has answered
	}{
		{"closed", func(net.Conn) {}},
		{"half-closed", func(c net.Conn) {
			c.(*net.TCPConn).CloseWrite() // FIN, but the socket stays open
			io.Copy(io.Discard, c)
		}},
		{"408 on the idle connection", func(c net.Conn) {
			io.WriteString(c, "HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n")
			io.Copy(io.Discard, c)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u, conns := rawServer(t, func(_ int, c net.Conn) {
				if answer(bufio.NewReader(c), c, "") {
					tc.after(c)
				}
			})
			c := &http.Client{Transport: newTransport(t, nil)}
			post(t, c, u, "first")
			time.Sleep(50 * time.Millisecond) // what the upstream did reaches us
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, u, io.NopCloser(strings.NewReader("once")))
			res, err := c.Do(req)
			if err != nil {
				t.Fatalf("request after the upstream ended the pooled connection: %v", err)
			}
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != 200 || string(b) != "got once" {
				t.Fatalf("answer %d %q, want 200 \"got once\"", res.StatusCode, b)
			}
			if n := conns.Load(); n != 2 {
				t.Fatalf("%d connections, want 2", n)
			}
		})
	}
	// The same through Go's server closing idle connections, over TLS too.
	for _, tlsOn := range []bool{false, true} {
		t.Run(fmt.Sprintf("server idle timeout, tls=%v", tlsOn), func(t *testing.T) {
			s := httptest.NewUnstartedServer(http.HandlerFunc(echo))
			s.Config.IdleTimeout = 20 * time.Millisecond
			var conns atomic.Int64
			s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
				if st == http.StateNew {
					conns.Add(1)
				}
			}
			if tlsOn {
				s.StartTLS()
			} else {
				s.Start()
			}
			defer s.Close()
			tr := newTransport(t, &server{Server: s})
			c := &http.Client{Transport: tr}
			for i := 0; i < 3; i++ {
				req, _ := http.NewRequest(http.MethodPost, s.URL, io.NopCloser(strings.NewReader(fmt.Sprint("n", i))))
				res, err := c.Do(req)
				if err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
				time.Sleep(100 * time.Millisecond)
			}
			if n := conns.Load(); n != 3 {
				t.Fatalf("%d connections, want 3", n)
			}
		})
	}
}

// An upstream that took a request and dropped the connection may have acted on it:
// a POST is not sent again (it could bill twice), one with an idempotency key is.
func TestNoResendOfAWrittenRequest(t *testing.T) {
	for _, key := range []bool{false, true} {
		t.Run(fmt.Sprintf("idempotency key=%v", key), func(t *testing.T) {
			var reqs atomic.Int64
			u, conns := rawServer(t, func(n int, c net.Conn) {
				br := bufio.NewReader(c)
				if n == 1 {
					if !answer(br, c, "") {
						return
					}
					reqs.Add(1)
					if _, err := http.ReadRequest(br); err == nil {
						reqs.Add(1)
						time.Sleep(50 * time.Millisecond) // "working on it", then gone
					}
					return
				}
				for answer(br, c, "") {
					reqs.Add(1)
				}
			})
			c := &http.Client{Transport: newTransport(t, nil)}
			post(t, c, u, "one")
			req, _ := http.NewRequest(http.MethodPost, u, strings.NewReader("two"))
			if key {
				req.Header.Set("Idempotency-Key", "k2")
			}
			res, err := c.Do(req)
			if !key {
				if err == nil {
					t.Fatal("a dropped POST came back as a success")
				}
				if r, n := reqs.Load(), conns.Load(); r != 2 || n != 1 {
					t.Fatalf("upstream saw %d requests on %d connections, want 2 on 1 (no resend)", r, n)
				}
				return
			}
			if err != nil {
				t.Fatalf("request with an idempotency key: %v", err)
			}
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if string(b) != "got two" || reqs.Load() != 3 || conns.Load() != 2 {
				t.Fatalf("answer %q, %d requests on %d connections; want \"got two\", 3 on 2", b, reqs.Load(), conns.Load())
			}
		})
	}
}

// Once an answer began, even with an informational head only, nothing is resent.
func TestNoResendAfterAnInformationalAnswer(t *testing.T) {
	var reqs atomic.Int64
	u, conns := rawServer(t, func(n int, c net.Conn) {
		br := bufio.NewReader(c)
		if !answer(br, c, "") {
			return
		}
		reqs.Add(1)
		if _, err := http.ReadRequest(br); err == nil {
			reqs.Add(1)
			io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\n")
		}
	})
	c := &http.Client{Transport: newTransport(t, nil)}
	post(t, c, u, "one")
	req, _ := http.NewRequest(http.MethodPost, u, strings.NewReader("two"))
	req.Header.Set("Idempotency-Key", "k2")
	if _, err := c.Do(req); err == nil {
		t.Fatal("an answer cut after 100 Continue was not an error")
	}
	if r, n := reqs.Load(), conns.Load(); r != 2 || n != 1 {
		t.Fatalf("upstream saw %d requests on %d connections, want 2 on 1", r, n)
	}
}

func TestResponseHeaderLimit(t *testing.T) {
	u, _ := rawServer(t, func(_ int, c net.Conn) {
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nX-Big: "+strings.Repeat("a", 256<<10)+"\r\nContent-Length: 0\r\n\r\n")
	})
	tr := newTransport(t, nil)
	tr.MaxResponseHeaderBytes = 64 << 10
	_, err := (&http.Client{Transport: tr}).Post(u, "text/plain", strings.NewReader("x"))
	if !errors.Is(err, errHeadTooLarge) {
		t.Fatalf("err %v, want the header-too-large error", err)
	}
}

// A request is not sent twice when the first connection saw some of an answer.
func TestNoRetryAfterAnAnswerStarted(t *testing.T) {
	u, conns := rawServer(t, func(n int, c net.Conn) {
		br := bufio.NewReader(c)
		if !answer(br, c, "") {
			return
		}
		if _, err := http.ReadRequest(br); err == nil {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Le") // cut mid-head
		}
	})
	c := &http.Client{Transport: newTransport(t, nil)}
	post(t, c, u, "one")
	_, err := c.Post(u, "text/plain", strings.NewReader("two"))
	if err == nil {
		t.Fatal("a cut answer head was not an error")
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("%d connections, want 1 (no retry once the answer began)", n)
	}
}

func TestConnectionCloseIsHonoured(t *testing.T) {
	u, conns := rawServer(t, func(_ int, c net.Conn) {
		br := bufio.NewReader(c)
		for answer(br, c, "Connection: close\r\n") {
		}
	})
	c := &http.Client{Transport: newTransport(t, nil)}
	post(t, c, u, "a")
	post(t, c, u, "b")
	if n := conns.Load(); n != 2 {
		t.Fatalf("%d connections, want 2 (Connection: close)", n)
	}
}

func TestInformationalAnswersAreSkipped(t *testing.T) {
	u, _ := rawServer(t, func(_ int, c net.Conn) {
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	})
	c := &http.Client{Transport: newTransport(t, nil)}
	res, got := post(t, c, u, "x")
	if res.StatusCode != 200 || got != "ok" {
		t.Fatalf("status %d body %q", res.StatusCode, got)
	}
}

// A body cut by the upstream is an error, not a short answer.
func TestTruncatedBody(t *testing.T) {
	u, _ := rawServer(t, func(_ int, c net.Conn) {
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this")
	})
	c := &http.Client{Transport: newTransport(t, nil)}
	res, err := c.Post(u, "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("read %q, %v; want io.ErrUnexpectedEOF", b, err)
	}
}

// A request larger than the socket takes at once still goes out whole.
func TestLargeRequest(t *testing.T) {
	for _, tlsOn := range []bool{false, true} {
		t.Run(fmt.Sprintf("tls=%v", tlsOn), func(t *testing.T) {
			s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
				time.Sleep(100 * time.Millisecond) // the socket fills: the rest is written after a wait
				n, _ := io.Copy(io.Discard, r.Body)
				fmt.Fprint(w, n)
			}, tlsOn)
			c := &http.Client{Transport: newTransport(t, s)}
			body := strings.Repeat("0123456789", 1<<20)
			for i := 0; i < 2; i++ {
				if _, got := post(t, c, s.URL, body); got != fmt.Sprint(len(body)) {
					t.Fatalf("server read %s bytes, want %d", got, len(body))
				}
			}
			if n := s.conns.Load(); n != 1 {
				t.Fatalf("%d connections, want 1", n)
			}
		})
	}
}

func TestIdleConnectionsAreClosed(t *testing.T) {
	s := newServer(t, echo, false)
	tr := newTransport(t, s)
	tr.IdleConnTimeout = 50 * time.Millisecond
	c := &http.Client{Transport: tr}
	post(t, c, s.URL, "x")
	deadline := time.Now().Add(5 * time.Second)
	for s.closed.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if s.closed.Load() != 1 {
		t.Fatal("the idle connection was not closed after IdleConnTimeout")
	}
	post(t, c, s.URL, "y")
	if n := s.conns.Load(); n != 2 {
		t.Fatalf("%d connections, want 2", n)
	}
}

type recorder struct{ n atomic.Int64 }

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	r.n.Add(1)
	return &http.Response{StatusCode: 299, Body: http.NoBody, Request: req}, nil
}

// Requests with a proxy go to the fallback transport.
func TestProxiedRequestsUseTheFallback(t *testing.T) {
	s := newServer(t, echo, false)
	fb := &recorder{}
	tr := newTransport(t, s)
	tr.Fallback = fb
	tr.Proxy = func(r *http.Request) (*url.URL, error) {
		if r.URL.Path == "/proxied" {
			return url.Parse("http://proxy.invalid:3128")
		}
		return nil, nil
	}
	c := &http.Client{Transport: tr}
	if res, _ := post(t, c, s.URL+"/proxied", "x"); res.StatusCode != 299 || fb.n.Load() != 1 {
		t.Fatalf("proxied request: status %d, fallback used %d times", res.StatusCode, fb.n.Load())
	}
	if res, _ := post(t, c, s.URL+"/direct", "x"); res.StatusCode != 200 || fb.n.Load() != 1 {
		t.Fatalf("direct request: status %d, fallback used %d times", res.StatusCode, fb.n.Load())
	}
}

func TestDialErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	c := &http.Client{Transport: newTransport(t, nil)}
	if _, err := c.Post("http://"+addr, "text/plain", strings.NewReader("x")); err == nil {
		t.Fatal("no error for a refused connection")
	}
	// An upstream that takes the connection but never answers the TLS handshake.
	u, _ := rawServer(t, func(_ int, c net.Conn) { io.Copy(io.Discard, c) })
	slow := newTransport(t, nil)
	slow.TLSHandshakeTimeout = 100 * time.Millisecond
	_, err = (&http.Client{Transport: slow}).Post(strings.Replace(u, "http:", "https:", 1), "text/plain", strings.NewReader("x"))
	if err == nil || !strings.Contains(err.Error(), "TLS handshake timeout") || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v, want a TLS handshake timeout that is not the request's deadline", err)
	}
	s := newServer(t, echo, true)
	tr := newTransport(t, nil) // does not trust the test certificate
	if _, err := (&http.Client{Transport: tr}).Post(s.URL, "text/plain", strings.NewReader("x")); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("err %v, want a certificate error", err)
	}
}

// An upstream may answer before it has read the whole request (413 for a body too
// large) and close. The answer reaches the caller, as with net/http's transport, and
// the connection is not reused.
func TestAnswerBeforeTheRequestIsWritten(t *testing.T) {
	for _, tlsOn := range []bool{false, true} {
		t.Run(fmt.Sprintf("tls=%v", tlsOn), func(t *testing.T) {
			s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
				if r.ContentLength > 1<<20 {
					http.Error(w, "request too large", http.StatusRequestEntityTooLarge)
					return // net/http's server closes the connection, the body unread
				}
				echo(w, r)
			}, tlsOn)
			c := &http.Client{Transport: newTransport(t, s)}
			big := strings.Repeat("0123456789", 1<<20) // far more than the sockets' buffers
			for i := 0; i < 2; i++ {
				res, got := post(t, c, s.URL, big)
				if res.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(got, "too large") {
					t.Fatalf("got %d %q, want the upstream's 413", res.StatusCode, got)
				}
				if _, got := post(t, c, s.URL, "small"); !strings.Contains(got, "POST / small") {
					t.Fatalf("after the 413: got %q", got)
				}
			}
		})
	}
}

// An upstream that answers without reading the request's body and keeps the
// connection open: the connection still carries the unwritten rest, so it is not
// reused, and the next request goes out on a new one.
func TestEarlyAnswerOnAKeptConnection(t *testing.T) {
	done := make(chan struct{})
	u, conns := rawServer(t, func(n int, c net.Conn) {
		br := bufio.NewReader(c)
		if n == 1 {
			if _, err := http.ReadRequest(br); err != nil { // the head only
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nearly")
			<-done
			return
		}
		for answer(br, c, "") {
		}
	})
	t.Cleanup(func() { close(done) }) // before rawServer's cleanup: it waits for fn
	c := &http.Client{Transport: newTransport(t, nil), Timeout: 10 * time.Second}
	if _, got := post(t, c, u, strings.Repeat("0123456789", 1<<20)); got != "early" {
		t.Fatalf("got %q, want early", got)
	}
	if _, got := post(t, c, u, "small"); got != "got small" {
		t.Fatalf("got %q, want got small", got)
	}
	if n := conns.Load(); n != 2 {
		t.Fatalf("%d connections, want 2", n)
	}
}

// With small socket buffers even a request written at once does not fit, and the
// write fails when the upstream answers early and closes; the answer is still read.
func TestAnswerBeforeTheRequestIsWrittenSmallBuffers(t *testing.T) {
	for _, tlsOn := range []bool{false, true} {
		t.Run(fmt.Sprintf("tls=%v", tlsOn), func(t *testing.T) {
			cfg, tr := serverTLS(t, tlsOn)
			u, _ := rawServerWith(t, cfg, 4096, func(_ int, c net.Conn) {
				if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil { // the head only
					return
				}
				io.WriteString(c, "HTTP/1.1 413 Request Entity Too Large\r\nConnection: close\r\nContent-Length: 9\r\n\r\ntoo large")
				time.Sleep(100 * time.Millisecond) // then close, the body unread: a reset
			})
			tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
				nc, err := (&net.Dialer{}).DialContext(ctx, network, addr)
				if err == nil {
					nc.(*net.TCPConn).SetWriteBuffer(4096)
				}
				return nc, err
			}
			c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
			res, got := post(t, c, u, strings.Repeat("x", 60<<10)) // under maxSyncWrite
			if res.StatusCode != http.StatusRequestEntityTooLarge || got != "too large" {
				t.Fatalf("got %d %q, want the upstream's 413", res.StatusCode, got)
			}
		})
	}
}

// A TLS request cancelled while the upstream is not reading it ends at once: the
// connection is not closed with a close_notify alert that has no room to be written
// (tls.Conn.Close gives it 5 s). Whether the request's write has ended by then is a
// race, so the test tries a few times.
func TestCancelDoesNotWaitForCloseNotify(t *testing.T) {
	release := make(chan struct{})
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) { <-release }, true) // the body unread
	// Before the server's Close, which waits for the handler.
	t.Cleanup(func() { close(release) })
	c := &http.Client{Transport: newTransport(t, s)}
	body := strings.Repeat("x", 8<<20) // far more than the sockets' buffers
	for i := 0; i < 10; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.URL, strings.NewReader(body))
		start := time.Now()
		_, err := c.Do(req)
		d := time.Since(start)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("got %v, want the deadline", err)
		}
		if d > 4*time.Second {
			t.Fatalf("the cancelled request took %v", d)
		}
	}
}

// Over TLS a server writes each flushed event as its own record, and tls.Conn hands
// over one record per Read. Events that arrived together are still read together: a
// gateway that flushes once per burst, when nothing more is buffered, would
// otherwise make one write per event.
func TestTLSBurstIsReadTogether(t *testing.T) {
	next := make(chan struct{})
	big := strings.Repeat("0123456789abcdef", 20<<10) // 320 KiB: records split across reads
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := 0; i < 20; i++ {
			fmt.Fprintf(w, "data: %02d\n\n", i)
			w.(http.Flusher).Flush() // a record each
		}
		select { // nothing more until the client has read the burst
		case <-next:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, big)
	}, true)
	c := &http.Client{Transport: newTransport(t, s)}
	res, err := c.Post(s.URL, "text/plain", strings.NewReader("hi"))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	time.Sleep(200 * time.Millisecond) // the whole burst arrives
	var burst []byte
	buf := make([]byte, 16<<10)
	reads := 0
	for len(burst) < 20*len("data: 00\n\n") {
		n, err := res.Body.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		burst = append(burst, buf[:n]...)
		reads++
	}
	if reads > 2 { // the event that came with the head, then the rest
		t.Fatalf("%d reads for a burst of 20 events that had all arrived", reads)
	}
	close(next)
	rest, err := io.ReadAll(res.Body)
	if err != nil || string(rest) != big || !strings.HasPrefix(string(burst), "data: 00\n\ndata: 01\n\n") {
		t.Fatalf("read %d bytes after the burst (%v), want %d; burst %.40q", len(rest), err, len(big), burst)
	}
}

// recordReader hands over one TLS record per Read, tells when a whole record is at
// hand, and, asked for only what is at hand, ends with an error tls.Conn does not
// keep (a temporary net.Error), so the connection reads on afterwards.
func TestRecordReader(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	record := func(payload string) []byte {
		return append([]byte{23, 3, 3, byte(len(payload) >> 8), byte(len(payload))}, payload...)
	}
	rr := &recordReader{Conn: a, br: bufio.NewReaderSize(a, 1024)}
	go b.Write(append(record("first"), record("second!")...)) // one write: they arrive together
	p := make([]byte, 512)
	if n, err := rr.Read(p); err != nil || string(p[:n]) != string(record("first")) {
		t.Fatalf("first Read: %q, %v", p[:n], err)
	}
	if !rr.whole() {
		t.Fatal("the second record arrived with the first: whole must say so")
	}
	rr.noWait = true
	if n, err := rr.Read(p); err != nil || string(p[:n]) != string(record("second!")) {
		t.Fatalf("second Read: %q, %v", p[:n], err)
	}
	_, err := rr.Read(p)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Temporary() || !ne.Timeout() {
		t.Fatalf("nothing at hand: %v, want a temporary net.Error", err)
	}
	rr.noWait = false
	third := record(strings.Repeat("x", 700))
	go func() { b.Write(third[:300]); time.Sleep(20 * time.Millisecond); b.Write(third[300:]) }()
	got := []byte{}
	for len(got) < len(third) {
		n, err := rr.Read(p)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, p[:n]...)
	}
	if string(got) != string(third) {
		t.Fatalf("a record split across writes: got %d bytes, want %d", len(got), len(third))
	}
}

// A new TLS connection to a host seen before resumes its session.
func TestTLSSessionsAreResumed(t *testing.T) {
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, r.TLS.DidResume)
	}, true)
	tr := newTransport(t, s)
	c := &http.Client{Transport: tr}
	var got []string
	for i := 0; i < 3; i++ {
		_, b := post(t, c, s.URL, "hi")
		got = append(got, b)
		tr.CloseIdleConnections() // the next request needs a new connection
	}
	if strings.Join(got, ",") != "false,true,true" {
		t.Fatalf("resumed: %v, want false,true,true", got)
	}
	if n := s.conns.Load(); n != 3 {
		t.Fatalf("%d connections, want 3", n)
	}
}

// A connection that ends inside a TLS record's header is cut, not ended: a body
// read to the connection's end fails instead of looking complete.
func TestTLSCutInsideARecordHeader(t *testing.T) {
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		nc, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		tc := nc.(*tls.Conn)
		io.WriteString(tc, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nhello") // read to the end
		time.Sleep(50 * time.Millisecond)
		tc.NetConn().Write([]byte{23, 3, 3}) // 3 of a record header's 5 bytes
		tc.NetConn().Close()
	}, true)
	c := &http.Client{Transport: newTransport(t, s)}
	res, err := c.Get(s.URL)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err == nil {
		t.Fatalf("read %q and a clean end, want an error", b)
	}
}

// TestBytesPastTheAnswerAreNeverTheNextAnswer: an upstream that sends more than its
// Content-Length, in the same write as the body's end, must not have those bytes read
// as the next request's answer. Over TLS a large body is read straight into the
// caller's buffer, so the extra bytes are left decrypted inside tls.Conn, where
// neither the read buffers nor the socket show them.
func TestBytesPastTheAnswerAreNeverTheNextAnswer(t *testing.T) {
	for _, tlsOn := range []bool{false, true} {
		for _, size := range []int{100, 20 << 10, 70 << 10, 150 << 10} {
			t.Run(fmt.Sprintf("tls=%v/size=%d", tlsOn, size), func(t *testing.T) {
				cfg, tr := serverTLS(t, tlsOn)
				u, _ := rawServerWith(t, cfg, 0, func(_ int, c net.Conn) {
					br := bufio.NewReader(c)
					for {
						req, err := http.ReadRequest(br)
						if err != nil {
							return
						}
						io.Copy(io.Discard, req.Body)
						if req.URL.Path != "/first" {
							io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ngood")
							continue
						}
						fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", size)
						time.Sleep(20 * time.Millisecond)
						c.Write([]byte(strings.Repeat("a", size) + "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nEVIL"))
					}
				})
				c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
				res, err := c.Get(u + "/first")
				if err != nil {
					t.Fatal(err)
				}
				buf := make([]byte, 64<<10) // large reads: the body bypasses the buffers
				n := 0
				for {
					m, err := res.Body.Read(buf)
					n += m
					if err != nil {
						break
					}
				}
				res.Body.Close()
				if n != size {
					t.Fatalf("first answer: %d bytes, want %d", n, size)
				}
				time.Sleep(20 * time.Millisecond)
				res, err = c.Get(u + "/second")
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(res.Body)
				res.Body.Close()
				if string(b) != "good" {
					t.Fatalf("second answer %q: bytes left over from the first were taken for it", b)
				}
			})
		}
	}
}
