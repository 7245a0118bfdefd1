// Package middleware holds the request-scoped decorators every route shares:
// panic recovery, request ids, and the access log with its per-request record.
package middleware

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/ralf-gateway/ralf/core/apierr"
	"github.com/ralf-gateway/ralf/core/store"
)

// Info is what a handler reports about one request for the access log and metrics.
// It is allocated once per request by AccessLog and filled by the handlers.
type Info struct {
	RequestID    string
	Start        time.Time
	Provider     string
	Attempts     int
	TTFB         time.Duration
	UpstreamWait time.Duration // time spent waiting on upstreams (excluded from gateway overhead)
	TokensIn     int
	TokensOut    int
	Client       string // client key name, never the key
	Err          string
	Outcome      string    // "ok", "error", "rejected", "cancelled"; derived from the status when empty
	Chat         bool      // a chat request (counted in the request metrics)
	AttemptStart time.Time // when the last upstream attempt began: the provider's latency counts from there
	Whole        bool      // a non-streaming answer: its TTFB is the whole answer's time
}

type infoKey struct{}

// InfoFrom returns the request's Info (a throwaway one if AccessLog is not installed).
func InfoFrom(ctx context.Context) *Info {
	if in, ok := ctx.Value(infoKey{}).(*Info); ok {
		return in
	}
	return &Info{}
}

var infoPool = sync.Pool{New: func() any { return new(Info) }}

// Recorder receives the finished request (metrics).
type Recorder func(in *Info, status int, dur time.Duration)

// ResponseWriter records the status and bytes written; it implements Unwrap so
// http.ResponseController can flush through it, and Flush for older callers.
type ResponseWriter struct {
	http.ResponseWriter
	Status  int
	Written int64

	// errBody is the start of an error answer's body: refusals written outside the
	// chat handlers (auth, rate limit, 404, 405, panics) report their message only
	// there, and the access log must still say why the request failed.
	errBody []byte
}

// maxErrBody bounds what is kept of an error body: our JSON errors are far shorter.
const maxErrBody = 4 << 10

// WriteHeader records the status.
func (w *ResponseWriter) WriteHeader(code int) {
	if w.Status == 0 {
		w.Status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

// Write records that the header went out.
func (w *ResponseWriter) Write(b []byte) (int, error) {
	if w.Status == 0 {
		w.Status = http.StatusOK
	}
	if w.Status >= 400 && w.errBody == nil && len(b) > 0 {
		w.errBody = append([]byte(nil), b[:min(len(b), maxErrBody)]...) // b may be reused by the caller
	}
	n, err := w.ResponseWriter.Write(b)
	w.Written += int64(n)
	return n, err
}

// Flush sends buffered data to the client.
func (w *ResponseWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		if w.Status == 0 {
			w.Status = http.StatusOK
		}
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *ResponseWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// RedactPath is a request's path as logged or quoted in an error. A managed client
// key (sk_ and hex digits) anywhere in it is redacted. So is anything after
// /admin/keys but a key id (key_ and 12 hex digits): the admin API takes a key in
// its path (DELETE /admin/keys/ID), where any key may be sent by mistake.
func RedactPath(p string) string {
	p = RedactKeys(p)
	const admin = "/admin/keys"
	i := len(p) - len(strings.TrimLeft(p, "/")) - 1 // the path proper, after extra leading slashes
	if i < 0 || len(p)-i < len(admin) || !asciiEqualFold(p[i:i+len(admin)], admin) {
		return p
	}
	head, rest := p[:i+len(admin)], p[i+len(admin):]
	if rest == "" || rest == "/" {
		return p
	}
	if id, slash := strings.CutPrefix(rest, "/"); slash {
		if store.IsKeyID(strings.TrimSuffix(id, "/")) {
			return p
		}
		return head + "/[redacted]"
	}
	return head + "[redacted]"
}

// Secrets redacts known secrets of any shape (static client keys, the master key)
// from the log: a key pasted into a path or a model name. Only from the log: an
// answer redacting them would tell a client which of its guesses is a key.
type Secrets struct{ r *strings.Replacer }

// minSecret is the shortest value redacted: shorter ones would garble common words
// in the log ("dev" in /v1/devices), and are no secret worth the name.
const minSecret = 8

// NewSecrets builds a Secrets for these values (those shorter than 8 are ignored).
func NewSecrets(values ...string) Secrets {
	var vs []string
	for _, v := range values {
		if len(v) >= minSecret {
			vs = append(vs, v)
		}
	}
	if len(vs) == 0 {
		return Secrets{}
	}
	// Longest first: a secret that holds another is redacted whole.
	sort.Slice(vs, func(i, j int) bool { return len(vs[i]) > len(vs[j]) })
	pairs := make([]string, 0, 2*len(vs))
	for _, v := range vs {
		pairs = append(pairs, v, "[redacted]")
	}
	return Secrets{strings.NewReplacer(pairs...)}
}

// Redact replaces every known secret in t.
func (s Secrets) Redact(t string) string {
	if s.r == nil {
		return t
	}
	return s.r.Replace(t)
}

// RedactKeys replaces the secret part of every managed client key in s: "sk_" at the
// start of a word, followed by 16 or more hex digits.
func RedactKeys(s string) string {
	for from := 0; ; {
		i := strings.Index(s[from:], "sk_")
		if i < 0 {
			return s
		}
		i += from
		start := i + 3
		j := start
		for j < len(s) && ('0' <= s[j] && s[j] <= '9' || 'a' <= s[j] && s[j] <= 'f') {
			j++
		}
		if j-start >= 16 && (i == 0 || !isWordByte(s[i-1])) {
			s = s[:start] + "[redacted]" + s[j:]
			j = start + len("[redacted]")
		}
		from = j
	}
}

func isWordByte(c byte) bool {
	return c == '_' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

// asciiEqualFold compares s with the ASCII lower-case t, ignoring ASCII case only:
// byte for byte, so positions in s stay valid whatever else it holds.
func asciiEqualFold(s, t string) bool {
	if len(s) != len(t) {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != t[i] {
			return false
		}
	}
	return true
}

// Recover turns a panic into a 500 JSON error and a log line (the panic value only:
// no stack trace reaches a client or a log line).
func Recover(log *zap.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			defer func() {
				if v := recover(); v != nil {
					if v == http.ErrAbortHandler {
						panic(v)
					}
					log.Error("panic in handler", zap.String("request_id", InfoFrom(r.Context()).RequestID),
						zap.String("path", RedactPath(r.URL.Path)), zap.Any("panic", v))
					if rw, ok := w.(*ResponseWriter); !ok || rw.Status == 0 {
						apierr.Write(w, r, http.StatusInternalServerError, "Internal server error")
						return
					}
					// The answer had started: cut it, so the client sees a broken
					// response rather than a complete-looking one, and log it as failed.
					in := InfoFrom(r.Context())
					in.Outcome, in.Err = "error", "internal error after the answer started"
					panic(http.ErrAbortHandler)
				}
			}()
			next.ServeHTTP(w, r)
		})
	}
}

// validRequestID accepts ids a client may send: 1-128 chars of [A-Za-z0-9._:-].
func validRequestID(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-') {
			return false
		}
	}
	return true
}

// NewRequestID returns a random 16-byte hex id.
func NewRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// AccessLog assigns the request id (keeping a well-formed incoming X-Request-Id),
// sets X-Request-Id on the response, and writes one log line per request with the
// fields of the SPEC. It never logs message content or keys.
func AccessLog(log *zap.Logger, rec Recorder, secrets Secrets) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			in := infoPool.Get().(*Info)
			*in = Info{Start: time.Now()}
			if id := r.Header.Get("X-Request-Id"); validRequestID(id) {
				in.RequestID = id
			} else {
				in.RequestID = NewRequestID()
			}
			w.Header().Set("X-Request-Id", in.RequestID)
			rw := &ResponseWriter{ResponseWriter: w}
			r = r.WithContext(context.WithValue(r.Context(), infoKey{}, in))
			defer func() {
				dur := time.Since(in.Start)
				status := rw.Status
				if status == 0 {
					status = http.StatusOK
					if r.Context().Err() != nil {
						// The client left before anything was written: it got no 200.
						status = statusClientClosed
					}
				}
				if in.Outcome == "" {
					in.Outcome = outcomeOf(status)
				}
				if in.Err == "" && status >= 400 {
					in.Err = errorMessage(rw.errBody)
				}
				if rec != nil {
					rec(in, status, dur)
				}
				lvl := zap.InfoLevel
				if status >= 500 || in.Outcome == "error" { // a stream that failed after its 200 too
					lvl = zap.WarnLevel
				}
				if ce := log.Check(lvl, "request"); ce != nil {
					fields := make([]zap.Field, 0, 14)
					fields = append(fields,
						zap.String("request_id", in.RequestID),
						zap.String("method", r.Method),
						zap.String("path", secrets.Redact(RedactPath(r.URL.Path))),
						zap.Int("status", status),
						zap.Float64("duration_ms", ms(dur)),
					)
					if in.Provider != "" {
						fields = append(fields, zap.String("provider", in.Provider))
					}
					if in.Attempts > 0 {
						fields = append(fields, zap.Int("attempts", in.Attempts))
					}
					if in.TTFB > 0 {
						fields = append(fields, zap.Float64("ttfb_ms", ms(in.TTFB)))
					}
					if in.TokensIn > 0 || in.TokensOut > 0 {
						fields = append(fields, zap.Int("tokens_in", in.TokensIn), zap.Int("tokens_out", in.TokensOut))
					}
					if in.Client != "" {
						fields = append(fields, zap.String("client", in.Client))
					}
					if in.Outcome != "ok" {
						fields = append(fields, zap.String("outcome", in.Outcome))
					}
					if in.Err != "" {
						fields = append(fields, zap.String("error", secrets.Redact(in.Err)))
					}
					ce.Write(fields...)
				}
				infoPool.Put(in)
			}()
			next.ServeHTTP(rw, r)
		})
	}
}

// errorMessage is the message of one of ralf's JSON error bodies: {"error":"msg"}
// (seed shape) or {"error":{"message":"msg"}} (OpenAI shape); "" for anything else.
// These messages are written for clients, so they hold no key and no message content.
func errorMessage(body []byte) string {
	if len(body) == 0 || body[0] != '{' {
		return ""
	}
	var v struct {
		Error json.RawMessage `json:"error"`
	}
	if json.Unmarshal(body, &v) != nil || len(v.Error) == 0 {
		return ""
	}
	var s string
	if json.Unmarshal(v.Error, &s) == nil {
		return s
	}
	var o struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(v.Error, &o) == nil {
		return o.Message
	}
	return ""
}

// statusClientClosed is logged for a request whose client left before any answer
// (nginx's 499).
const statusClientClosed = 499

func outcomeOf(status int) string {
	switch {
	case status < 400:
		return "ok"
	case status == statusClientClosed:
		return "cancelled"
	case status < 500:
		return "rejected"
	}
	return "error"
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// Chain applies middleware so that the first one listed is the outermost.
func Chain(h http.Handler, mws ...func(http.Handler) http.Handler) http.Handler {
	for i := len(mws) - 1; i >= 0; i-- {
		if mws[i] != nil {
			h = mws[i](h)
		}
	}
	return h
}
