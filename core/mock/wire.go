package mock

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
)

// req is what the mock reads from a chat request.
type req struct {
	model        string
	modelJSON    []byte // model as a JSON string, shared through the answer cache
	stream       bool
	includeUsage bool
	lastUser     string
	promptWords  int
}

// usage is the token count the mock reports: prompt words in, one token per chunk out.
type usage struct{ prompt, completion int }

// dialect is one wire format of the mock.
type dialect interface {
	id() byte
	parse(body []byte) (req, error)
	errorBody(status int, msg string) []byte
	// head is what comes before the first content chunk (role delta, reasoning).
	head(b []byte, rq *req, reasoning []string) []byte
	chunk(b []byte, rq *req, text string) []byte
	malformed() []byte
	// mergesFinish reports whether the finish rides on the last content event.
	mergesFinish() bool
	// finish ends a complete stream; last is the last content delta when merged.
	finish(b []byte, rq *req, last *string, u usage) []byte
	full(b []byte, rq *req, text string, u usage) []byte
	midError(b []byte, groqStyle bool) []byte
}

// encoded is one answer's events, encoded once and reused by every request that
// asks the same thing (benchmarks send thousands of identical requests).
type encoded struct {
	head      []byte
	chunks    [][]byte
	texts     []string
	text      string
	malformed []byte
	modelJSON []byte
}

type cacheKey struct {
	dialect   byte
	model     string
	said      string
	chunks    int
	reasoning bool
}

// maxCached bounds the cache; it starts over when full, which is cheap and keeps
// memory flat for clients that never repeat themselves. Answers of more than
// maxCachedChunks are not kept: 1024 of chunks=100000 would be gigabytes.
const (
	maxCached       = 1024
	maxCachedChunks = 1000
)

type answerCache struct {
	mu sync.RWMutex
	m  map[cacheKey]*encoded
}

func (c *answerCache) get(d dialect, rq *req, chunks int, reasoning bool) *encoded {
	said := rq.lastUser
	if len(said) > 60*4 { // at most 60 runes of 4 bytes count
		said = said[:60*4]
	}
	k := cacheKey{d.id(), rq.model, said, chunks, reasoning}
	c.mu.RLock()
	e := c.m[k]
	c.mu.RUnlock()
	if e != nil {
		rq.modelJSON = e.modelJSON
		return e
	}
	e = &encoded{texts: Answer(rq.lastUser, chunks), malformed: d.malformed(), modelJSON: appendJSONString(nil, rq.model)}
	rq.modelJSON = e.modelJSON
	e.text = strings.Join(e.texts, "")
	var rs []string
	if reasoning {
		rs = reasoningDeltas
	}
	e.head = d.head(nil, rq, rs)
	e.chunks = make([][]byte, len(e.texts))
	for i, t := range e.texts {
		e.chunks[i] = d.chunk(nil, rq, t)
	}
	if chunks > maxCachedChunks {
		return e
	}
	c.mu.Lock()
	if c.m == nil || len(c.m) >= maxCached {
		c.m = make(map[cacheKey]*encoded)
	}
	c.m[k] = e
	c.mu.Unlock()
	return e
}

func countWords(s string) int {
	n, in := 0, false
	for i := 0; i < len(s); i++ {
		sp := s[i] == ' ' || s[i] == '\n' || s[i] == '\t' || s[i] == '\r'
		if !sp && !in {
			n++
		}
		in = !sp
	}
	return n
}

// appendModel appends the request's model as a JSON string.
func appendModel(b []byte, rq *req) []byte {
	if rq.modelJSON != nil {
		return append(b, rq.modelJSON...)
	}
	return appendJSONString(b, rq.model)
}

func appendJSONString(b []byte, s string) []byte {
	out, _ := json.Marshal(s)
	return append(b, out...)
}

// textOf reads OpenAI message content: a string, text parts, or null.
func textOf(raw json.RawMessage) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	if raw[0] == '"' {
		if bytes.IndexByte(raw, '\\') < 0 {
			return string(raw[1 : len(raw)-1]), nil // valid JSON (checked by the decoder) without escapes
		}
		var s string
		err := json.Unmarshal(raw, &s)
		return s, err
	}
	var parts []struct {
		Type string  `json:"type"`
		Text *string `json:"text"`
	}
	if err := json.Unmarshal(raw, &parts); err != nil {
		return "", errors.New("content must be a string or an array of content parts")
	}
	var sb strings.Builder
	for _, p := range parts {
		if p.Type == "text" && p.Text != nil {
			sb.WriteString(*p.Text)
		}
	}
	return sb.String(), nil
}

// openAI is the OpenAI chat completions wire format.
type openAI struct{}

func (openAI) id() byte { return 'o' }

func (openAI) parse(body []byte) (req, error) {
	var b struct {
		Model    string `json:"model"`
		Stream   bool   `json:"stream"`
		Messages []struct {
			Role    string          `json:"role"`
			Content json.RawMessage `json:"content"`
		} `json:"messages"`
		StreamOptions *struct {
			IncludeUsage bool `json:"include_usage"`
		} `json:"stream_options"`
	}
	if err := json.Unmarshal(body, &b); err != nil {
		return req{}, fmt.Errorf("mock: invalid JSON body: %w", err)
	}
	if len(b.Messages) == 0 {
		return req{}, errors.New("mock: messages must be a non-empty array")
	}
	rq := req{model: b.Model, stream: b.Stream, includeUsage: b.StreamOptions != nil && b.StreamOptions.IncludeUsage}
	for i, m := range b.Messages {
		if m.Role == "" {
			return req{}, fmt.Errorf("mock: messages[%d].role is missing", i)
		}
		text, err := textOf(m.Content)
		if err != nil {
			return req{}, fmt.Errorf("mock: messages[%d].content: %w", i, err)
		}
		rq.promptWords += countWords(text)
		if m.Role == "user" {
			rq.lastUser = text
		}
	}
	return rq, nil
}

func (openAI) errorBody(status int, msg string) []byte {
	typ, code := "invalid_request_error", "invalid_request"
	switch {
	case status == 401:
		typ, code = "invalid_request_error", "invalid_api_key"
	case status == 403:
		typ, code = "permission_error", "forbidden"
	case status == 404:
		code = "not_found"
	case status == 429:
		typ, code = "requests", "rate_limit_exceeded"
	case status >= 500:
		typ, code = "server_error", "server_error"
	}
	var e openAIError
	e.Error.Message, e.Error.Type, e.Error.Code = msg, typ, code
	b, _ := json.Marshal(e)
	return b
}

// openAIError is OpenAI's error envelope (param is null for the mock's errors).
type openAIError struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    string  `json:"code"`
	} `json:"error"`
}

func (openAI) prefix(b []byte, rq *req) []byte {
	b = append(b, `data: {"id":"chatcmpl-mock","object":"chat.completion.chunk","created":1700000000,"model":`...)
	b = appendModel(b, rq)
	return append(b, `,"choices":`...)
}

func (o openAI) head(b []byte, rq *req, reasoning []string) []byte {
	b = o.prefix(b, rq)
	b = append(b, `[{"index":0,"delta":{"role":"assistant"},"finish_reason":null}]}`+"\n\n"...)
	for _, r := range reasoning {
		b = o.prefix(b, rq)
		b = append(b, `[{"index":0,"delta":{"reasoning_content":`...)
		b = appendJSONString(b, r)
		b = append(b, `},"finish_reason":null}]}`+"\n\n"...)
	}
	return b
}

func (o openAI) chunk(b []byte, rq *req, text string) []byte {
	b = o.prefix(b, rq)
	b = append(b, `[{"index":0,"delta":{"content":`...)
	b = appendJSONString(b, text)
	return append(b, `},"finish_reason":null}]}`+"\n\n"...)
}

func (openAI) malformed() []byte {
	return []byte("data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"oops\"\n\n")
}

func (openAI) mergesFinish() bool { return false }

func appendUsage(b []byte, u usage) []byte {
	b = append(b, `{"prompt_tokens":`...)
	b = strconv.AppendInt(b, int64(u.prompt), 10)
	b = append(b, `,"completion_tokens":`...)
	b = strconv.AppendInt(b, int64(u.completion), 10)
	b = append(b, `,"total_tokens":`...)
	b = strconv.AppendInt(b, int64(u.prompt+u.completion), 10)
	return append(b, '}')
}

func (o openAI) finish(b []byte, rq *req, _ *string, u usage) []byte {
	b = o.prefix(b, rq)
	b = append(b, `[{"index":0,"delta":{},"finish_reason":"stop"}]}`+"\n\n"...)
	if rq.includeUsage {
		b = o.prefix(b, rq)
		b = append(b, `[],"usage":`...)
		b = appendUsage(b, u)
		b = append(b, "}\n\n"...)
	}
	return append(b, "data: [DONE]\n\n"...)
}

func (openAI) full(b []byte, rq *req, text string, u usage) []byte {
	b = append(b, `{"id":"chatcmpl-mock","object":"chat.completion","created":1700000000,"model":`...)
	b = appendModel(b, rq)
	b = append(b, `,"choices":[{"index":0,"message":{"role":"assistant","content":`...)
	b = appendJSONString(b, text)
	b = append(b, `},"finish_reason":"stop"}],"usage":`...)
	b = appendUsage(b, u)
	return append(b, "}\n"...)
}

func (openAI) midError(b []byte, groqStyle bool) []byte {
	if groqStyle {
		return append(b, "event: error\ndata: {\"error\":{\"message\":\"mock: injected mid-stream error\",\"type\":\"invalid_request_error\",\"status_code\":400}}\n\n"...)
	}
	return append(b, "data: {\"error\":{\"code\":502,\"message\":\"mock: injected mid-stream error\"}}\n\ndata: [DONE]\n\n"...)
}

// gemini is the Gemini generateContent wire format.
type gemini struct {
	model  string
	stream bool
}

func (gemini) id() byte { return 'g' }

func (g gemini) parse(body []byte) (req, error) {
	type part struct {
		Text    string `json:"text"`
		Thought bool   `json:"thought"`
	}
	var b struct {
		Contents []struct {
			Role  string `json:"role"`
			Parts []part `json:"parts"`
		} `json:"contents"`
		SystemInstruction *struct {
			Parts []part `json:"parts"`
		} `json:"systemInstruction"`
	}
	if err := json.Unmarshal(body, &b); err != nil {
		return req{}, fmt.Errorf("mock: invalid JSON payload: %w", err)
	}
	if len(b.Contents) == 0 {
		return req{}, errors.New("mock: contents must be a non-empty array")
	}
	rq := req{model: g.model, stream: g.stream, includeUsage: true}
	if b.SystemInstruction != nil {
		for _, p := range b.SystemInstruction.Parts {
			rq.promptWords += countWords(p.Text)
		}
	}
	for i, c := range b.Contents {
		if c.Role != "" && c.Role != "user" && c.Role != "model" {
			return req{}, fmt.Errorf("mock: contents[%d].role must be user or model, not %q", i, c.Role)
		}
		if len(c.Parts) == 0 {
			return req{}, fmt.Errorf("mock: contents[%d].parts must not be empty", i)
		}
		var sb strings.Builder
		for _, p := range c.Parts {
			sb.WriteString(p.Text)
		}
		rq.promptWords += countWords(sb.String())
		if c.Role != "model" {
			rq.lastUser = sb.String()
		}
	}
	return rq, nil
}

func (gemini) errorBody(status int, msg string) []byte {
	st := "INVALID_ARGUMENT"
	switch {
	case status == 401:
		st = "UNAUTHENTICATED"
	case status == 403:
		st = "PERMISSION_DENIED"
	case status == 404:
		st = "NOT_FOUND"
	case status == 405:
		st = "UNIMPLEMENTED"
	case status == 408 || status == 504:
		st = "DEADLINE_EXCEEDED"
	case status == 409:
		st = "ABORTED"
	case status == 429:
		st = "RESOURCE_EXHAUSTED"
	case status == 503:
		st = "UNAVAILABLE"
	case status >= 500:
		st = "INTERNAL"
	}
	b := []byte("{\n  \"error\": {\n    \"code\": ")
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, ",\n    \"message\": "...)
	b = appendJSONString(b, msg)
	b = append(b, ",\n    \"status\": \""+st+"\"\n  }\n}\n"...)
	return b
}

// event encodes one streamGenerateContent event (or, without the "data: " and the
// separator, one generateContent answer) the way the real API spaces its JSON.
func (gemini) event(b []byte, rq *req, text string, thought, last bool, u usage) []byte {
	b = append(b, `{"candidates": [{"content": {"parts": [{"text": `...)
	b = appendJSONString(b, text)
	if thought {
		b = append(b, `,"thought": true`...)
	}
	b = append(b, `}],"role": "model"}`...)
	if last {
		b = append(b, `,"finishReason": "STOP"`...)
	}
	b = append(b, `,"index": 0}]`...)
	if last {
		b = append(b, `,"usageMetadata": {"promptTokenCount": `...)
		b = strconv.AppendInt(b, int64(u.prompt), 10)
		b = append(b, `,"candidatesTokenCount": `...)
		b = strconv.AppendInt(b, int64(u.completion), 10)
		b = append(b, `,"totalTokenCount": `...)
		b = strconv.AppendInt(b, int64(u.prompt+u.completion), 10)
		b = append(b, '}')
	}
	b = append(b, `,"modelVersion": `...)
	b = appendModel(b, rq)
	return append(b, `,"responseId": "mock"}`...)
}

func (g gemini) sse(b []byte, rq *req, text string, thought, last bool, u usage) []byte {
	b = append(b, "data: "...)
	b = g.event(b, rq, text, thought, last, u)
	return append(b, "\r\n\r\n"...)
}

func (g gemini) head(b []byte, rq *req, reasoning []string) []byte {
	for _, r := range reasoning {
		b = g.sse(b, rq, r, true, false, usage{})
	}
	return b
}

func (g gemini) chunk(b []byte, rq *req, text string) []byte {
	return g.sse(b, rq, text, false, false, usage{})
}

func (gemini) malformed() []byte {
	return []byte("data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"oops\"\r\n\r\n")
}

func (gemini) mergesFinish() bool { return true }

func (g gemini) finish(b []byte, rq *req, last *string, u usage) []byte {
	text := ""
	if last != nil {
		text = *last
	}
	return g.sse(b, rq, text, false, true, u)
}

func (g gemini) full(b []byte, rq *req, text string, u usage) []byte {
	b = g.event(b, rq, text, false, true, u)
	return append(b, '\n')
}

func (gemini) midError(b []byte, _ bool) []byte {
	return append(b, "data: {\"error\": {\"code\": 500, \"message\": \"mock: injected mid-stream error\", \"status\": \"INTERNAL\"}}\r\n\r\n"...)
}
