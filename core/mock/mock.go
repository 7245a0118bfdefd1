// Package mock is the built-in mock upstream: the OpenAI dialect under /v1 and the
// Gemini dialect under /v1beta, with deterministic answers and fault injection
// directives. The same code serves `ralf demo`, `ralf mock`, the tests and the
// benchmarks.
package mock

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// maxBody bounds a request body the mock reads.
const maxBody = 8 << 20

// Options configure the mock.
type Options struct {
	FixtureDir string      // where fixture=NAME files are read from (../shared/fixtures/upstream); "" = none
	Chunks     int         // content chunks per answer when no chunks= directive says otherwise (0 = 20)
	Logger     *zap.Logger // nil = no logs
	TLS        *tls.Config // when set, Listen serves HTTPS with it (certificates included)
}

// Recorded is a request the mock received, for tests to assert what a gateway sent.
type Recorded struct {
	Method string
	Path   string
	Query  string
	Header http.Header
	Body   []byte
}

// Handler is the mock upstream as an http.Handler. Use Start or Listen for one that
// listens on TCP.
type Handler struct {
	opts     Options
	log      *zap.Logger
	requests atomic.Int64
	streams  atomic.Int64

	mu   sync.Mutex
	last Recorded

	cache    answerCache
	fixtures sync.Map // file name → []byte; fixtures are read-only, so read once
}

var _ http.Handler = (*Handler)(nil)

// New returns the mock handler. It serves any http.Server or mux; cut= answers end by
// panicking with http.ErrAbortHandler, which net/http turns into a dropped connection.
func New(opts Options) *Handler {
	if opts.Chunks <= 0 {
		opts.Chunks = 20
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	return &Handler{opts: opts, log: opts.Logger.Named("mock")}
}

// Requests counts the requests received, on any path.
func (h *Handler) Requests() int64 { return h.requests.Load() }

// Streams is the number of chat answers being sent right now (streamed or not).
func (h *Handler) Streams() int64 { return h.streams.Load() }

// LastRequest returns a copy of the most recent request.
func (h *Handler) LastRequest() Recorded {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.last
	r.Header = r.Header.Clone()
	r.Body = bytes.Clone(r.Body)
	return r
}

// Answer is the text the mock answers to lastUser, split into exactly chunks
// non-empty deltas, so tests can compute what a client must receive. The text is
// "Hello from the ralf mock. You said: " and the first 60 characters of lastUser,
// padded with dots when it has fewer characters than chunks. chunks <= 0 gives no
// delta (an empty answer, as chunks=0 asks).
func Answer(lastUser string, chunks int) []string {
	if chunks <= 0 {
		return nil
	}
	said := []rune(lastUser)
	if len(said) > 60 {
		said = said[:60]
	}
	text := []rune("Hello from the ralf mock. You said: " + string(said))
	for len(text) < chunks {
		text = append(text, '.')
	}
	out := make([]string, chunks)
	for i := range out {
		out[i] = string(text[i*len(text)/chunks : (i+1)*len(text)/chunks])
	}
	return out
}

// reasoningDeltas is what the reasoning directive sends before the answer.
var reasoningDeltas = []string{"Thinking step 1. ", "Thinking step 2. ", "Thinking step 3."}

// ServeHTTP routes the two dialects.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.requests.Add(1)
	path := r.URL.Path
	switch {
	case path == "/v1/chat/completions":
		if !allow(w, r, http.MethodPost, openAI{}) {
			return
		}
		h.serveChat(w, r, openAI{})
	case path == "/v1/models":
		h.record(r, nil)
		if !allow(w, r, http.MethodGet, openAI{}) {
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"object":"list","data":[{"id":"mock","object":"model","created":1700000000,"owned_by":"ralf-mock"}]}`)
	case path == "/v1beta/models":
		h.record(r, nil)
		if !allow(w, r, http.MethodGet, gemini{}) {
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"models":[{"name":"models/mock","displayName":"ralf mock","supportedGenerationMethods":["generateContent","streamGenerateContent"]}]}`)
	case strings.HasPrefix(path, "/v1beta/models/"):
		model, method, _ := strings.Cut(strings.TrimPrefix(path, "/v1beta/models/"), ":")
		var d gemini
		switch method {
		case "streamGenerateContent":
			if r.URL.Query().Get("alt") != "sse" {
				h.record(r, nil)
				writeErr(w, gemini{}, http.StatusBadRequest, "mock: streamGenerateContent answers as SSE only: add ?alt=sse", "")
				return
			}
			d = gemini{model: model, stream: true}
		case "generateContent":
			d = gemini{model: model}
		default:
			h.record(r, nil)
			writeErr(w, gemini{}, http.StatusNotFound, "mock: unknown method "+method+": use :generateContent or :streamGenerateContent", "")
			return
		}
		if model == "" {
			h.record(r, nil)
			writeErr(w, d, http.StatusNotFound, "mock: no model in the path", "")
			return
		}
		if !allow(w, r, http.MethodPost, d) {
			return
		}
		h.serveChat(w, r, d)
	default:
		h.record(r, nil)
		var d dialect = openAI{}
		if strings.HasPrefix(path, "/v1beta") {
			d = gemini{}
		}
		writeErr(w, d, http.StatusNotFound, "mock: unknown endpoint "+path+" (OpenAI dialect under /v1, Gemini under /v1beta)", "")
	}
}

// allow answers 405 when r does not use method.
func allow(w http.ResponseWriter, r *http.Request, method string, d dialect) bool {
	if r.Method == method {
		return true
	}
	w.Header().Set("Allow", method)
	writeErr(w, d, http.StatusMethodNotAllowed, "mock: use "+method, "")
	return false
}

// record keeps r as the last request. The header map is the request's own: the
// server never reuses it, and LastRequest hands out copies.
func (h *Handler) record(r *http.Request, body []byte) {
	h.mu.Lock()
	h.last = Recorded{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Header: r.Header, Body: body}
	h.mu.Unlock()
}

// readBody reads the whole request body, in one allocation when its length is known.
func readBody(r *http.Request) ([]byte, error) {
	if r.ContentLength > maxBody {
		return nil, errTooLarge
	}
	if n := r.ContentLength; n >= 0 {
		b := make([]byte, n)
		if _, err := io.ReadFull(r.Body, b); err != nil {
			return nil, err
		}
		return b, nil
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxBody {
		return nil, errTooLarge
	}
	return b, nil
}

var errTooLarge = errors.New("mock: request body larger than 8 MiB")

func (h *Handler) serveChat(w http.ResponseWriter, r *http.Request, d dialect) {
	h.streams.Add(1)
	defer h.streams.Add(-1)
	body, err := readBody(r)
	h.record(r, body)
	if err != nil {
		if errors.Is(err, errTooLarge) {
			writeErr(w, d, http.StatusRequestEntityTooLarge, err.Error(), "")
		}
		return // the client went away
	}
	rq, err := d.parse(body)
	if err != nil {
		h.log.Debug("bad request", zap.String("path", r.URL.Path), zap.Error(err))
		writeErr(w, d, http.StatusBadRequest, err.Error(), "")
		return
	}
	// Every X-Mock header counts: a second one must not pass unnoticed.
	p, err := parsePlan(rq.model, strings.Join(r.Header.Values("X-Mock"), ","), h.opts.Chunks)
	if err != nil {
		h.log.Debug("bad directive", zap.String("path", r.URL.Path), zap.Error(err))
		writeErr(w, d, http.StatusBadRequest, err.Error(), "")
		return
	}
	ctx := r.Context()
	if p.delay > 0 && !sleep(ctx, p.delay) {
		return
	}
	if p.hang {
		<-ctx.Done()
		return
	}
	if p.fixture != "" {
		h.serveFixture(ctx, w, d, p)
		return
	}
	if p.status != 0 {
		writeErr(w, d, p.status, fmt.Sprintf("mock: injected status %d", p.status), p.retryAfter)
		return
	}
	enc := h.cache.get(d, &rq, p.chunks, p.reasoning)
	u := usage{prompt: rq.promptWords, completion: p.chunks}
	if rq.stream {
		h.stream(ctx, w, d, &rq, &p, enc, u)
	} else {
		h.whole(ctx, w, d, &rq, &p, enc, u)
	}
}

// stream sends a streamed answer, injecting the plan's mid-stream faults at their
// positions (counted in content chunks sent).
func (h *Handler) stream(ctx context.Context, w http.ResponseWriter, d dialect, rq *req, p *plan, enc *encoded, u usage) {
	n := len(enc.chunks)
	cut, hangAfter := clamp(p.cut, n), clamp(p.hangAfter, n)
	errEvent, errChunk := clamp(p.errorEvent, n), clamp(p.errorChunk, n)
	malformed := -1
	if p.malformed {
		malformed = min(1, n)
	}
	// Gemini carries finishReason and usage on the last content event; when a fault
	// comes after the last chunk, that event stays a plain one.
	merge := d.mergesFinish() && n > 0 && cut != n && hangAfter != n && errEvent != n && errChunk != n && malformed != n

	hdr := w.Header()
	hdr.Set("Content-Type", "text/event-stream")
	hdr.Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	fl := flusher(w)
	send := func(b []byte) bool {
		if len(b) == 0 {
			return true
		}
		if _, err := w.Write(b); err != nil {
			return false
		}
		return fl() == nil
	}
	// The headers go out at once, with the head when there is one: a client sees the
	// answer start even when the first chunk is held back (hang_after=0, slow).
	if len(enc.head) == 0 {
		if fl() != nil {
			return
		}
	} else if !send(enc.head) {
		return
	}
	for i := 0; ; i++ {
		switch i { // a fault at position i comes after i content chunks
		case cut:
			// Closes the connection without the end of the chunked body: the client
			// sees an unexpected EOF, as when an upstream dies mid-answer.
			panic(http.ErrAbortHandler)
		case hangAfter:
			<-ctx.Done()
			return
		case errEvent:
			send(d.midError(nil, true))
			return
		case errChunk:
			send(d.midError(nil, false))
			return
		case malformed:
			if !send(enc.malformed) {
				return
			}
		}
		if i == n {
			break
		}
		if p.slow > 0 && i > 0 && !sleep(ctx, p.slow) {
			return
		}
		if merge && i == n-1 {
			break
		}
		if !send(enc.chunks[i]) {
			return
		}
	}
	if p.slow > 0 && n > 0 && !merge && !sleep(ctx, p.slow) {
		return
	}
	var last *string
	if merge {
		last = &enc.texts[n-1]
	}
	buf := getBuf()
	*buf = d.finish((*buf)[:0], rq, last, u)
	send(*buf)
	putBuf(buf)
}

// whole sends a non-streamed answer. Mid-stream faults have a whole-body meaning:
// cut sends half the body and drops the connection, hang_after sends the headers
// and stalls, malformed sends a body that is not JSON, error_event and error_chunk
// send 200 with an error object (as OpenRouter does).
func (h *Handler) whole(ctx context.Context, w http.ResponseWriter, d dialect, rq *req, p *plan, enc *encoded, u usage) {
	buf := getBuf()
	defer putBuf(buf)
	*buf = d.full((*buf)[:0], rq, enc.text, u)
	body := *buf
	hdr := w.Header()
	hdr.Set("Content-Type", "application/json")
	switch {
	case p.errorEvent >= 0 || p.errorChunk >= 0:
		body = d.errorBody(http.StatusBadGateway, "mock: injected error")
	case p.malformed:
		body = body[:len(body)/2]
	case p.cut >= 0:
		hdr.Set("Content-Length", fmt.Sprint(len(body)))
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(body[:len(body)/2])
		_ = flusher(w)()
		panic(http.ErrAbortHandler)
	case p.hangAfter >= 0:
		w.WriteHeader(http.StatusOK)
		_ = flusher(w)()
		<-ctx.Done()
		return
	}
	if p.slow > 0 && !sleep(ctx, p.slow) {
		return
	}
	_, _ = w.Write(body)
}

// serveFixture replays a recorded upstream body byte for byte. slow, cut and
// hang_after work on its events (split after each blank line).
func (h *Handler) serveFixture(ctx context.Context, w http.ResponseWriter, d dialect, p plan) {
	data, err := h.fixture(p.fixture)
	if err != nil {
		h.log.Debug("fixture", zap.String("fixture", p.fixture), zap.Error(err))
		writeErr(w, d, http.StatusBadRequest, err.Error(), "") // a bad value of a directive, as any other
		return
	}
	hdr := w.Header()
	if strings.HasSuffix(p.fixture, ".json") {
		hdr.Set("Content-Type", "application/json")
	} else {
		hdr.Set("Content-Type", "text/event-stream")
		hdr.Set("Cache-Control", "no-cache")
	}
	if p.retryAfter != "" {
		hdr.Set("Retry-After", p.retryAfter)
	}
	status := p.status
	if status == 0 {
		status = http.StatusOK
	}
	w.WriteHeader(status)
	if p.slow == 0 && p.cut < 0 && p.hangAfter < 0 {
		_, _ = w.Write(data)
		return
	}
	fl := flusher(w)
	for i, ev := range splitEvents(data) {
		switch i {
		case p.cut:
			panic(http.ErrAbortHandler)
		case p.hangAfter:
			<-ctx.Done()
			return
		}
		if p.slow > 0 && i > 0 && !sleep(ctx, p.slow) {
			return
		}
		if _, err := w.Write(ev); err != nil || fl() != nil {
			return
		}
	}
	if p.cut >= 0 {
		panic(http.ErrAbortHandler)
	}
	if p.hangAfter >= 0 {
		<-ctx.Done()
	}
}

// fixture reads a fixture file once.
func (h *Handler) fixture(name string) ([]byte, error) {
	if v, ok := h.fixtures.Load(name); ok {
		return v.([]byte), nil
	}
	if h.opts.FixtureDir == "" {
		return nil, errors.New("mock: fixture " + name + ": no fixture directory configured")
	}
	data, err := os.ReadFile(filepath.Join(h.opts.FixtureDir, name))
	if err != nil {
		return nil, errors.New("mock: fixture " + name + " not found in the fixture directory")
	}
	h.fixtures.Store(name, data)
	return data, nil
}

// splitEvents cuts an SSE body after each blank line ("\n\n" or "\r\n\r\n"); a tail
// without one is the last piece.
func splitEvents(data []byte) [][]byte {
	var out [][]byte
	start := 0
	for i := 0; i < len(data); i++ {
		if data[i] != '\n' {
			continue
		}
		end := -1
		switch {
		case i+1 < len(data) && data[i+1] == '\n':
			end = i + 2
		case i+2 < len(data) && data[i+1] == '\r' && data[i+2] == '\n':
			end = i + 3
		}
		if end > 0 {
			out = append(out, data[start:end])
			start, i = end, end-1
		}
	}
	if start < len(data) {
		out = append(out, data[start:])
	}
	return out
}

// writeErr sends an error answer in the dialect's JSON shape before any other byte.
func writeErr(w http.ResponseWriter, d dialect, status int, msg, retryAfter string) {
	hdr := w.Header()
	hdr.Set("Content-Type", "application/json")
	if retryAfter != "" {
		hdr.Set("Retry-After", retryAfter)
	}
	w.WriteHeader(status)
	_, _ = w.Write(d.errorBody(status, msg))
}

// flusher returns how to flush w: the plain interface when w has it, else through
// http.ResponseController for wrappers that only Unwrap.
func flusher(w http.ResponseWriter) func() error {
	if f, ok := w.(http.Flusher); ok {
		return func() error { f.Flush(); return nil }
	}
	return http.NewResponseController(w).Flush
}

// sleep waits d, or less when ctx ends first; it reports whether d elapsed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

func getBuf() *[]byte { return bufPool.Get().(*[]byte) }

func putBuf(b *[]byte) {
	if cap(*b) <= 64<<10 {
		bufPool.Put(b)
	}
}
