// Package h1 is a lean HTTP/1.1 client transport for upstream streams.
//
// net/http's Transport runs two goroutines per connection (a read loop and a write
// loop) and hands every request, response and body end between them and the caller.
// For a gateway that relays many short streams on one core those hand-offs cost about
// as much CPU as the gateway's own work. Transport does the same job in the caller's
// goroutine: it writes the request with Request.Write, reads the answer with
// http.ReadResponse, and puts the connection back in its pool when the body has been
// read to its end. The HTTP framing is net/http's own; only the connection handling
// is ours.
//
// With no read loop watching idle connections, a connection taken from the pool is
// checked just before the request is written (a non-blocking peek at the socket): a
// server that closed it, half-closed it or wrote to it meanwhile (a 408) costs a new
// connection, not an error. A request is sent again on a new connection only when
// nothing of it was written, or when it is safe to repeat, as net/http does.
//
// A request too large for the sockets' buffers is finished from a second goroutine
// while the answer is read, so an upstream that answers early (413) and closes is
// heard.
//
// It speaks HTTP/1.1 only (over TLS too, by ALPN). Requests it does not handle (a
// proxy from the environment, another scheme, a protocol upgrade) go to Fallback.
package h1

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Transport is an http.RoundTripper for HTTP/1.1 upstreams. Set its fields before
// first use; it is then safe for concurrent use.
type Transport struct {
	// Fallback handles requests Transport does not: through a proxy, other schemes,
	// upgrades. It also gets CloseIdleConnections.
	Fallback http.RoundTripper
	// Proxy reports the proxy for a request, as http.Transport.Proxy; a request with
	// a proxy goes to Fallback. Nil means no proxy.
	Proxy func(*http.Request) (*url.URL, error)
	// DialContext opens connections (default: a net.Dialer).
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// TLSClientConfig is cloned for each TLS connection; ServerName defaults to the
	// request's host, NextProtos is set to HTTP/1.1, and without a ClientSessionCache
	// the connections share one, so that new ones resume their host's TLS session.
	TLSClientConfig *tls.Config
	// TLSHandshakeTimeout bounds a handshake (zero: only the request's context).
	TLSHandshakeTimeout time.Duration
	// IdleConnTimeout closes connections idle for longer (zero: never).
	IdleConnTimeout time.Duration
	// MaxIdleConnsPerHost bounds the idle pool of each host (zero: 2).
	MaxIdleConnsPerHost int
	// MaxResponseHeaderBytes bounds an answer's head, 1xx heads included (zero: 1 MiB).
	MaxResponseHeaderBytes int64

	mu       sync.Mutex
	pools    map[string]*pool
	sessions tls.ClientSessionCache // when TLSClientConfig has none
}

// pool is one host's idle connections, most recently used last.
type pool struct {
	idle  []*conn
	timer *time.Timer // prunes connections past the idle timeout
	armed bool
}

// conn is one upstream connection. It is owned by one request at a time.
type conn struct {
	t      *Transport
	key    string
	nc     net.Conn
	sock   net.Conn        // the connection under TLS; nc itself without
	raw    syscall.RawConn // the TCP socket under nc; nil when nc is not a *net.TCPConn
	plain  bool            // raw is nc itself (no TLS above it)
	br     *bufio.Reader   // reads through lr
	lr     limitReader
	idleAt time.Time
	reused bool
	// writing, when not nil, gets the result of the write of a request's rest that
	// goes on while its answer is read (see send).
	writing chan error
}

// limitReader is the connection under br. While an answer's head is read it allows
// only so many bytes, so a broken upstream cannot make the head grow without bound.
type limitReader struct {
	nc   net.Conn
	left int64
	rr   *recordReader // under nc when it is TLS
}

var errHeadTooLarge = errors.New("h1: upstream answer's header too large")

func (l *limitReader) Read(p []byte) (int, error) {
	if l.left <= 0 {
		return 0, errHeadTooLarge
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.nc.Read(p)
	// tls.Conn gives one record per Read. Take the records that arrived with it too:
	// a burst of events, one record each, is then read in one go.
	for rr := l.rr; err == nil && n > 0 && n < len(p) && rr != nil && rr.whole(); {
		rr.noWait = true
		m, rerr := l.nc.Read(p[n:])
		rr.noWait = false
		n += m
		if rerr != nil { // errWouldBlock, or an error the next Read meets again
			break
		}
	}
	l.left -= int64(n)
	return n, err
}

// recordReader is the socket under a TLS connection. It hands tls.Conn one record at
// a time, so that the records read beyond it stay here, where whole can see them.
type recordReader struct {
	net.Conn               // the socket: Write, Close and deadlines go straight to it
	br       *bufio.Reader // reads the socket
	left     int           // bytes of the current record not handed over yet
	noWait   bool          // Read only what is at hand; errWouldBlock at a record's end
}

// tlsHeader is a TLS record's header: type, version and length (the same in 1.2 and 1.3).
const tlsHeader = 5

func (r *recordReader) Read(p []byte) (int, error) {
	if r.left == 0 {
		if r.noWait && !r.whole() {
			return 0, errWouldBlock{}
		}
		hdr, err := r.br.Peek(tlsHeader)
		switch {
		case err == io.EOF && len(hdr) > 0:
			r.left = len(hdr) // a header cut by the end: tls.Conn reports the truncation
		case err != nil:
			return 0, err // a deadline: what part of a header came is kept for the next Read
		default:
			r.left = tlsHeader + recordLen(hdr)
		}
	}
	if len(p) > r.left {
		p = p[:r.left]
	}
	n, err := r.br.Read(p)
	r.left -= n
	return n, err
}

// whole reports whether a whole record is at hand: tls.Conn can read it without
// waiting for the network.
func (r *recordReader) whole() bool {
	b := r.br.Buffered()
	if r.left > 0 {
		return b >= r.left
	}
	if b < tlsHeader {
		return false
	}
	hdr, _ := r.br.Peek(tlsHeader)
	return b >= tlsHeader+recordLen(hdr)
}

func recordLen(hdr []byte) int { return int(binary.BigEndian.Uint16(hdr[3:5])) }

// errWouldBlock ends a read of what is at hand. It is a temporary net.Error, which
// tls.Conn does not keep as the connection's error.
type errWouldBlock struct{}

func (errWouldBlock) Error() string   { return "h1: no whole TLS record at hand" }
func (errWouldBlock) Timeout() bool   { return true }
func (errWouldBlock) Temporary() bool { return true }

// errNotSent marks a failure before any byte of the request was written: sending it
// on another connection is always safe.
type errNotSent struct{ err error }

func (e errNotSent) Error() string { return e.err.Error() }
func (e errNotSent) Unwrap() error { return e.err }

// errNoAnswer marks a failure after the request was written but before any byte of
// an answer: the upstream may have acted on it, so only a request that is safe to
// repeat is sent again.
type errNoAnswer struct{ err error }

func (e errNoAnswer) Error() string { return e.err.Error() }
func (e errNoAnswer) Unwrap() error { return e.err }

// errStale is a pooled connection found unusable (closed, half-closed, or with bytes
// nobody asked for) just before a request was written on it.
var errStale = errors.New("h1: idle connection closed by the upstream")

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
	// The request is encoded once; a retry sends the same bytes.
	wb := wirePool.Get().(*bytes.Buffer)
	wb.Reset()
	defer func() {
		if wb.Cap() <= maxPooledWire {
			wirePool.Put(wb)
		}
	}()
	if err := req.Write(wb); err != nil { // closes the body
		return nil, err
	}
	key := req.URL.Scheme + "://" + canonicalAddr(req.URL)
	for retried := false; ; retried = true {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		c, err := t.get(ctx, key, req.URL, retried) // a retry never takes from the pool
		if err != nil {
			return nil, err
		}
		resp, err := c.roundTrip(req, wb.Bytes())
		if err == nil {
			return resp, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		var ns errNotSent
		var na errNoAnswer
		if !retried && c.reused && (errors.As(err, &ns) || (errors.As(err, &na) && repeatable(req))) {
			continue
		}
		return nil, err
	}
}

// wirePool holds encoded requests' buffers; they are free again once RoundTrip returns.
var wirePool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// maxPooledWire keeps a large request's buffer out of the pool.
const maxPooledWire = 64 << 10

// repeatable is net/http's rule for sending a request again after it was written:
// an idempotent method, or a client-provided idempotency key.
func repeatable(req *http.Request) bool {
	switch req.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	_, a := req.Header["Idempotency-Key"]
	_, b := req.Header["X-Idempotency-Key"]
	return a || b
}

func (t *Transport) fallback(req *http.Request) (*http.Response, error) {
	if t.Fallback == nil {
		if req.Body != nil {
			req.Body.Close()
		}
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
		clear(p.idle)
		p.idle = p.idle[:0]
	}
	t.mu.Unlock()
	for _, c := range idle {
		c.nc.Close()
	}
	if ci, ok := t.Fallback.(interface{ CloseIdleConnections() }); ok {
		ci.CloseIdleConnections()
	}
}

// get returns a pooled connection for key, or dials one (always when fresh is set).
func (t *Transport) get(ctx context.Context, key string, u *url.URL, fresh bool) (*conn, error) {
	for !fresh {
		t.mu.Lock()
		var c *conn
		if p := t.pools[key]; p != nil && len(p.idle) > 0 {
			c = p.idle[len(p.idle)-1]
			p.idle[len(p.idle)-1] = nil
			p.idle = p.idle[:len(p.idle)-1]
		}
		t.mu.Unlock()
		if c == nil {
			break
		}
		if t.IdleConnTimeout > 0 && time.Since(c.idleAt) > t.IdleConnTimeout {
			c.nc.Close()
			continue
		}
		c.reused = true
		return c, nil
	}
	return t.dial(ctx, key, u)
}

func (t *Transport) dial(ctx context.Context, key string, u *url.URL) (*conn, error) {
	dial := t.DialContext
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	nc, err := dial(ctx, "tcp", canonicalAddr(u))
	if err != nil {
		return nil, err
	}
	sock := nc
	var rr *recordReader
	var raw syscall.RawConn
	if tc, ok := nc.(*net.TCPConn); ok { // not a wrapper the raw socket would bypass
		raw, _ = tc.SyscallConn()
	}
	if u.Scheme == "https" {
		cfg := &tls.Config{}
		if t.TLSClientConfig != nil {
			cfg = t.TLSClientConfig.Clone()
		}
		if cfg.ServerName == "" {
			cfg.ServerName = u.Hostname()
		}
		if cfg.ClientSessionCache == nil {
			cfg.ClientSessionCache = t.sessionCache()
		}
		cfg.NextProtos = []string{"http/1.1"}
		rr = &recordReader{Conn: nc, br: bufio.NewReaderSize(nc, readBufferSize)}
		tc := tls.Client(rr, cfg)
		hctx, cancel := ctx, context.CancelFunc(func() {})
		if t.TLSHandshakeTimeout > 0 {
			hctx, cancel = context.WithTimeout(ctx, t.TLSHandshakeTimeout)
		}
		err := tc.HandshakeContext(hctx)
		timedOut := hctx.Err() != nil && ctx.Err() == nil
		cancel()
		if err != nil {
			nc.Close()
			if timedOut {
				err = fmt.Errorf("TLS handshake timeout (%v)", t.TLSHandshakeTimeout)
			}
			return nil, err
		}
		nc = tc
	}
	c := &conn{t: t, key: key, nc: nc, sock: sock, raw: raw, plain: raw != nil && u.Scheme == "http"}
	c.lr = limitReader{nc: nc, left: math.MaxInt64, rr: rr}
	c.br = bufio.NewReaderSize(&c.lr, readBufferSize)
	return c, nil
}

// sessionCache keeps TLS sessions across connections: a new connection to a host
// seen before resumes its session and skips checking the certificate chain again.
func (t *Transport) sessionCache() tls.ClientSessionCache {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.sessions == nil {
		t.sessions = tls.NewLRUClientSessionCache(0)
	}
	return t.sessions
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
	if !p.armed && t.IdleConnTimeout > 0 {
		p.armed = true
		if p.timer == nil {
			key := c.key
			p.timer = time.AfterFunc(t.IdleConnTimeout, func() { t.prune(key) })
		} else {
			p.timer.Reset(t.IdleConnTimeout)
		}
	}
	t.mu.Unlock()
}

// prune closes a pool's connections that have been idle too long and re-arms its
// timer while any are left.
func (t *Transport) prune(key string) {
	now := time.Now()
	t.mu.Lock()
	p := t.pools[key]
	p.armed = false
	n := 0
	for n < len(p.idle) && now.Sub(p.idle[n].idleAt) >= t.IdleConnTimeout {
		n++
	}
	stale := append([]*conn(nil), p.idle[:n]...)
	p.idle = append(p.idle[:0], p.idle[n:]...)
	clear(p.idle[len(p.idle):cap(p.idle)])
	if len(p.idle) > 0 {
		p.armed = true
		p.timer.Reset(t.IdleConnTimeout - now.Sub(p.idle[0].idleAt))
	}
	t.mu.Unlock()
	for _, c := range stale {
		c.nc.Close()
	}
}

// longAgo is a deadline in the past: it wakes any blocked read or write.
var longAgo = time.Unix(1, 0)

// max1xx bounds the informational answers skipped before the real one (as net/http).
const max1xx = 5

// roundTrip writes the encoded request on c and reads the answer's head. c is closed
// on error.
func (c *conn) roundTrip(req *http.Request, wire []byte) (*http.Response, error) {
	ctx := req.Context()
	// Cancellation interrupts the connection; the caller sees ctx.Err().
	stop := context.AfterFunc(ctx, func() { c.nc.SetDeadline(longAgo) })
	fail := func(err error) (*http.Response, error) {
		stop()
		c.abort()
		return nil, err
	}
	// A write that failed after part of the request went out may mean the upstream
	// answered early (a 413 for a body too large) and closed: its answer can still be
	// in the socket, and is worth more to the caller than a broken pipe.
	sendErr := c.send(wire)
	var na errNoAnswer
	if sendErr != nil && (!errors.As(sendErr, &na) || ctx.Err() != nil) {
		return fail(sendErr)
	}
	failRead := func(err error) (*http.Response, error) {
		if sendErr != nil {
			err = sendErr
		}
		return fail(err)
	}
	headMax := c.t.MaxResponseHeaderBytes
	if headMax <= 0 {
		headMax = 1 << 20
	}
	c.lr.left = headMax
	var resp *http.Response
	for n := 0; ; n++ {
		if n == 0 {
			if _, err := c.br.Peek(1); err != nil {
				return failRead(errNoAnswer{err})
			}
		}
		r, err := http.ReadResponse(c.br, req)
		if err != nil {
			return failRead(err)
		}
		// Informational answers (100 Continue, 103 Early Hints) precede the real one.
		if r.StatusCode >= 200 || r.StatusCode == http.StatusSwitchingProtocols {
			resp = r
			break
		}
		if n == max1xx {
			return fail(errors.New("h1: too many 1xx informational answers"))
		}
	}
	c.lr.left = math.MaxInt64
	reusable := sendErr == nil && !resp.Close && !req.Close && resp.ProtoAtLeast(1, 1) &&
		resp.StatusCode != http.StatusSwitchingProtocols && !hasToken(req.Header["Connection"], "close")
	if resp.Body == http.NoBody || resp.Body == nil {
		resp.Body = http.NoBody
		c.release(stop, reusable)
		return resp, nil
	}
	resp.Body = &body{ctx: ctx, c: c, rc: resp.Body, stop: stop, reusable: reusable}
	return resp, nil
}

// send writes a request. A pooled connection is first checked with a non-blocking
// peek: anything but "nothing to read" (the upstream's FIN, a TLS alert, a 408, stray
// bytes) means it cannot carry a request, and errNotSent lets the caller use another.
//
// On a plain TCP connection the peek and the write are made from inside the wait for
// the answer (syscall.RawConn.Read): the poller is armed first, so anything that
// arrives after the peek, the answer included, wakes the wait, and no read is spent
// finding the socket still empty. What the socket does not take at once is written
// the usual way.
func (c *conn) send(p []byte) error {
	// A new TLS connection may hold what the server sent after its handshake (TLS
	// 1.3 session tickets): tls.Conn reads it with the answer.
	if c.reused && c.buffered() > 0 {
		return errNotSent{errStale}
	}
	if !c.plain {
		if c.reused && c.raw != nil {
			var ok bool
			if err := c.raw.Read(func(fd uintptr) bool { ok = idle(fd); return true }); err != nil || !ok {
				return errNotSent{errStale}
			}
		}
		if len(p) > maxSyncWrite {
			c.writeRest(p)
			return nil
		}
		if _, err := c.nc.Write(p); err != nil {
			return errNoAnswer{err} // some of it may have gone out
		}
		return nil
	}
	wrote, sent, stale := 0, false, false
	var werr error
	err := c.raw.Read(func(fd uintptr) bool {
		if sent {
			return true // something arrived: read it
		}
		if c.reused && wrote == 0 && !idle(fd) {
			stale = true
			return true
		}
		for wrote < len(p) {
			n, err := syscall.Write(int(fd), p[wrote:])
			if n > 0 {
				wrote += n
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
		return false // wait until something is readable
	})
	switch {
	case stale:
		return errNotSent{errStale}
	case werr != nil && wrote == 0:
		return errNotSent{werr}
	case werr != nil:
		return errNoAnswer{werr}
	case err != nil && wrote == 0:
		return errNotSent{err}
	case err != nil:
		return errNoAnswer{err}
	}
	if wrote < len(p) { // the socket's buffer was full
		c.writeRest(p[wrote:])
	}
	return nil
}

// maxSyncWrite is the largest request written on a TLS connection before its answer
// is read. Larger ones may not fit in the sockets' buffers: see writeRest.
const maxSyncWrite = 64 << 10

// writeRest writes p from another goroutine while the caller reads the answer, as
// net/http's transport always does: an upstream may answer before it has read the
// whole request (a 413 for a body too large) and close, and a caller blocked in the
// write would see only a broken pipe. The connection is reused only if the write
// ends well (see release); closing it ends the write.
//
// The request's buffer goes back to RoundTrip's pool when RoundTrip returns, which
// may be before the write ends; a buffer small enough to be pooled is copied.
func (c *conn) writeRest(p []byte) {
	if len(p) <= maxPooledWire {
		p = bytes.Clone(p)
	}
	done := make(chan error, 1)
	c.writing = done
	go func() {
		_, err := c.nc.Write(p)
		done <- err
	}()
}

// maxWriteWait is how long the end of an answer waits for the end of the request's
// write (an upstream that answered early) before the connection is given up.
const maxWriteWait = 50 * time.Millisecond

// wrote reports whether the request's write, if it went on past the answer's
// start, ended without error.
func (c *conn) wrote() bool {
	if c.writing == nil {
		return true
	}
	t := time.NewTimer(maxWriteWait)
	defer t.Stop()
	select {
	case err := <-c.writing:
		c.writing = nil
		return err == nil
	case <-t.C:
		return false
	}
}

// buffered is what was read from c and not used: on a connection between two
// requests, bytes nobody asked for.
func (c *conn) buffered() int {
	n := c.br.Buffered()
	if c.lr.rr != nil {
		n += c.lr.rr.br.Buffered()
	}
	return n
}

// tlsIdle reports whether a TLS connection holds no decrypted bytes nobody asked
// for. A large body is read straight into the caller's buffer, so bytes an upstream
// sent past the answer's end in the same record stay inside tls.Conn, where neither
// buffered nor the socket peek see them: they would be the next request's answer.
// A read that takes only what is at hand finds them; it also digests whole records
// already buffered that carry no data (TLS 1.3 tickets), as tls.Conn does.
func (c *conn) tlsIdle() bool {
	rr := c.lr.rr
	if rr == nil {
		return true
	}
	rr.noWait = true
	var b [1]byte
	n, err := c.nc.Read(b[:])
	rr.noWait = false
	var wb errWouldBlock
	return n == 0 && errors.As(err, &wb)
}

// idle reports whether the socket fd has nothing to read and is still open.
func idle(fd uintptr) bool {
	var b [1]byte
	for {
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		if err == syscall.EINTR {
			continue
		}
		return n < 0 && (err == syscall.EAGAIN || err == syscall.EWOULDBLOCK)
	}
}

func hasToken(values []string, token string) bool {
	for _, v := range values {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// abort closes c at once, when it ends in error or before its answer's end. On TLS
// it closes the socket under it: tls.Conn.Close first writes a close_notify alert,
// and may wait 5 s for room in a socket the upstream has stopped reading.
func (c *conn) abort() { c.sock.Close() }

// release ends a request on c: back to the pool when the answer was read whole and
// the connection was not interrupted, closed otherwise.
func (c *conn) release(stop func() bool, reusable bool) {
	if stop() && reusable && c.buffered() == 0 && c.tlsIdle() && c.wrote() {
		c.t.put(c)
		return
	}
	c.abort()
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
	err      error // once done: what Read returns
}

var errClosed = errors.New("h1: read on closed response body")

func (b *body) Read(p []byte) (int, error) {
	if b.done.Load() {
		b.mu.Lock()
		defer b.mu.Unlock()
		return 0, b.err
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
	b.c.abort()
	return n, err
}

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
	b.c.abort()
	return nil
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
