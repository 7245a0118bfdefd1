package gateway

import (
	"net/http"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/ralf-gateway/ralf/core/llm"
)

// framer turns canonical chunks into the bytes of one client API. Methods append to
// buf and return it; the caller writes and flushes. No allocation per chunk.
type framer interface {
	contentType() []string // a shared header value: never modify it
	// start is written once before the first delta (may be empty).
	start(buf []byte) []byte
	// delta frames one text (and, where the API has room for it, reasoning) delta.
	delta(buf []byte, c *llm.Chunk) []byte
	// end closes a successful stream (usage may be nil).
	end(buf []byte, finish string, u *llm.Usage) []byte
	// fail ends a stream whose upstream failed after the first byte.
	fail(buf []byte, status int, msg string) []byte
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// chatSSE is seed 003's framing: every line of a delta as "data: <line>", then a blank line.
type chatSSE struct{}

func (chatSSE) contentType() []string   { return ctSSE }
func (chatSSE) start(buf []byte) []byte { return buf }
func (chatSSE) delta(buf []byte, c *llm.Chunk) []byte {
	t := c.Text
	if len(t) == 0 {
		return buf
	}
	for {
		i, n := lineBreak(t)
		buf = append(buf, "data: "...)
		if i < 0 {
			buf = append(buf, t...)
			buf = append(buf, '\n')
			break
		}
		buf = append(buf, t[:i]...)
		buf = append(buf, '\n')
		t = t[i+n:]
	}
	return append(buf, '\n')
}

// lineBreak finds the first line break in t and its length: "\r\n", "\n", or a lone
// "\r", which SSE readers also take for a line's end (left inside a data line, it
// would cut off the rest of the line). A "\r" that ends t is left in the line: it may
// be the first half of a "\r\n" split across two deltas, and before the line's "\n"
// an SSE reader takes it for part of that one line end. -1 when there is none.
func lineBreak(t []byte) (int, int) {
	for i, c := range t {
		switch {
		case c == '\n':
			return i, 1
		case c == '\r' && i+1 < len(t):
			if t[i+1] == '\n' {
				return i, 2
			}
			return i, 1
		}
	}
	return -1, 0
}
func (chatSSE) end(buf []byte, _ string, _ *llm.Usage) []byte { return buf }
func (chatSSE) fail(buf []byte, status int, msg string) []byte {
	buf = append(buf, "event: error\ndata: {\"error\":"...)
	buf = appendJSONString(buf, msg)
	buf = append(buf, ",\"status\":"...)
	buf = strconv.AppendInt(buf, int64(status), 10)
	return append(buf, "}\n\n"...)
}

// chatText is seed 000's framing: the raw text deltas, nothing else.
type chatText struct{}

func (chatText) contentType() []string                         { return ctText }
func (chatText) start(buf []byte) []byte                       { return buf }
func (chatText) delta(buf []byte, c *llm.Chunk) []byte         { return append(buf, c.Text...) }
func (chatText) end(buf []byte, _ string, _ *llm.Usage) []byte { return buf }
func (chatText) fail(buf []byte, _ int, _ string) []byte       { return buf }

// openAIChunks is the OpenAI chat.completion.chunk stream.
type openAIChunks struct {
	id           string
	created      time.Time
	includeUsage bool
	prefix       []byte // `data: {"id":"...","object":"chat.completion.chunk","created":N,"model":"...","choices":`
}

// setModel fixes the model once the answering provider is known.
func (o *openAIChunks) setModel(model string) {
	p := make([]byte, 0, 128+len(o.id)+len(model))
	p = append(p, `data: {"id":`...)
	p = appendJSONString(p, o.id)
	p = append(p, `,"object":"chat.completion.chunk","created":`...)
	p = strconv.AppendInt(p, o.created.Unix(), 10)
	p = append(p, `,"model":`...)
	p = appendJSONString(p, model)
	p = append(p, `,"choices":`...)
	o.prefix = p
}

func (*openAIChunks) contentType() []string { return ctSSE }
func (o *openAIChunks) start(buf []byte) []byte {
	buf = append(buf, o.prefix...)
	return append(buf, `[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}`+"\n\n"...)
}
func (o *openAIChunks) delta(buf []byte, c *llm.Chunk) []byte {
	if len(c.Text) == 0 && len(c.Reasoning) == 0 {
		return buf
	}
	buf = append(buf, o.prefix...)
	buf = append(buf, `[{"index":0,"delta":{`...)
	if len(c.Reasoning) > 0 {
		buf = append(buf, `"reasoning_content":`...)
		buf = appendJSONBytes(buf, c.Reasoning)
		if len(c.Text) > 0 {
			buf = append(buf, ',')
		}
	}
	if len(c.Text) > 0 {
		buf = append(buf, `"content":`...)
		buf = appendJSONBytes(buf, c.Text)
	}
	return append(buf, `},"finish_reason":null}]}`+"\n\n"...)
}
func (o *openAIChunks) end(buf []byte, finish string, u *llm.Usage) []byte {
	if finish == "" {
		finish = "stop"
	}
	buf = append(buf, o.prefix...)
	buf = append(buf, `[{"index":0,"delta":{},"finish_reason":`...)
	buf = appendJSONString(buf, finish)
	buf = append(buf, "}]}\n\n"...)
	if o.includeUsage {
		buf = append(buf, o.prefix...)
		buf = append(buf, `[],"usage":`...)
		buf = appendUsage(buf, u)
		buf = append(buf, "}\n\n"...)
	}
	return append(buf, "data: [DONE]\n\n"...)
}
func (o *openAIChunks) fail(buf []byte, status int, msg string) []byte {
	buf = append(buf, `data: {"error":{"message":`...)
	buf = appendJSONString(buf, msg)
	buf = append(buf, `,"type":"api_error","code":`...)
	buf = appendJSONString(buf, codeFor(status))
	return append(buf, "}}\n\n"...)
}

func codeFor(status int) string {
	if status == http.StatusGatewayTimeout {
		return "upstream_timeout"
	}
	return "upstream_error"
}

func appendUsage(buf []byte, u *llm.Usage) []byte {
	var v llm.Usage
	if u != nil {
		v = *u
	}
	buf = append(buf, `{"prompt_tokens":`...)
	buf = strconv.AppendInt(buf, int64(v.PromptTokens), 10)
	buf = append(buf, `,"completion_tokens":`...)
	buf = strconv.AppendInt(buf, int64(v.CompletionTokens), 10)
	buf = append(buf, `,"total_tokens":`...)
	buf = strconv.AppendInt(buf, int64(v.TotalTokens), 10)
	return append(buf, '}')
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string literal, escaping as encoding/json does
// (invalid UTF-8 becomes U+FFFD, U+2028/2029 are escaped).
func appendJSONString(buf []byte, s string) []byte { return appendJSON(buf, s) }

// appendJSONBytes is appendJSONString for a byte slice, without converting it.
func appendJSONBytes(buf []byte, b []byte) []byte { return appendJSON(buf, b) }

func appendJSON[T string | []byte](buf []byte, s T) []byte {
	buf = append(buf, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			buf = append(buf, s[start:i]...)
			switch c {
			case '"', '\\':
				buf = append(buf, '\\', c)
			case '\n':
				buf = append(buf, '\\', 'n')
			case '\r':
				buf = append(buf, '\\', 'r')
			case '\t':
				buf = append(buf, '\\', 't')
			default:
				buf = append(buf, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		end := i + utf8.UTFMax
		if end > len(s) {
			end = len(s)
		}
		var tmp [utf8.UTFMax]byte
		n := copy(tmp[:], s[i:end])
		r, size := utf8.DecodeRune(tmp[:n])
		switch {
		case r == utf8.RuneError && size == 1:
			buf = append(buf, s[start:i]...)
			buf = append(buf, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			buf = append(buf, s[start:i]...)
			buf = append(buf, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	buf = append(buf, s[start:]...)
	return append(buf, '"')
}

var (
	ctSSE  = []string{"text/event-stream; charset=utf-8"}
	ctText = []string{"text/plain; charset=utf-8"}
)
