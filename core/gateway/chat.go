package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/ralf-gateway/ralf/core/apierr"
	"github.com/ralf-gateway/ralf/core/auth"
	"github.com/ralf-gateway/ralf/core/llm"
	"github.com/ralf-gateway/ralf/core/middleware"
)

// serveChat is POST /chat (seed compatible).
func (g *Gateway) serveChat(w http.ResponseWriter, r *http.Request, s *snapshot) {
	in, body, ok := g.begin(w, r, s)
	if !ok {
		return
	}
	req, pin, he := decodeChat(body, s.cfg.Limits)
	if he != nil {
		g.reject(w, r, in, he)
		return
	}
	rt := route{pinned: -1}
	if pin != "" {
		if rt.pinned, he = s.resolveProvider(pin); he != nil {
			g.reject(w, r, in, he)
			return
		}
	}
	var fr framer = chatSSE{}
	if wantsText(r) {
		fr = chatText{}
	}
	g.complete(w, r, s, req, rt, fr, in)
}

// serveOpenAI is POST /v1/chat/completions.
func (g *Gateway) serveOpenAI(w http.ResponseWriter, r *http.Request, s *snapshot) {
	in, body, ok := g.begin(w, r, s)
	if !ok {
		return
	}
	oreq, he := decodeOpenAI(body, s.cfg.Limits)
	if he != nil {
		g.reject(w, r, in, he)
		return
	}
	rt, model, he := s.resolveModel(oreq.model)
	if he != nil {
		g.reject(w, r, in, he)
		return
	}
	oreq.req.Model = model
	var fr framer
	if oreq.req.Stream {
		fr = &openAIChunks{id: "chatcmpl-" + in.RequestID, created: time.Now(), includeUsage: oreq.includeUsage}
	}
	g.complete(w, r, s, oreq.req, rt, fr, in)
}

// begin is what both chat endpoints do first: mark the request as a chat request for
// the metrics, note the client, and read the size-limited body (answering errors).
func (g *Gateway) begin(w http.ResponseWriter, r *http.Request, s *snapshot) (*middleware.Info, []byte, bool) {
	in := middleware.InfoFrom(r.Context())
	in.Chat = true
	setClient(r, in)
	body, he := readBody(w, r, s.cfg.Server.MaxBodyBytes)
	if he != nil {
		g.reject(w, r, in, he)
		return in, nil, false
	}
	return in, body, true
}

func setClient(r *http.Request, in *middleware.Info) {
	if c, ok := auth.ClientFrom(r.Context()); ok && c.Kind != "anonymous" {
		in.Client = c.Name
	}
}

func (g *Gateway) reject(w http.ResponseWriter, r *http.Request, in *middleware.Info, he *httpError) {
	in.Err = he.msg
	in.Outcome = "rejected"
	apierr.Write(w, r, he.status, he.msg)
}

// resolveProvider finds a provider pinned by name.
func (s *snapshot) resolveProvider(name string) (int, *httpError) {
	if i, ok := s.byName[name]; ok {
		return i, nil
	}
	if s.disabled[name] {
		return -1, badRequest("provider %q is disabled (enabled: false, or its api_key is not set)", name)
	}
	return -1, badRequest("unknown provider %q; available: %s", truncate(middleware.RedactKeys(name), 40), strings.Join(s.names(), ", "))
}

// route says which providers may answer a request.
type route struct {
	pinned int    // ≥ 0: that provider only
	model  string // else, if set: the providers configured with this model, in turn (snapshot.shared)
	// else: the whole ring
}

// resolveModel maps an OpenAI "model" to a route and a model override: "", "auto" →
// the ring; a provider name or "name/model" → that provider (with the model
// overridden); else the providers whose configured model is exactly that (in turn,
// with failover, when there are several).
func (s *snapshot) resolveModel(model string) (route, string, *httpError) {
	ring := route{pinned: -1}
	if model == "" || model == "auto" {
		return ring, "", nil
	}
	if i, ok := s.byName[model]; ok {
		return route{pinned: i}, "", nil
	}
	// A configured model wins over "name/model": groq's own "groq/compound" must not
	// become provider groq with model "compound".
	if s.shared[model] != nil {
		return route{pinned: -1, model: model}, "", nil
	}
	for i, p := range s.providers {
		if p.cfg.Model == model {
			return route{pinned: i}, "", nil
		}
	}
	name, m, split := strings.Cut(model, "/")
	if split {
		if i, ok := s.byName[name]; ok {
			return route{pinned: i}, m, nil
		}
	}
	if s.disabled[model] || (split && s.disabled[name]) {
		if !s.disabled[model] {
			model = name
		}
		return ring, "", badRequest("provider %q is disabled (enabled: false, or its api_key is not set)", model)
	}
	return ring, "", &httpError{http.StatusNotFound, fmt.Sprintf("model %q not found: use \"auto\", a provider name or \"provider/model\" (see GET /v1/models)", truncate(middleware.RedactKeys(model), 80))}
}

// order lists the providers that may answer now, in the order to try them.
func (s *snapshot) order(buf []int, rt route, now time.Time) []int {
	if rt.pinned >= 0 {
		if s.providers[rt.pinned].health.Available(now) {
			return append(buf, rt.pinned)
		}
		return buf
	}
	if rt.model == "" {
		return s.ring.Order(buf, now)
	}
	// In turn over the group's available providers (so that one cooling does not
	// double its neighbour's share), apart from the ring: "auto" traffic keeps its order.
	mg := s.shared[rt.model]
	avail := buf
	for _, i := range mg.members {
		if s.providers[i].health.Available(now) {
			avail = append(avail, i)
		}
	}
	if n := len(avail); n > 1 {
		start := int((mg.next.Add(1) - 1) % uint64(n))
		slices.Reverse(avail[:start])
		slices.Reverse(avail[start:])
		slices.Reverse(avail)
	}
	return avail
}

// nextAvailable is when the first cooling provider of the route comes back (zero if none cools).
func (s *snapshot) nextAvailable(rt route, now time.Time) time.Time {
	if rt.pinned >= 0 {
		until, _ := s.providers[rt.pinned].health.CooldownUntil(now)
		return until
	}
	if rt.model == "" {
		return s.ring.NextAvailable(now)
	}
	var earliest time.Time
	for _, i := range s.shared[rt.model].members {
		if u, cooling := s.providers[i].health.CooldownUntil(now); cooling && (earliest.IsZero() || u.Before(earliest)) {
			earliest = u
		}
	}
	return earliest
}

func (s *snapshot) names() []string {
	out := make([]string, len(s.providers))
	for i, p := range s.providers {
		out[i] = p.cfg.Name
	}
	return out
}

// attemptResult is how one upstream attempt ended.
type attemptResult struct {
	committed bool  // bytes reached the client: no failover possible any more
	err       error // nil = success
	timeout   bool
	retry     bool // another provider may be tried
	status    int  // status for the client if this is the last attempt
}

// complete runs the attempts of one request: in ring order (or the pinned provider),
// failing over to the next provider until something has been sent to the client.
// fr nil means a non-streaming /v1 answer.
func (g *Gateway) complete(w http.ResponseWriter, r *http.Request, s *snapshot, req *llm.ChatRequest, rt route, fr framer, in *middleware.Info) {
	now := time.Now()
	var orderBuf [16]int
	order := s.order(orderBuf[:0], rt, now)
	if len(order) == 0 {
		g.unavailable(w, r, s, in, rt, now)
		return
	}
	max := s.cfg.Routing.MaxAttempts
	if len(order) < max {
		max = len(order)
	}
	var failures []string
	var res attemptResult
	allTimedOut := true
	for i := 0; i < max; i++ {
		p := &s.providers[order[i]]
		in.Attempts++
		in.Provider = p.cfg.Name
		res = g.attempt(w, r, s, p, req, fr, in)
		if res.committed || res.err == nil {
			if res.err != nil && in.Outcome == "" {
				// The stream broke after its first byte: the client got an error
				// event, so the access line and the metrics must not say "ok".
				in.Outcome, in.Err = "error", res.err.Error()
				if clientLeft(r) {
					in.Outcome, in.Err = "cancelled", "client closed the connection"
				}
			}
			return
		}
		if clientLeft(r) {
			in.Outcome, in.Err = "cancelled", "client closed the connection"
			return
		}
		if shuttingDown(r) {
			in.Outcome, in.Err = "error", res.err.Error()
			apierr.Write(w, r, res.status, in.Err)
			return
		}
		failures = append(failures, res.err.Error())
		allTimedOut = allTimedOut && res.timeout
		if !res.retry {
			break
		}
		if i+1 < max {
			g.m.Failover(p.cfg.Name)
			g.log.Debug("failing over", zap.String("request_id", in.RequestID), zap.String("provider", p.cfg.Name), zap.Error(res.err))
		}
	}
	in.Outcome = "error"
	msg, status := res.err.Error(), res.status
	if len(failures) > 1 {
		msg = fmt.Sprintf("all %d attempts failed: %s", len(failures), strings.Join(failures, "; "))
		// 504 only when every attempt timed out, whatever the order they failed in.
		status = http.StatusBadGateway
		if allTimedOut {
			status = http.StatusGatewayTimeout
		}
	}
	in.Err = msg
	if !res.retry {
		// The upstream refused the request itself: its answer, and asking again would
		// get the same. OpenAI's SDKs retry a 502 unless told not to. For a model the
		// client chose, the request was at fault: rejected, not the provider's error.
		// (For the configured model it may be the provider's: a model retired upstream.)
		if req.Model != "" {
			in.Outcome = "rejected"
		}
		w.Header()["X-Provider"] = s.providers[order[len(failures)-1]].xname
		w.Header().Set("X-Should-Retry", "false")
	} else if ra := s.nextAvailable(rt, time.Now()); !ra.IsZero() {
		w.Header().Set("Retry-After", retryAfter(ra.Sub(time.Now())))
	}
	apierr.Write(w, r, status, msg)
}

func (g *Gateway) unavailable(w http.ResponseWriter, r *http.Request, s *snapshot, in *middleware.Info, rt route, now time.Time) {
	in.Outcome = "error"
	if s.ring.Len() == 0 {
		in.Err = "no provider is enabled: set a provider's api_key (see /health)"
		apierr.Write(w, r, http.StatusServiceUnavailable, in.Err)
		return
	}
	switch {
	case rt.pinned >= 0:
		in.Err = fmt.Sprintf("provider %s is cooling down after repeated failures; retry later", s.providers[rt.pinned].cfg.Name)
	case rt.model != "":
		in.Err = fmt.Sprintf("all providers of model %s are cooling down after repeated failures; retry later", rt.model)
	default:
		in.Err = "all providers are cooling down after repeated failures; retry later"
	}
	w.Header().Set("Retry-After", retryAfter(s.nextAvailable(rt, now).Sub(now)))
	apierr.Write(w, r, http.StatusServiceUnavailable, in.Err)
}

func retryAfter(d time.Duration) string {
	return strconv.Itoa(int(math.Max(1, math.Ceil(d.Seconds()))))
}

// receiver pulls chunks from an upstream stream and keeps what every relay needs:
// the time spent waiting on the upstream, the time to the first token, the idle
// timer, and the last usage and finish reason seen.
type receiver struct {
	st       llm.Stream
	in       *middleware.Info
	timer    *time.Timer
	idle     time.Duration
	first    time.Duration // the first-byte budget: the provider's timeout for a non-streaming answer
	timedOut *atomic.Bool  // set when timer fired
	deadline time.Time     // when the provider's own timeout ends its request (zero: none)
	override bool          // the client chose the model ("name/model")
	started  bool
	c        llm.Chunk // one chunk for the whole stream: framers take its address
	usage    llm.Usage
	hasUsage bool
	finish   string
}

// next returns the next chunk, valid until the following call; io.EOF at a clean end.
// The idle timer runs only while waiting on the upstream: time spent writing to a
// slow client is not the provider's silence.
func (rv *receiver) next() (*llm.Chunk, error) {
	if rv.started {
		rv.timer.Reset(rv.idle)
	}
	t := time.Now()
	c, err := rv.st.Recv()
	rv.in.UpstreamWait += time.Since(t)
	if err != nil {
		return nil, err
	}
	rv.timer.Stop()
	rv.started = true
	rv.c = c
	if c.Usage != nil {
		rv.usage, rv.hasUsage = *c.Usage, true
	}
	if c.FinishReason != "" {
		rv.finish = c.FinishReason
	}
	return &rv.c, nil
}

// done records a clean end of the upstream stream and returns its usage (nil if none).
func (g *Gateway) done(p *provider, rv *receiver) *llm.Usage {
	rv.timer.Stop()
	if !rv.override { // a model the client chose says nothing of the configured one's health
		p.health.Success()
	}
	g.m.Attempt(p.cfg.Name, "ok")
	if !rv.hasUsage {
		return nil
	}
	rv.in.TokensIn, rv.in.TokensOut = rv.usage.PromptTokens, rv.usage.CompletionTokens
	return &rv.usage
}

// attempt sends the request to one provider and relays its answer.
func (g *Gateway) attempt(w http.ResponseWriter, r *http.Request, s *snapshot, p *provider, req *llm.ChatRequest, fr framer, in *middleware.Info) attemptResult {
	rt := &s.cfg.Routing
	// The upstream request ends with the attempt, when the client leaves, or when a
	// timer fires; after a clean answer, though, it is left to the stream's Close,
	// which may read the end of the upstream body in the background so that the
	// connection is reused without holding up the client's last bytes.
	ctx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
	stop := context.AfterFunc(r.Context(), cancel)
	clean := false // set on the success returns only: an error or a panic cancels
	defer func() {
		stop()
		if !clean {
			cancel()
		}
	}()
	var timedOut atomic.Bool
	// One timer guards the first byte, then each gap between upstream bytes. A
	// non-streaming upstream sends nothing until its whole answer is ready, so there
	// the provider's own timeout is the bound.
	first := rt.FirstByteTimeout
	if !req.Stream && p.cfg.Timeout > first {
		first = p.cfg.Timeout
	}
	timer := time.AfterFunc(first, func() { timedOut.Store(true); cancel() })
	defer timer.Stop()

	t0 := time.Now()
	in.AttemptStart = t0
	rv := &receiver{in: in, timer: timer, idle: rt.IdleTimeout, first: first, timedOut: &timedOut, override: req.Model != ""}
	if p.cfg.Timeout > 0 {
		rv.deadline = t0.Add(p.cfg.Timeout)
	}
	st, err := p.p.ChatStream(ctx, req)
	in.UpstreamWait += time.Since(t0)
	if err != nil {
		return g.failed(r, s, p, rv, err)
	}
	defer st.Close()
	rv.st = st

	// With a stream that says when it is about to wait for the network, flush then:
	// one write per burst of upstream data instead of one per chunk.
	var rc *http.ResponseController
	wd := &writeDeadline{}
	dirty := false
	wn, coalesce := st.(llm.WaitNotifier)
	if coalesce {
		wn.SetBeforeWait(func() {
			if dirty {
				dirty = false
				// A client that does not read blocks this flush: that time is not
				// the upstream's silence, so the idle timer pauses meanwhile.
				rv.timer.Stop()
				_ = rc.Flush() // the deadline was moved ahead by the write just before
			}
			// Bytes came since the last wait, perhaps only keep-alive comments that
			// Recv skips: the upstream is not silent.
			if rv.started {
				rv.timer.Reset(rv.idle)
			}
		})
	}
	if fr == nil {
		res := g.collect(w, r, s, p, req, rv)
		clean = res.err == nil
		return res
	}

	bp := bufPool.Get().(*[]byte)
	buf := (*bp)[:0]
	defer func() { *bp = buf[:0]; bufPool.Put(bp) }()
	rc = http.NewResponseController(w)
	wd.rc = rc
	committed := false
	for {
		c, err := rv.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			res := g.failed(r, s, p, rv, err)
			if !committed {
				return res
			}
			if !clientLeft(r) {
				buf = fr.fail(buf[:0], res.status, res.err.Error())
				wd.extend()
				_, _ = w.Write(buf)
				_ = rc.Flush()
				if _, text := fr.(chatText); text {
					// Raw text has no room for an error event: end the response without
					// its terminating chunk, so the client sees a cut stream, never a
					// complete-looking answer. Deferred cleanup and the access log still run.
					in.Outcome, in.Err = "error", res.err.Error()
					panic(http.ErrAbortHandler)
				}
			}
			res.committed = true
			return res
		}
		buf = buf[:0]
		if !committed {
			if !hasOutput(fr, c) {
				continue
			}
			committed = true
			g.commit(w, fr, p, req, in)
			g.m.StreamStart()
			defer g.m.StreamEnd()
			buf = fr.start(buf)
		}
		buf = fr.delta(buf, c)
		if len(buf) == 0 {
			continue
		}
		// Before each write: after a long upstream silence a burst may write through at once.
		wd.extend()
		if _, werr := w.Write(buf); werr != nil {
			g.m.Attempt(p.cfg.Name, "cancelled")
			in.Outcome, in.Err = "cancelled", clientGone(werr)
			return attemptResult{committed: true, err: werr}
		}
		if coalesce {
			dirty = true
			continue
		}
		if ferr := rc.Flush(); ferr != nil {
			g.m.Attempt(p.cfg.Name, "cancelled")
			in.Outcome, in.Err = "cancelled", clientGone(ferr)
			return attemptResult{committed: true, err: ferr}
		}
	}
	usage := g.done(p, rv)
	if !committed && emptyAnswerIsAnError(fr, rv.finish) {
		// /chat has no room for a finish reason: an empty 200 would look like an answer
		// of nothing. (/v1 clients read finish_reason.)
		msg := fmt.Sprintf("provider %s sent an empty answer: %s", p.cfg.Name, emptyReason(rv.finish))
		in.Outcome, in.Err = "error", msg
		w.Header()["X-Provider"] = p.xname
		apierr.Write(w, r, http.StatusBadGateway, msg)
		clean = true
		return attemptResult{committed: true}
	}
	buf = buf[:0]
	wd.extend() // for the end, written when the handler returns (the head too, if uncommitted)
	if !committed {
		g.commit(w, fr, p, req, in)
		g.m.StreamStart()
		defer g.m.StreamEnd()
		buf = fr.start(buf)
	}
	buf = fr.end(buf, rv.finish, usage)
	if len(buf) > 0 {
		_, _ = w.Write(buf)
	}
	// No flush: the server sends what is buffered with the end of the response when
	// the handler returns, in one write.
	clean = true
	return attemptResult{committed: true}
}

// clientWriteTimeout bounds how long a client may take none of its answer: one that
// stops reading is dropped then, freeing its handler and the upstream request.
var clientWriteTimeout = 2 * time.Minute

// writeDeadline keeps a write deadline on the client's connection, moved ahead only
// once half of it is used, so that a stream's writes seldom touch a timer. It also
// bounds the answer's last write; net/http clears it once the answer is written.
type writeDeadline struct {
	rc    *http.ResponseController
	until time.Time
}

func (d *writeDeadline) extend() {
	if now := time.Now(); d.until.Sub(now) < clientWriteTimeout/2 {
		d.until = now.Add(clientWriteTimeout)
		_ = d.rc.SetWriteDeadline(d.until)
	}
}

// emptyAnswerIsAnError: a /chat answer with no text that the provider cut short.
func emptyAnswerIsAnError(fr framer, finish string) bool {
	switch fr.(type) {
	case chatSSE, chatText:
		return finish == "content_filter" || finish == "length"
	}
	return false
}

func emptyReason(finish string) string {
	if finish == "length" {
		return "the token limit (max_tokens) was reached before any text (thinking models spend tokens on reasoning first)"
	}
	return "its content filter stopped it (finish reason content_filter)"
}

// ErrShuttingDown is the cause the server's base context (http.Server.BaseContext) is
// cancelled with when the shutdown timeout is reached: the requests still running end
// with this error, sent to the client (an error event once streaming), instead of
// being cut as if the client had left.
var ErrShuttingDown = errors.New("the gateway is shutting down")

// shuttingDown says whether r's context was ended by ErrShuttingDown.
func shuttingDown(r *http.Request) bool {
	return r.Context().Err() != nil && errors.Is(context.Cause(r.Context()), ErrShuttingDown)
}

// clientLeft says whether r's context ended because the client went away.
func clientLeft(r *http.Request) bool {
	return r.Context().Err() != nil && !shuttingDown(r)
}

// clientGone says why a write to the client failed.
func clientGone(err error) string {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Sprintf("client took none of the answer for %s", clientWriteTimeout)
	}
	return "client closed the connection"
}

func hasOutput(fr framer, c *llm.Chunk) bool {
	if len(c.Text) > 0 {
		return true
	}
	_, v1 := fr.(*openAIChunks)
	return v1 && len(c.Reasoning) > 0
}

var (
	noCache = []string{"no-cache"}
	no      = []string{"no"}
	nosniff = []string{"nosniff"}
)

// commit sends the answer's head: the first byte of the answer, for ttfb.
func (g *Gateway) commit(w http.ResponseWriter, fr framer, p *provider, req *llm.ChatRequest, in *middleware.Info) {
	in.TTFB = time.Since(in.Start)
	// The values are shared slices, never modified: no allocation per response.
	h := w.Header()
	h["Content-Type"] = fr.contentType()
	h["Cache-Control"] = noCache
	h["X-Accel-Buffering"] = no
	h["X-Content-Type-Options"] = nosniff
	h["X-Provider"] = p.xname
	if o, ok := fr.(*openAIChunks); ok {
		o.setModel(p.model(req.Model))
	}
	w.WriteHeader(http.StatusOK)
}

// collect reads a whole answer for a non-streaming /v1 request; nothing is sent
// before it is complete, so any failure can still fail over.
func (g *Gateway) collect(w http.ResponseWriter, r *http.Request, s *snapshot, p *provider, req *llm.ChatRequest, rv *receiver) attemptResult {
	var text, reasoning strings.Builder
	for {
		c, err := rv.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return g.failed(r, s, p, rv, err)
		}
		text.Write(c.Text)
		reasoning.Write(c.Reasoning)
	}
	usage := g.done(p, rv)
	if usage == nil {
		usage = &llm.Usage{}
	}
	finish := rv.finish
	if finish == "" {
		finish = "stop"
	}
	msg := map[string]any{"role": "assistant", "content": text.String()}
	if reasoning.Len() > 0 {
		msg["reasoning_content"] = reasoning.String()
	}
	w.Header().Set("X-Provider", p.cfg.Name)
	(&writeDeadline{rc: http.NewResponseController(w)}).extend()
	rv.in.TTFB = time.Since(rv.in.Start) // the whole answer is its first byte
	rv.in.Whole = true
	writeJSON(w, http.StatusOK, map[string]any{
		"id":      "chatcmpl-" + rv.in.RequestID,
		"object":  "chat.completion",
		"created": time.Now().Unix(),
		"model":   p.model(req.Model),
		"choices": []any{map[string]any{"index": 0, "message": msg, "finish_reason": finish}},
		"usage":   usage,
	})
	return attemptResult{committed: true}
}

// failed classifies an attempt's error, updates the provider's health and metrics,
// and says whether another provider may be tried.
func (g *Gateway) failed(r *http.Request, s *snapshot, p *provider, rv *receiver, err error) attemptResult {
	name, in, timedOut, started := p.cfg.Name, rv.in, rv.timedOut.Load(), rv.started
	if r.Context().Err() != nil {
		// The client left, or the shutdown timeout ended the request: whatever else
		// happened, it is not the provider's fault.
		g.m.Attempt(name, "cancelled")
		if shuttingDown(r) {
			return attemptResult{err: ErrShuttingDown, status: http.StatusServiceUnavailable}
		}
		return attemptResult{err: fmt.Errorf("%s: client closed the connection", name), status: 499}
	}
	res := attemptResult{err: err, retry: true, status: http.StatusBadGateway}
	var ue *llm.UpstreamError
	var retryAfterD time.Duration
	// The provider's own timeout ends its request with the context's deadline; for a
	// non-streaming answer it is also the first-byte budget, whichever fires first.
	// (A dial timeout is a DeadlineExceeded too, long before that deadline.)
	providerTimeout := (timedOut && !started && rv.first != s.cfg.Routing.FirstByteTimeout) ||
		(!timedOut && errors.Is(err, context.DeadlineExceeded) && !rv.deadline.IsZero() && !time.Now().Before(rv.deadline))
	switch {
	case providerTimeout:
		res.timeout, res.status = true, http.StatusGatewayTimeout
		res.err = fmt.Errorf("%s: no complete answer within the provider's timeout (%s)", name, p.cfg.Timeout)
	case timedOut && !started:
		res.timeout, res.status = true, http.StatusGatewayTimeout
		res.err = fmt.Errorf("%s: no response within first_byte_timeout (%s)", name, s.cfg.Routing.FirstByteTimeout)
	case timedOut:
		res.timeout, res.status = true, http.StatusGatewayTimeout
		res.err = fmt.Errorf("%s: upstream sent nothing for %s", name, s.cfg.Routing.IdleTimeout)
	case errors.As(err, &ue):
		retryAfterD = ue.RetryAfter
		if !ue.Retryable() {
			// The request itself was refused: another provider would likely refuse it
			// too, and it says nothing about this provider's health.
			g.m.Attempt(name, "rejected")
			res.retry = false
			res.err = fmt.Errorf("provider %s rejected the request (status %d): %s", name, ue.Status, ue.Message)
			return res
		}
		if ue.Message == "" {
			res.err = fmt.Errorf("%s: upstream status %d", name, ue.Status)
		} else {
			res.err = fmt.Errorf("%s: upstream status %d: %s", name, ue.Status, ue.Message)
		}
	case errors.Is(err, io.ErrUnexpectedEOF):
		res.err = fmt.Errorf("%s: upstream stream ended unexpectedly", name)
	default:
		res.err = fmt.Errorf("%s: %w", name, stripName(err, name))
	}
	outcome := "error"
	if res.timeout {
		outcome = "timeout"
	}
	g.m.Attempt(name, outcome)
	now := time.Now()
	// The provider's timeout ending a stream that had started is no sign of ill health:
	// a long answer, or a client too slow to take it (while ralf waits on the client,
	// the upstream waits on ralf), runs into it. Counting it would let slow clients
	// put healthy providers in cooldown.
	if providerTimeout && started {
		return res
	}
	// A model the client chose ("name/model") failing says nothing about the provider's
	// configured one: counting it would let one client put a provider in cooldown (a
	// 429 with a Retry-After of hours) for everybody.
	if rv.override {
		return res
	}
	if p.health.Failure(now, s.cfg.Routing.FailureThreshold, s.cfg.Routing.Cooldown, retryAfterD) {
		until, _ := p.health.CooldownUntil(now)
		g.log.Warn("provider cooling down", zap.String("provider", name), zap.Time("until", until), zap.String("reason", res.err.Error()))
	}
	if started && g.log.Core().Enabled(zap.DebugLevel) {
		g.log.Debug("upstream attempt failed", zap.String("request_id", in.RequestID), zap.String("provider", name), zap.Error(res.err))
	}
	return res
}

// stripName avoids "groq: groq: ..." when a plugin already prefixed its name.
func stripName(err error, name string) error {
	if msg := err.Error(); strings.HasPrefix(msg, name+": ") {
		return errors.New(strings.TrimPrefix(msg, name+": "))
	}
	return err
}

// model is the model name answers report: the override, else the provider's.
func (p *provider) model(override string) string {
	if override != "" {
		return override
	}
	return p.cfg.Model
}
