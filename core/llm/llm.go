// Package llm holds the canonical chat types every dialect converts to and from,
// the Provider and Stream interfaces, and the dialect registry.
package llm

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/ralf-gateway/ralf/core/config"
)

// Message is one chat message. Content is plain text (text parts are joined by the decoder).
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
	Name    string `json:"name,omitempty"` // the participant's name (OpenAI); dialects without one drop it
}

// ChatRequest is what the gateway asks a provider for, whatever the client API was.
type ChatRequest struct {
	Messages []Message
	// Stream false asks the provider for one non-streaming completion; the Stream it
	// returns then yields a single Chunk with the whole answer.
	Stream bool
	// Model overrides the provider's configured model when non-empty (from /v1 "name/model").
	Model       string
	Temperature *float64
	TopP        *float64
	MaxTokens   *int
	// MaxCompletionTokens: the client named the limit max_completion_tokens, the
	// only name OpenAI's reasoning models accept; dialects that can send it by that
	// name do.
	MaxCompletionTokens bool
	Stop                []string
	// Extra carries other OpenAI request fields verbatim (e.g. seed, presence_penalty);
	// dialects that cannot express them ignore them.
	Extra map[string]json.RawMessage
}

// Chunk is one piece of a streamed answer. Byte slices are only valid until the next Recv.
type Chunk struct {
	Text         []byte // answer text delta; may be empty
	Reasoning    []byte // reasoning/thinking delta; never part of the answer text
	FinishReason string // "stop", "length", ... on the last content chunk, else ""
	Usage        *Usage // token usage when the upstream reported it (often the last chunk)
}

// Usage is token accounting as reported by the upstream.
type Usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

// Provider is one configured upstream.
type Provider interface {
	Name() string
	// ChatStream starts a request. An error before the first chunk is a failed attempt
	// (the gateway may try another provider); it should be an *UpstreamError when the
	// upstream answered with an HTTP error.
	ChatStream(ctx context.Context, req *ChatRequest) (Stream, error)
}

// Stream is a pull iterator over an upstream answer: no goroutine, no channel.
type Stream interface {
	// Recv returns the next chunk, io.EOF at a clean end, or an error: *UpstreamError
	// for an error the upstream reported mid-stream, io.ErrUnexpectedEOF when the
	// stream was cut before its end marker.
	Recv() (Chunk, error)
	// Close aborts the upstream request if it is still running and releases the
	// connection. After a clean end it may instead read the rest of the body in the
	// background (briefly, and bounded) so that the connection can be reused: the
	// context given to ChatStream must then stay alive. Always call it.
	Close() error
}

// WaitNotifier is implemented by streams that can say when they are about to wait
// for the network: fn runs on the Recv caller's goroutine right before any read that
// may block. The gateway then flushes once per burst of upstream data instead of once
// per chunk, which saves a write syscall per chunk without delaying anything.
type WaitNotifier interface {
	SetBeforeWait(fn func())
}

// Deps is what the gateway hands a Factory.
type Deps struct {
	// Client is shared per upstream host and kept across reloads; it has no overall
	// timeout (streams are long): use the context and cfg.Timeout.
	Client *http.Client
	Logger *zap.Logger
}

// Factory builds a Provider from its config.
type Factory func(cfg config.Provider, deps Deps) (Provider, error)

// UpstreamError is an error answer from an upstream, cleaned of secrets.
type UpstreamError struct {
	Provider   string
	Status     int           // upstream HTTP status (or the status_code inside a mid-stream error event); 0 if none
	Message    string        // upstream's message, safe to show a client (no keys, no URLs with keys)
	RetryAfter time.Duration // from Retry-After (or retryDelay), 0 when absent
	// ProviderFault: whatever its status, the answer says this provider cannot serve
	// us (a dialect knows, e.g. Gemini's 400 API_KEY_INVALID): as a 401/403, another
	// provider is tried and this one counts a failure.
	ProviderFault bool
}

func (e *UpstreamError) Error() string {
	if e.Message == "" {
		return e.Provider + ": upstream status " + itoa(e.Status)
	}
	return e.Provider + ": upstream status " + itoa(e.Status) + ": " + e.Message
}

// Retryable tells whether another provider should be tried after this answer:
// 408, 409, 429, 5xx, 401/403 (our key for that provider is bad), and 3xx (the
// provider redirects, which is never followed: its base_url is wrong).
func (e *UpstreamError) Retryable() bool {
	if e.ProviderFault {
		return true
	}
	switch s := e.Status; {
	case s == 0, s >= 300 && s < 400, s == 401, s == 403, s == 408, s == 409, s == 429, s >= 500:
		return true
	}
	return false
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	neg := n < 0
	if neg {
		n = -n
	}
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	if neg {
		i--
		b[i] = '-'
	}
	return string(b[i:])
}

// SetHeaders adds a provider's configured headers to h with their names exactly as
// written (some upstreams read them case-sensitively), each replacing a header of
// the same name in any case (the Authorization that the dialect set from api_key).
// The few that net/http handles itself keep their canonical names.
func SetHeaders(h http.Header, extra map[string]string) {
	for k, v := range extra {
		for name := range h {
			if strings.EqualFold(name, k) {
				delete(h, name)
			}
		}
		if c := http.CanonicalHeaderKey(k); goWritesItself[c] {
			k = c // net/http writes these from their canonical name, or skips them
		}
		h[k] = []string{v}
	}
}

// goWritesItself are the headers that net/http's Request.Write takes from their
// canonical names (User-Agent) or writes itself (Host, Content-Length): set under
// another case they would go out twice.
var goWritesItself = map[string]bool{"Host": true, "User-Agent": true, "Content-Length": true,
	"Transfer-Encoding": true, "Trailer": true, "Connection": true}
