// Package mock is the built-in mock upstream: the OpenAI dialect under /v1 and the
// Gemini dialect under /v1beta, with deterministic answers and fault injection. The
// same code serves `ralf demo`, `ralf mock`, the tests and the benchmarks.
package mock

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Options configure the mock.
type Options struct {
	FixtureDir string // where fixture=NAME files are read from (../shared/fixtures/upstream)
	Chunks     int    // default number of content chunks (20)
	Logger     *zap.Logger
}

// Recorded is a request the mock received.
type Recorded struct {
	Method string
	Path   string
	Query  string
	Header http.Header
	Body   []byte
}

// Handler is the mock upstream as an http.Handler.
type Handler struct {
	opts     Options
	requests atomic.Int64
	streams  atomic.Int64
	mu       sync.Mutex
	last     Recorded
}

// New returns the mock handler.
func New(opts Options) *Handler {
	if opts.Chunks <= 0 {
		opts.Chunks = 20
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	return &Handler{opts: opts}
}

// Requests counts the chat requests received.
func (h *Handler) Requests() int64 { return h.requests.Load() }

// Streams counts the chat answers being sent right now.
func (h *Handler) Streams() int64 { return h.streams.Load() }

// LastRequest returns the most recent chat request.
func (h *Handler) LastRequest() Recorded {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.last
}

// Answer is the text the mock answers to lastUser, split into exactly chunks non-empty
// deltas, so tests can compute what a client must receive.
func Answer(lastUser string, chunks int) []string {
	if chunks <= 0 {
		chunks = 20
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
	for i := 0; i < chunks; i++ {
		out[i] = string(text[i*len(text)/chunks : (i+1)*len(text)/chunks])
	}
	return out
}

// plan is what one request asked the mock to do.
type plan struct {
	chunks     int
	delay      time.Duration
	slow       time.Duration
	status     int
	retryAfter string
	hang       bool
	hangAfter  int
	cut        int
	malformed  bool
	errorEvent int
	errorChunk int
	fixture    string
	reasoning  bool
}

// parsePlan reads directives from the model name ("mock+status=503+retry_after=2") and
// the X-Mock header ("status=503, retry_after=2"); the header wins.
func parsePlan(model, header string, defChunks int) (plan, error) {
	p := plan{chunks: defChunks, hangAfter: -1, cut: -1, errorEvent: -1, errorChunk: -1}
	items := strings.Split(model, "+")[1:]
	if header != "" {
		items = append(items, strings.FieldsFunc(header, func(r rune) bool { return r == ',' || r == ';' })...)
	}
	for _, it := range items {
		it = strings.TrimSpace(it)
		if it == "" {
			continue
		}
		k, v, _ := strings.Cut(it, "=")
		var err error
		atoi := func() int {
			n, e := strconv.Atoi(v)
			if e != nil || n < 0 {
				err = fmt.Errorf("%s needs a whole number", k)
			}
			return n
		}
		dur := func() time.Duration {
			d, e := time.ParseDuration(v)
			if e != nil {
				err = fmt.Errorf("%s needs a duration like 50ms", k)
			}
			return d
		}
		switch k {
		case "chunks":
			p.chunks = atoi()
			if p.chunks == 0 {
				p.chunks = 1
			}
		case "delay":
			p.delay = dur()
		case "slow":
			p.slow = dur()
		case "status":
			p.status = atoi()
			if err == nil && (p.status < 100 || p.status > 599) {
				err = fmt.Errorf("status must be an HTTP status")
			}
		case "retry_after":
			atoi()
			p.retryAfter = v
		case "hang":
			p.hang = true
		case "hang_after":
			p.hangAfter = atoi()
		case "cut":
			p.cut = atoi()
		case "malformed":
			p.malformed = true
		case "error_event":
			p.errorEvent = atoi()
		case "error_chunk":
			p.errorChunk = atoi()
		case "fixture":
			if v == "" || strings.ContainsAny(v, `/\`) || strings.HasPrefix(v, ".") {
				err = fmt.Errorf("fixture needs a file name")
			}
			p.fixture = v
		case "reasoning":
			p.reasoning = true
		default:
			err = fmt.Errorf("unknown mock directive %q", k)
		}
		if err != nil {
			return p, err
		}
	}
	return p, nil
}

// ServeHTTP routes the two dialects.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/v1/chat/completions" && r.Method == http.MethodPost:
		h.serveChat(w, r, openAI{})
	case r.URL.Path == "/v1/models" && r.Method == http.MethodGet:
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"object":"list","data":[{"id":"mock","object":"model","created":0,"owned_by":"ralf-mock"}]}`)
	case strings.HasPrefix(r.URL.Path, "/v1beta/models/") && r.Method == http.MethodPost:
		rest := strings.TrimPrefix(r.URL.Path, "/v1beta/models/")
		i := strings.LastIndexByte(rest, ':')
		if i < 0 {
			http.NotFound(w, r)
			return
		}
		model, method := rest[:i], rest[i+1:]
		switch method {
		case "streamGenerateContent":
			h.serveChat(w, r, gemini{model: model, stream: true})
		case "generateContent":
			h.serveChat(w, r, gemini{model: model})
		default:
			http.NotFound(w, r)
		}
	default:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"error":{"message":"mock: unknown endpoint","type":"invalid_request_error","code":404}}`)
	}
}

// dialect is one wire format of the mock.
type dialect interface {
	// parse reads the request: model, whether to stream, include usage, last user text, prompt size.
	parse(body []byte) (req, error)
	errorBody(status int, msg string) string
	start(b []byte, rq *req) []byte
	chunk(b []byte, rq *req, text string, reasoning bool) []byte
	finish(b []byte, rq *req, usage [3]int) []byte
	full(rq *req, text string, usage [3]int) []byte
	midError(b []byte, groqStyle bool) []byte
}

type req struct {
	model        string
	stream       bool
	includeUsage bool
	lastUser     string
	promptWords  int
}

func (h *Handler) serveChat(w http.ResponseWriter, r *http.Request, d dialect) {
	h.requests.Add(1)
	h.streams.Add(1)
	defer h.streams.Add(-1)
	body, err := io.ReadAll(io.LimitReader(r.Body, 8<<20))
	if err != nil {
		return
	}
	h.mu.Lock()
	h.last = Recorded{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Header: r.Header.Clone(), Body: body}
	h.mu.Unlock()

	rq, err := d.parse(body)
	if err != nil {
		writeErr(w, d, http.StatusBadRequest, err.Error(), "")
		return
	}
	p, err := parsePlan(rq.model, r.Header.Get("X-Mock"), h.opts.Chunks)
	if err != nil {
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
		h.serveFixture(w, p)
		return
	}
	if p.status >= 400 {
		writeErr(w, d, p.status, fmt.Sprintf("mock: injected status %d", p.status), p.retryAfter)
		return
	}
	tokens := Answer(rq.lastUser, p.chunks)
	completion := p.chunks
	usage := [3]int{rq.promptWords, completion, rq.promptWords + completion}
	if !rq.stream {
		w.Header().Set("Content-Type", "application/json")
		w.Write(d.full(&rq, strings.Join(tokens, ""), usage))
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	rc := http.NewResponseController(w)
	buf := make([]byte, 0, 512)
	send := func() bool {
		if _, err := w.Write(buf); err != nil {
			return false
		}
		buf = buf[:0]
		return rc.Flush() == nil
	}
	buf = d.start(buf, &rq)
	if p.reasoning {
		for i := 0; i < 3; i++ {
			buf = d.chunk(buf, &rq, fmt.Sprintf("Thinking step %d. ", i+1), true)
		}
	}
	if len(buf) > 0 && !send() {
		return
	}
	for i, tok := range tokens {
		switch {
		case i == p.cut:
			panic(http.ErrAbortHandler) // close the connection abruptly: no finish, no [DONE]
		case i == p.hangAfter:
			<-ctx.Done()
			return
		case i == p.errorEvent:
			buf = d.midError(buf, true)
			send()
			return
		case i == p.errorChunk:
			buf = d.midError(buf, false)
			send()
			return
		case i == 1 && p.malformed:
			buf = append(buf, "data: {\"choices\": [{\"delta\": {\"content\": \"oops\"\n\n"...)
		}
		buf = d.chunk(buf, &rq, tok, false)
		if !send() {
			return
		}
		if p.slow > 0 && !sleep(ctx, p.slow) {
			return
		}
	}
	if p.cut == len(tokens) {
		panic(http.ErrAbortHandler)
	}
	if p.hangAfter == len(tokens) {
		<-ctx.Done()
		return
	}
	buf = d.finish(buf, &rq, usage)
	send()
}

func (h *Handler) serveFixture(w http.ResponseWriter, p plan) {
	data, err := os.ReadFile(filepath.Join(h.opts.FixtureDir, p.fixture))
	if err != nil {
		w.WriteHeader(http.StatusInternalServerError)
		fmt.Fprintf(w, `{"error":{"message":"mock: fixture %s not found"}}`, p.fixture)
		return
	}
	if strings.HasSuffix(p.fixture, ".json") {
		w.Header().Set("Content-Type", "application/json")
	} else {
		w.Header().Set("Content-Type", "text/event-stream")
	}
	if p.retryAfter != "" {
		w.Header().Set("Retry-After", p.retryAfter)
	}
	if p.status != 0 {
		w.WriteHeader(p.status)
	}
	w.Write(data)
}

func writeErr(w http.ResponseWriter, d dialect, status int, msg, retryAfter string) {
	w.Header().Set("Content-Type", "application/json")
	if retryAfter != "" {
		w.Header().Set("Retry-After", retryAfter)
	}
	w.WriteHeader(status)
	io.WriteString(w, d.errorBody(status, msg))
}

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

func countWords(s string) int { return len(strings.Fields(s)) }

func jsonStr(b []byte, s string) []byte {
	out, _ := json.Marshal(s)
	return append(b, out...)
}

// Server is the mock listening on a TCP address.
type Server struct {
	*Handler
	srv   *http.Server
	ln    net.Listener
	conns atomic.Int64
	done  chan struct{}
}

// Start runs the mock on a free 127.0.0.1 port.
func Start(opts Options) (*Server, error) { return Listen("127.0.0.1:0", opts) }

// Listen runs the mock on addr.
func Listen(addr string, opts Options) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &Server{Handler: New(opts), ln: ln, done: make(chan struct{})}
	s.srv = &http.Server{
		Handler:           s.Handler,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          zap.NewStdLog(s.opts.Logger),
		ConnState: func(_ net.Conn, st http.ConnState) {
			switch st {
			case http.StateNew:
				s.conns.Add(1)
			case http.StateClosed, http.StateHijacked:
				s.conns.Add(-1)
			}
		},
	}
	go func() {
		defer close(s.done)
		_ = s.srv.Serve(ln)
	}()
	return s, nil
}

// URL is the mock's base URL (http://127.0.0.1:PORT).
func (s *Server) URL() string { return "http://" + s.ln.Addr().String() }

// Addr is the listening address.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// OpenConns is the number of open client connections.
func (s *Server) OpenConns() int { return int(s.conns.Load()) }

// Close closes the listener and every connection, and waits for the server to stop.
func (s *Server) Close() error {
	err := s.srv.Close()
	<-s.done
	return err
}

// Shutdown stops gracefully.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	<-s.done
	return err
}

// Run serves the mock on addr until ctx is done (`ralf mock`).
func Run(ctx context.Context, addr string, log *zap.Logger) error {
	s, err := Listen(addr, Options{Logger: log})
	if err != nil {
		return err
	}
	log.Info("mock upstream listening", zap.String("openai", s.URL()+"/v1"), zap.String("gemini", s.URL()+"/v1beta"))
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}
