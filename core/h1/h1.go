// Package h1 is a lean HTTP/1.1 client transport for upstream streams.
//
// net/http's Transport runs two goroutines per connection (a read loop and a write
// loop) and hands every request, response and body end between them and the caller.
// For a gateway that relays many short streams on one core those hand-offs, and the
// read the idle loop keeps posted on every connection, cost about as much CPU as the
// gateway's own work. Transport does the same job in the caller's goroutine: it writes
// the request with Request.Write, reads the answer with http.ReadResponse, and puts the
// connection back in its pool when the body has been read to its end. The HTTP
// framing is net/http's own; only the connection management is ours.
//
// It speaks HTTP/1.1 only (over TLS too, by ALPN). Requests it does not handle (a
// proxy from the environment, another scheme, a protocol upgrade) go to Fallback.
package h1

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Transport is an http.RoundTripper for HTTP/1.1 upstreams. The zero value is not
// usable: build it with New. It is safe for concurrent use.
type Transport struct {
	// Fallback handles requests Transport does not: through a proxy, other schemes,
	// upgrades. It also gets CloseIdleConnections.
	Fallback http.RoundTripper
	// Proxy reports the proxy for a request, as http.Transport.Proxy; a request with
	// a proxy goes to Fallback. Nil means no proxy.
	Proxy func(*http.Request) (*url.URL, error)
	// DialContext opens connections.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// TLSClientConfig is cloned for each TLS connection; ServerName defaults to the
	// request's host and NextProtos is set to HTTP/1.1.
	TLSClientConfig *tls.Config
	// TLSHandshakeTimeout bounds a handshake (zero: only the request's context).
	TLSHandshakeTimeout time.Duration
	// IdleConnTimeout closes connections idle for longer.
	IdleConnTimeout time.Duration
	// MaxIdleConnsPerHost bounds the idle pool of each host.
	MaxIdleConnsPerHost int

	mu    sync.Mutex
	pools map[string]*pool
}

// pool is one host's idle connections, most recently used last.
type pool struct {
	idle  []*conn
	timer *time.Timer // prunes connections past the idle timeout
}

// conn is one upstream connection. It is owned by one request at a time.
type conn struct {
	t      *Transport
	key    string
	nc     net.Conn
	raw    syscall.RawConn // the TCP socket under nc, for the liveness check; may be nil
	br     *bufio.Reader
	wb     bytes.Buffer // the request being written
	plain  bool         // raw is the connection itself (no TLS above it)
	idleAt time.Time
	reused bool
}

// RoundTrip sends req and returns its answer. The body must be read to its end or
// closed; reading it to the end returns the connection to the pool.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL == nil || (req.URL.Scheme != "http" && req.URL.Scheme != "https") || req.URL.Host == "" ||
		req.Header.Get("Upgrade") != "" || req.Method == http.MethodConnect {
		return t.fallback(req)
	}
	if t.Proxy != nil {
		if p, err := t.Proxy(req); err != nil || p != nil {
			return t.fallback(req)
		}
	}
	ctx := req.Context()
	key := req.URL.Scheme + "://" + canonicalAddr(req.URL)
	for retried := false; ; retried = true {
		if err := ctx.Err(); err != nil {
			closeBody(req)
			return nil, err
		}
		c, err := t.get(ctx, key, req.URL)
		if err != nil {
			closeBody(req)
			return nil, err
		}
		resp, err := c.roundTrip(req)
		if err == nil {
			return resp, nil
		}
		// A kept-alive connection the server closed just as it was reused fails
		// before any answer: send the request again on a new connection, once, as
		// net/http does (only when the body can be sent again).
		var nr noResponse
		if !retried && c.reused && errors.As(err, &nr) && ctx.Err() == nil {
			if r2, ok := rewind(req); ok {
				req = r2
				continue
			}
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
}

func (t *Transport) fallback(req *http.Request) (*http.Response, error) {
	if t.Fallback == nil {
		closeBody(req)
		return nil, errors.New("h1: request not supported and no fallback transport")
	}
	return t.Fallback.RoundTrip(req)
}

// CloseIdleConnections closes the pooled connections (and the fallback's).
func (t *Transport) CloseIdleConnections() {
	t.mu.Lock()
	var idle []*conn
	for _, p := range t.pools {
		idle = append(idle, p.idle...)
		p.idle = nil
		if p.timer != nil {
			p.timer.Stop()
			p.timer = nil
		}
	}
	t.mu.Unlock()
	for _, c := range idle {
		c.nc.Close()
	}
	if ci, ok := t.Fallback.(interface{ CloseIdleConnections() }); ok {
		ci.CloseIdleConnections()
	}
}

// get returns a live pooled connection for key, or dials one.
func (t *Transport) get(ctx context.Context, key string, u *url.URL) (*conn, error) {
	now := time.Now()
	for {
		t.mu.Lock()
		var c *conn
		if p := t.pools[key]; p != nil && len(p.idle) > 0 {
			c = p.idle[len(p.idle)-1]
			p.idle[len(p.idle)-1] = nil
			p.idle = p.idle[:len(p.idle)-1]
		}
		t.mu.Unlock()
		if c == nil {
			return t.dial(ctx, key, u)
		}
		if (t.IdleConnTimeout > 0 && now.Sub(c.idleAt) > t.IdleConnTimeout) || !c.alive(now) {
			c.nc.Close()
			continue
		}
		c.reused = true
		return c, nil
	}
}

// alive reports whether a pooled connection is still open. A connection idle for a
// moment is taken as alive (the retry covers the rare close in that window); one idle
// longer is checked with a non-blocking peek: anything but "nothing to read" (the
// server's FIN, a TLS alert, stray bytes) means it cannot carry a request.
func (c *conn) alive(now time.Time) bool {
	if c.br.Buffered() > 0 {
		return false
	}
	if c.raw == nil || now.Sub(c.idleAt) < aliveCheckAfter {
		return true
	}
	ok := false
	err := c.raw.Read(func(fd uintptr) bool {
		var b [1]byte
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		ok = n < 0 && (err == syscall.EAGAIN || err == syscall.EWOULDBLOCK)
		return true // never wait
	})
	return err == nil && ok
}

// aliveCheckAfter is how long a connection rests in the pool before its reuse costs a
// liveness check. Under load connections rest for microseconds and skip it.
const aliveCheckAfter = 500 * time.Millisecond

func (t *Transport) dial(ctx context.Context, key string, u *url.URL) (*conn, error) {
	addr := canonicalAddr(u)
	dial := t.DialContext
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	nc, err := dial(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	var raw syscall.RawConn
	if sc, ok := nc.(syscall.Conn); ok {
		raw, _ = sc.SyscallConn()
	}
	if u.Scheme == "https" {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if t.TLSClientConfig != nil {
			cfg = t.TLSClientConfig.Clone()
		}
		if cfg.ServerName == "" {
			cfg.ServerName = u.Hostname()
		}
		cfg.NextProtos = []string{"http/1.1"}
		tc := tls.Client(nc, cfg)
		hctx := ctx
		if t.TLSHandshakeTimeout > 0 {
			var cancel context.CancelFunc
			hctx, cancel = context.WithTimeout(ctx, t.TLSHandshakeTimeout)
			defer cancel()
		}
		if err := tc.HandshakeContext(hctx); err != nil {
			nc.Close()
			return nil, err
		}
		nc = tc
	}
	return &conn{t: t, key: key, nc: nc, raw: raw, plain: raw != nil && u.Scheme == "http", br: bufio.NewReaderSize(nc, readBufferSize)}, nil
}

// put returns a connection to its pool, or closes it when the pool is full.
func (t *Transport) put(c *conn) {
	c.idleAt = time.Now()
	t.mu.Lock()
	if t.pools == nil {
		t.pools = map[string]*pool{}
	}
	p := t.pools[c.key]
	if p == nil {
		p = &pool{}
		t.pools[c.key] = p
	}
	max := t.MaxIdleConnsPerHost
	if max <= 0 {
		max = 2
	}
	if len(p.idle) >= max {
		t.mu.Unlock()
		c.nc.Close()
		return
	}
	p.idle = append(p.idle, c)
	if p.timer == nil && t.IdleConnTimeout > 0 {
		key := c.key
		p.timer = time.AfterFunc(t.IdleConnTimeout, func() { t.prune(key) })
	}
	t.mu.Unlock()
}

// prune closes a pool's connections that have been idle too long and re-arms its
// timer while any are left.
func (t *Transport) prune(key string) {
	now := time.Now()
	t.mu.Lock()
	p := t.pools[key]
	if p == nil {
		t.mu.Unlock()
		return
	}
	p.timer = nil
	var stale []*conn
	n := 0
	for n < len(p.idle) && now.Sub(p.idle[n].idleAt) >= t.IdleConnTimeout {
		n++
	}
	stale = append(stale, p.idle[:n]...)
	p.idle = append(p.idle[:0], p.idle[n:]...)
	clear(p.idle[len(p.idle):cap(p.idle)])
	if len(p.idle) > 0 {
		p.timer = time.AfterFunc(t.IdleConnTimeout-now.Sub(p.idle[0].idleAt), func() { t.prune(key) })
	}
	t.mu.Unlock()
	for _, c := range stale {
		c.nc.Close()
	}
}

// noResponse marks an error that came before any byte of the answer was read.
type noResponse struct{ err error }

func (e noResponse) Error() string { return e.err.Error() }
func (e noResponse) Unwrap() error { return e.err }

// longAgo is a deadline in the past: it wakes any blocked read or write.
var longAgo = time.Unix(1, 0)

// roundTrip writes req on c and reads the answer's head. c is closed on error.
func (c *conn) roundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	// Cancellation interrupts the connection; the request's caller sees ctx.Err().
	stop := context.AfterFunc(ctx, func() { c.nc.SetDeadline(longAgo) })
	fail := func(err error) (*http.Response, error) {
		stop()
		c.nc.Close()
		return nil, err
	}
	c.wb.Reset()
	if err := req.Write(&c.wb); err != nil {
		return fail(noResponse{err})
	}
	err := c.send(c.wb.Bytes())
	if c.wb.Cap() > maxKeptWriteBuffer {
		c.wb = bytes.Buffer{}
	}
	if err != nil {
		return fail(noResponse{err})
	}
	var resp *http.Response
	for {
		if _, err := c.br.Peek(1); err != nil {
			return fail(noResponse{err})
		}
		r, err := http.ReadResponse(c.br, req)
		if err != nil {
			return fail(err)
		}
		// Informational answers (100 Continue, 103 Early Hints) precede the real one.
		if r.StatusCode >= 200 || r.StatusCode == http.StatusSwitchingProtocols {
			resp = r
			break
		}
	}
	reusable := !resp.Close && !req.Close && resp.ProtoAtLeast(1, 1)
	if resp.Body == http.NoBody || resp.Body == nil {
		resp.Body = http.NoBody
		c.release(stop, reusable)
		return resp, nil
	}
	resp.Body = &body{ctx: ctx, c: c, rc: resp.Body, stop: stop, reusable: reusable}
	return resp, nil
}

// send writes a request. On a plain TCP connection the write is made from inside the
// wait for the answer (syscall.RawConn.Read): the poller is armed before the request
// leaves, so the answer's arrival wakes the wait and no read is spent finding the socket
// still empty. Anything the socket does not take at once is written the usual way.
func (c *conn) send(p []byte) error {
	if !c.plain || c.br.Buffered() > 0 {
		_, err := c.nc.Write(p)
		return err
	}
	sent := false
	var werr error
	err := c.raw.Read(func(fd uintptr) bool {
		if sent {
			return true // the answer is readable
		}
		for len(p) > 0 {
			n, err := syscall.Write(int(fd), p)
			if n > 0 {
				p = p[n:]
			}
			if err == syscall.EINTR {
				continue
			}
			if err != nil {
				if err != syscall.EAGAIN {
					werr = os.NewSyscallError("write", err)
				}
				return true
			}
		}
		sent = true
		return false // wait until the answer is readable
	})
	if werr != nil {
		return werr
	}
	if err != nil {
		return err
	}
	if len(p) > 0 { // the socket's buffer was full: write the rest, then read as usual
		_, err = c.nc.Write(p)
	}
	return err
}

// maxKeptWriteBuffer bounds the request buffer a connection keeps between requests.
const maxKeptWriteBuffer = 64 << 10

// release ends a request on c: back to the pool when the answer was read whole and
// the connection was not interrupted, closed otherwise.
func (c *conn) release(stop func() bool, reusable bool) {
	if stop() && reusable && c.br.Buffered() == 0 {
		c.t.put(c)
		return
	}
	c.nc.Close()
}

// body is an answer's body. Read to its end, it gives the connection back.
type body struct {
	ctx      context.Context
	c        *conn
	rc       io.ReadCloser // net/http's body framing over c.br
	stop     func() bool
	reusable bool
	mu       sync.Mutex // serialises Close with the end of a Read
	done     atomic.Bool
	err      error
}

func (b *body) Read(p []byte) (int, error) {
	if b.done.Load() {
		return 0, b.readErr()
	}
	n, err := b.rc.Read(p)
	if err == nil {
		return n, nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done.Load() { // closed while reading
		return n, b.err
	}
	b.done.Store(true)
	if err == io.EOF {
		b.err = io.EOF
		b.c.release(b.stop, b.reusable)
		return n, io.EOF
	}
	if ctxErr := b.ctx.Err(); ctxErr != nil {
		err = ctxErr // the read failed because the request was cancelled
	}
	b.err = err
	b.stop()
	b.c.nc.Close()
	return n, err
}

func (b *body) readErr() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err == nil {
		return errClosed
	}
	return b.err
}

var errClosed = errors.New("h1: read on closed response body")

// Close ends the body. Before its end the connection cannot be reused: it is closed,
// which also wakes a Read blocked in another goroutine.
func (b *body) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done.Load() {
		return nil
	}
	b.done.Store(true)
	b.err = errClosed
	b.stop()
	b.c.nc.Close()
	return nil
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}

// rewind returns a copy of req with its body readable again, for a retry.
func rewind(req *http.Request) (*http.Request, bool) {
	if req.Body == nil || req.Body == http.NoBody {
		return req, true
	}
	if req.GetBody == nil {
		return nil, false
	}
	b, err := req.GetBody()
	if err != nil {
		return nil, false
	}
	r2 := *req
	r2.Body = b
	return &r2, true
}

func canonicalAddr(u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "https" {
			port = "443"
		}
	}
	return net.JoinHostPort(u.Hostname(), port)
}

// readBufferSize is each connection's read buffer. A burst of stream events larger
// than net/http's 4 KiB default then takes one read instead of two.
const readBufferSize = 16 << 10
