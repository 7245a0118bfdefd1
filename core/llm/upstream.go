package llm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Helpers shared by dialect plugins for talking to HTTP upstreams safely.

const redacted = "[redacted]"

// maxRetryAfter caps an upstream's retry hint so a bogus value cannot take a
// provider out of the ring for days.
const maxRetryAfter = 24 * time.Hour

// Key-like tokens: OpenAI/OpenRouter sk-..., Groq gsk_..., Cerebras csk-..., our own
// sk_..., Hugging Face hf_..., Google AIza..., bearer tokens and key=... URL params.
var (
	reKeyToken = regexp.MustCompile(`\b(?:sk|gsk|csk|rk|pk)[-_][A-Za-z0-9_\-]{3,}|\bhf_[A-Za-z0-9]{8,}|\bAIza[0-9A-Za-z_\-]{10,}`)
	reBearer   = regexp.MustCompile(`(?i)\bbearer\s+[A-Za-z0-9._~+/=\-]+`)
	reKeyParam = regexp.MustCompile(`(?i)\b((?:api[_-]?)?key|(?:access_)?token|secret|password)=[^&\s"'<>]+`)
)

// Sanitize makes an upstream message safe for clients and logs: the provider's key and
// anything shaped like a key are redacted, white space is folded (the message ends up
// in one log line), and the result is bounded to max bytes (on a rune boundary).
func Sanitize(msg, apiKey string, max int) string {
	return SanitizeSecrets(msg, []string{apiKey}, max)
}

// SanitizeSecrets is Sanitize for a provider with several secrets (see Secrets).
func SanitizeSecrets(msg string, secrets []string, max int) string {
	for _, k := range secrets {
		if k != "" {
			msg = strings.ReplaceAll(msg, k, redacted)
			msg = redactCutKey(msg, k)
		}
	}
	msg = strings.Join(strings.Fields(msg), " ")
	if max > 0 && len(msg) > 4*max {
		// Only the start can be shown: the key patterns below need not scan a whole
		// error page. A token cut here lies past the final bound.
		msg = msg[:runeStart(msg, 4*max)]
	}
	msg = reKeyToken.ReplaceAllString(msg, redacted)
	msg = reBearer.ReplaceAllString(msg, "Bearer "+redacted)
	msg = reKeyParam.ReplaceAllString(msg, "${1}="+redacted)
	msg = strings.Join(strings.Fields(msg), " ")
	if max > 0 && len(msg) > max {
		msg = msg[:runeStart(msg, max-len("…"))] + "…"
	}
	return msg
}

// runeStart is the largest i <= n where a rune of s starts (s longer than n).
func runeStart(s string, n int) int {
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return n
}

// Secrets lists what a provider's error messages must never show: its API key, and
// the values of its configured headers (an Azure api-key, a proxy's token; also the
// token alone of an "Authorization: Bearer ..." value), except headers known to hold
// no secret and values too short to be one. Longest first, so that a secret holding
// another is redacted whole.
func Secrets(apiKey string, headers map[string]string) []string {
	const minSecret = 8
	out := []string{apiKey}
	add := func(v string) {
		if v = strings.TrimSpace(v); len(v) >= minSecret && v != apiKey {
			out = append(out, v)
		}
	}
	for name, v := range headers {
		switch strings.ToLower(name) {
		case "content-type", "accept", "user-agent", "http-referer", "referer", "x-title", "openai-beta", "anthropic-version":
			continue
		}
		add(v)
		if _, tok, ok := strings.Cut(strings.TrimSpace(v), " "); ok {
			add(tok)
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

// redactCutKey redacts the start of the key where msg ends with it: a body cut when
// it was read may end inside an echoed key.
func redactCutKey(msg, key string) string {
	const minPart = 4
	for n := min(len(key)-1, len(msg)); n >= minPart; n-- {
		if strings.HasSuffix(msg, key[:n]) {
			return msg[:len(msg)-n] + redacted
		}
	}
	return msg
}

// RetryAfter reads Retry-After (delay seconds or HTTP date) or, on 429, the
// X-RateLimit-Reset header (epoch milliseconds as OpenRouter sends, epoch seconds, or
// seconds from now). Dates are compared with the answer's own Date header when
// present, so a skewed local clock does not matter. 0 when absent; capped at 24h.
func RetryAfter(h http.Header, status int, now time.Time) time.Duration {
	ref := now
	if d, err := http.ParseTime(h.Get("Date")); err == nil {
		ref = d
	}
	var d time.Duration
	if v := strings.TrimSpace(h.Get("Retry-After")); v != "" {
		if secs, err := strconv.ParseFloat(v, 64); err == nil {
			d = time.Duration(secs * float64(time.Second))
		} else if t, err := http.ParseTime(v); err == nil {
			d = t.Sub(ref)
		}
	} else if v := strings.TrimSpace(h.Get("X-RateLimit-Reset")); v != "" && status == http.StatusTooManyRequests {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			switch {
			case n > 1e12: // epoch milliseconds (OpenRouter)
				d = time.UnixMilli(n).Sub(ref)
			case n > 1e9: // epoch seconds
				d = time.Unix(n, 0).Sub(ref)
			default: // seconds from now
				d = time.Duration(n) * time.Second
			}
		}
	}
	switch {
	case d < 0:
		return 0
	case d > maxRetryAfter:
		return maxRetryAfter
	}
	return d
}

// TransportError wraps a client.Do error without the request URL (which could carry
// a key in some dialects) and keeps context errors recognisable.
func TransportError(provider string, err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: request cancelled: %w", provider, err)
	}
	return fmt.Errorf("%s: connection failed: %s", provider, Sanitize(err.Error(), "", 300))
}

// ReadError reads a bounded error body and closes it.
func ReadError(resp *http.Response) []byte {
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return b
}

// Single is a Stream of one chunk, for non-streaming answers.
func Single(c Chunk) Stream { return &single{c: c} }

type single struct {
	c    Chunk
	done bool
}

func (s *single) Recv() (Chunk, error) {
	if s.done {
		return Chunk{}, io.EOF
	}
	s.done = true
	return s.c, nil
}

func (s *single) Close() error { return nil }

// ReqCtx applies a provider's whole-request timeout; cancel must be called when the
// request and its body are done.
func ReqCtx(ctx context.Context, timeout time.Duration) (context.Context, context.CancelFunc) {
	if timeout <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, timeout)
}
