package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/ralf-gateway/ralf/core/config"
	"github.com/ralf-gateway/ralf/core/llm"
)

// httpError is a client error with its status, answered before any upstream call.
type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string { return e.msg }

func badRequest(format string, a ...any) *httpError {
	return &httpError{http.StatusBadRequest, fmt.Sprintf(format, a...)}
}

// readBody checks the content type and reads at most max bytes of the body.
func readBody(w http.ResponseWriter, r *http.Request, max int64) ([]byte, *httpError) {
	if ct := r.Header.Get("Content-Type"); ct != "" && ct != "application/json" { // the usual one needs no parsing
		mt, _, err := mime.ParseMediaType(ct)
		switch {
		case err != nil:
			return nil, &httpError{http.StatusUnsupportedMediaType, "Content-Type must be application/json"}
		case mt == "application/json", strings.HasSuffix(mt, "+json"), mt == "text/plain":
		case mt == "application/x-www-form-urlencoded":
			// curl -d sends this by default; the body is still checked as JSON below.
		default:
			return nil, &httpError{http.StatusUnsupportedMediaType, "Content-Type must be application/json, got " + mt}
		}
	}
	// A client that trickles its body must not hold the handler forever: the server
	// bounds only the head's read (ReadHeaderTimeout).
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(bodyReadTimeout))
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, max))
	if err == nil {
		// Cleared only after a whole body: after a failed read the deadline stays, so
		// the server does not wait for the rest of the body before answering.
		_ = rc.SetReadDeadline(time.Time{})
	}
	if err != nil {
		var mbe *http.MaxBytesError
		switch {
		case errors.As(err, &mbe):
			return nil, &httpError{http.StatusRequestEntityTooLarge, fmt.Sprintf("request body too large (limit %d bytes)", max)}
		case errors.Is(err, os.ErrDeadlineExceeded):
			return nil, &httpError{http.StatusRequestTimeout, fmt.Sprintf("request body not received within %s", bodyReadTimeout)}
		}
		return nil, badRequest("could not read request body")
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, badRequest("request body is empty; expected JSON like {\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]}")
	}
	return body, nil
}

// bodyReadTimeout bounds the read of a request's body.
var bodyReadTimeout = 30 * time.Second

// jsonError explains a decoding error with its line and column.
func jsonError(body []byte, err error) *httpError {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		line, col := position(body, se.Offset)
		return badRequest("malformed JSON at line %d, column %d: %s", line, col, se.Error())
	case errors.As(err, &te):
		line, col := position(body, te.Offset)
		field := te.Field
		if field == "" {
			field = "body"
		}
		return badRequest("invalid JSON at line %d, column %d: %s must be %s, not %s", line, col, field, expected(te.Type.String()), te.Value)
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		line, col := position(body, int64(len(body)))
		return badRequest("malformed JSON at line %d, column %d: unexpected end of input", line, col)
	}
	return badRequest("malformed JSON: %s", err.Error())
}

func expected(goType string) string {
	switch {
	case strings.HasPrefix(goType, "[]"):
		return "an array"
	case strings.HasPrefix(goType, "map"), strings.HasPrefix(goType, "struct"), strings.HasPrefix(goType, "gateway."):
		return "an object"
	case goType == "string":
		return "a string"
	case strings.HasPrefix(goType, "float"):
		return "a number"
	case strings.HasPrefix(goType, "int"):
		return "an integer"
	case goType == "bool":
		return "a boolean"
	}
	return goType
}

func position(b []byte, off int64) (line, col int) {
	if off > int64(len(b)) {
		off = int64(len(b))
	}
	line, col = 1, 1
	for _, c := range b[:off] {
		if c == '\n' {
			line++
			col = 1
		} else {
			col++
		}
	}
	return line, col
}

// content is a message content: a string, or an array of text parts.
type content struct {
	text string
	set  bool
	err  string
}

func (c *content) UnmarshalJSON(b []byte) error {
	c.set = true
	switch {
	case len(b) > 0 && b[0] == '"':
		return json.Unmarshal(b, &c.text)
	case len(b) > 0 && b[0] == '[':
		var parts []struct {
			Type string  `json:"type"`
			Text *string `json:"text"`
		}
		if err := json.Unmarshal(b, &parts); err != nil {
			c.err = "must be a string or an array of text parts"
			return nil
		}
		var sb strings.Builder
		for i, p := range parts {
			if p.Type != "text" || p.Text == nil {
				c.err = fmt.Sprintf("part %d: only text parts ({\"type\":\"text\",\"text\":...}) are supported", i)
				return nil
			}
			if i > 0 {
				sb.WriteByte('\n') // as vLLM joins them: words of two parts must not run together
			}
			sb.WriteString(*p.Text)
		}
		c.text = sb.String()
		return nil
	case bytes.Equal(b, []byte("null")):
		c.set = false
		return nil
	}
	c.err = "must be a string or an array of text parts"
	return nil
}

type wireMessage struct {
	Role    *string `json:"role"`
	Content content `json:"content"`
	Name    *string `json:"name"`
}

// validateMessages checks SPEC §3 validation and converts to canonical messages.
func validateMessages(msgs []wireMessage, present bool, lim config.Limits, field string) ([]llm.Message, *httpError) {
	if !present {
		return nil, badRequest("%s is required: an array of {\"role\",\"content\"} objects", field)
	}
	if len(msgs) == 0 {
		return nil, badRequest("%s array cannot be empty", field)
	}
	if len(msgs) > lim.MaxMessages {
		return nil, badRequest("too many messages: %d (limit %d)", len(msgs), lim.MaxMessages)
	}
	out := make([]llm.Message, len(msgs))
	for i, m := range msgs {
		if m.Role == nil {
			return nil, badRequest("%s[%d].role is required", field, i)
		}
		role := *m.Role
		switch role {
		case "system", "user", "assistant":
		case "developer": // OpenAI's newer name for system
			role = "system"
		default:
			return nil, badRequest("%s[%d].role must be one of system, user, assistant (got %q)", field, i, truncate(role, 20))
		}
		if m.Content.err != "" {
			return nil, badRequest("%s[%d].content %s", field, i, m.Content.err)
		}
		if !m.Content.set {
			return nil, badRequest("%s[%d].content is required and must be a string", field, i)
		}
		if n := utf8.RuneCountInString(m.Content.text); n > lim.MaxMessageChars {
			return nil, badRequest("%s[%d].content is too long: %d characters (limit %d)", field, i, n, lim.MaxMessageChars)
		}
		out[i] = llm.Message{Role: role, Content: m.Content.text}
		if m.Name != nil {
			out[i].Name = *m.Name
		}
	}
	return out, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// chatBody is POST /chat's body.
type chatBody struct {
	Messages    []wireMessage `json:"messages"`
	Provider    string        `json:"provider"`
	Temperature *float64      `json:"temperature"`
	MaxTokens   *int          `json:"max_tokens"`
	TopP        *float64      `json:"top_p"`
	Stream      *bool         `json:"stream"`
}

func decodeChat(body []byte, lim config.Limits) (*llm.ChatRequest, string, *httpError) {
	var b chatBody
	if !scanChat(body, &b) {
		b = chatBody{}
		if err := json.Unmarshal(body, &b); err != nil {
			return nil, "", jsonError(body, err)
		}
	}
	// json leaves the slice nil when "messages" is absent or null, and non-nil for [].
	msgs, he := validateMessages(b.Messages, b.Messages != nil, lim, "messages")
	if he != nil {
		return nil, "", he
	}
	if he := checkSampling(b.Temperature, b.TopP, b.MaxTokens, "max_tokens"); he != nil {
		return nil, "", he
	}
	return &llm.ChatRequest{Messages: msgs, Stream: true, Temperature: b.Temperature, MaxTokens: b.MaxTokens, TopP: b.TopP}, b.Provider, nil
}

// checkSampling checks the sampling parameters; maxName is the token limit's name in the request.
func checkSampling(temp, topP *float64, maxTokens *int, maxName string) *httpError {
	if temp != nil && (*temp < 0 || *temp > 2) {
		return badRequest("temperature must be between 0 and 2")
	}
	if topP != nil && (*topP < 0 || *topP > 1) {
		return badRequest("top_p must be between 0 and 1")
	}
	if maxTokens != nil && *maxTokens < 1 {
		return badRequest("%s must be a positive integer", maxName)
	}
	return nil
}

// openAIBody is POST /v1/chat/completions' body; unknown fields go to Extra.
type openAIBody struct {
	Model         string        `json:"model"`
	Messages      []wireMessage `json:"messages"`
	Stream        bool          `json:"stream"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
	Temperature         *float64        `json:"temperature"`
	TopP                *float64        `json:"top_p"`
	MaxTokens           *int            `json:"max_tokens"`
	MaxCompletionTokens *int            `json:"max_completion_tokens"`
	Stop                json.RawMessage `json:"stop"`
	N                   *int            `json:"n"`
}

// known fields are handled above; everything else is passed to the dialect verbatim.
var openAIKnown = map[string]bool{"model": true, "messages": true, "stream": true, "stream_options": true,
	"temperature": true, "top_p": true, "max_tokens": true, "max_completion_tokens": true, "stop": true, "n": true}

type openAIRequest struct {
	req          *llm.ChatRequest
	model        string
	includeUsage bool
}

func decodeOpenAI(body []byte, lim config.Limits) (*openAIRequest, *httpError) {
	var b openAIBody
	var extra map[string]json.RawMessage
	if !scanOpenAI(body, &b, &extra) {
		b, extra = openAIBody{}, nil
		if he := unmarshalOpenAI(body, &b, &extra); he != nil {
			return nil, he
		}
	}
	msgs, he := validateMessages(b.Messages, b.Messages != nil, lim, "messages")
	if he != nil {
		return nil, he
	}
	byNewName := b.MaxTokens == nil && b.MaxCompletionTokens != nil
	if byNewName {
		b.MaxTokens = b.MaxCompletionTokens
	}
	maxName := "max_tokens"
	if byNewName {
		maxName = "max_completion_tokens"
	}
	if he := checkSampling(b.Temperature, b.TopP, b.MaxTokens, maxName); he != nil {
		return nil, he
	}
	if b.N != nil && *b.N != 1 {
		return nil, badRequest("n must be 1 (one choice per request)")
	}
	req := &llm.ChatRequest{Messages: msgs, Stream: b.Stream, Temperature: b.Temperature, TopP: b.TopP, MaxTokens: b.MaxTokens,
		MaxCompletionTokens: byNewName}
	if len(b.Stop) > 0 && string(b.Stop) != "null" {
		var one string
		if err := json.Unmarshal(b.Stop, &one); err == nil {
			req.Stop = []string{one}
		} else if err := json.Unmarshal(b.Stop, &req.Stop); err != nil {
			return nil, badRequest("stop must be a string or an array of strings")
		}
	}
	if he := checkExtras(extra); he != nil {
		return nil, he
	}
	req.Extra = extra
	return &openAIRequest{req: req, model: b.Model, includeUsage: b.Stream && b.StreamOptions != nil && b.StreamOptions.IncludeUsage}, nil
}

// checkExtras checks the passed-through fields ralf reads itself. It refuses what
// ralf passes upstream but cannot relay back, rather than answering without it: tool
// (function) definitions, whose calls would be dropped from the answer (and the tool
// role is refused), and token log probabilities. And it checks response_format's
// shape, which the gemini dialect translates: a malformed one must not quietly give
// free text.
func checkExtras(extra map[string]json.RawMessage) *httpError {
	for _, k := range [...]string{"tools", "functions"} {
		var list []json.RawMessage
		if v := bytes.TrimSpace(extra[k]); len(v) > 0 && string(v) != "null" && (json.Unmarshal(v, &list) != nil || len(list) > 0) {
			return badRequest("%s is not supported: ralf relays text answers only, not tool calls", k)
		}
	}
	if v := bytes.TrimSpace(extra["response_format"]); len(v) > 0 && string(v) != "null" {
		var rf struct {
			Type       *string         `json:"type"`
			JSONSchema json.RawMessage `json:"json_schema"`
		}
		if json.Unmarshal(v, &rf) != nil || rf.Type == nil {
			return badRequest(`response_format must be an object with a "type" (text, json_object or json_schema)`)
		}
		if *rf.Type == "json_schema" {
			var js struct {
				Schema json.RawMessage `json:"schema"`
			}
			var schema map[string]json.RawMessage
			if json.Unmarshal(rf.JSONSchema, &js) != nil ||
				(len(js.Schema) > 0 && string(js.Schema) != "null" && json.Unmarshal(js.Schema, &schema) != nil) {
				return badRequest(`response_format.json_schema must be an object like {"name": ..., "schema": {...}}`)
			}
		}
	}
	if v := bytes.TrimSpace(extra["logprobs"]); len(v) > 0 && string(v) != "null" && string(v) != "false" {
		return badRequest("logprobs is not supported: ralf does not relay token log probabilities")
	}
	if v := bytes.TrimSpace(extra["top_logprobs"]); len(v) > 0 && string(v) != "null" && string(v) != "0" {
		return badRequest("top_logprobs is not supported: ralf does not relay token log probabilities")
	}
	return nil
}

// unmarshalOpenAI is encoding/json's decoding of a /v1 body: the top-level members
// as raw values, then each known one decoded from its own bytes; the others go to
// extra. It handles every body scanOpenAI leaves to it, with precise errors.
func unmarshalOpenAI(body []byte, b *openAIBody, extra *map[string]json.RawMessage) *httpError {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil {
		return jsonError(body, err)
	}
	field := func(name string, dst any) *httpError {
		v, ok := raw[name]
		if !ok {
			return nil
		}
		if err := json.Unmarshal(v, dst); err != nil {
			var te *json.UnmarshalTypeError
			if errors.As(err, &te) && te.Field == "" { // the member itself has the wrong type
				return badRequest("%s must be %s, not %s", name, expected(te.Type.String()), te.Value)
			}
			he := jsonError(v, err)
			he.msg = "invalid JSON in " + name + ": " + strings.TrimPrefix(he.msg, "invalid JSON at ")
			return he
		}
		return nil
	}
	for _, f := range []struct {
		name string
		dst  any
	}{
		{"model", &b.Model}, {"messages", &b.Messages}, {"stream", &b.Stream}, {"stream_options", &b.StreamOptions},
		{"temperature", &b.Temperature}, {"top_p", &b.TopP}, {"max_tokens", &b.MaxTokens},
		{"max_completion_tokens", &b.MaxCompletionTokens}, {"n", &b.N},
	} {
		if he := field(f.name, f.dst); he != nil {
			return he
		}
	}
	b.Stop = raw["stop"]
	for k, v := range raw {
		if !openAIKnown[k] {
			if *extra == nil {
				*extra = make(map[string]json.RawMessage)
			}
			(*extra)[k] = v
		}
	}
	return nil
}
