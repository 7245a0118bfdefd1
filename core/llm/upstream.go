package llm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Helpers shared by dialect plugins for talking to HTTP upstreams safely.

var secretPatterns = regexp.MustCompile(`(?i)(sk-[a-z0-9_\-]{6,}|sk_[a-z0-9]{8,}|AIza[0-9a-z_\-]{10,}|hf_[a-z0-9]{8,}|gsk_[a-z0-9]{8,}|csk-[a-z0-9]{8,}|bearer\s+[^\s"',]+|([?&]|\b)key=[^&\s"',]+)`)

// Sanitize makes an upstream message safe for clients and logs: the provider's key and
// anything shaped like a key are redacted, whitespace is folded, and the result is
// bounded to max bytes (on a rune boundary).
func Sanitize(msg, apiKey string, max int) string {
	if apiKey != "" {
		msg = strings.ReplaceAll(msg, apiKey, "[redacted]")
	}
	msg = secretPatterns.ReplaceAllString(msg, "[redacted]")
	msg = strings.Join(strings.Fields(msg), " ")
	if max > 0 && len(msg) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(msg[cut]) {
			cut--
		}
		msg = msg[:cut] + "…"
	}
	return msg
}

// RetryAfter reads Retry-After (seconds or an HTTP date) and, for 429s, the
// X-RateLimit-Reset epoch-milliseconds header OpenRouter sends. 0 when absent.
func RetryAfter(h http.Header, status int, now time.Time) time.Duration {
	if v := strings.TrimSpace(h.Get("Retry-After")); v != "" {
		if s, err := strconv.ParseFloat(v, 64); err == nil && s > 0 {
			return time.Duration(s * float64(time.Second))
		}
		if t, err := http.ParseTime(v); err == nil && t.After(now) {
			return t.Sub(now)
		}
	}
	if status == http.StatusTooManyRequests {
		if v := h.Get("X-RateLimit-Reset"); v != "" {
			if ms, err := strconv.ParseInt(v, 10, 64); err == nil && ms > 1e12 {
				if t := time.UnixMilli(ms); t.After(now) && t.Sub(now) < 24*time.Hour {
					return t.Sub(now)
				}
			}
		}
	}
	return 0
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
