package mock

import (
	"encoding/json"
	"errors"
	"strconv"
	"strings"
)

// openAI is the OpenAI chat completions wire format.
type openAI struct{}

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
		return req{}, errors.New("mock: invalid JSON body")
	}
	if len(b.Messages) == 0 {
		return req{}, errors.New("mock: messages must be a non-empty array")
	}
	rq := req{model: b.Model, stream: b.Stream, includeUsage: b.StreamOptions != nil && b.StreamOptions.IncludeUsage}
	for _, m := range b.Messages {
		var text string
		if err := json.Unmarshal(m.Content, &text); err != nil {
			var parts []struct{ Text string }
			_ = json.Unmarshal(m.Content, &parts)
			for _, p := range parts {
				text += p.Text
			}
		}
		rq.promptWords += countWords(text)
		if m.Role == "user" {
			rq.lastUser = text
		}
	}
	return rq, nil
}

func (openAI) errorBody(status int, msg string) string {
	typ := "invalid_request_error"
	switch {
	case status == 429:
		typ = "rate_limit_exceeded"
	case status == 401 || status == 403:
		typ = "authentication_error"
	case status >= 500:
		typ = "server_error"
	}
	b, _ := json.Marshal(map[string]any{"error": map[string]any{"message": msg, "type": typ, "code": status}})
	return string(b)
}

func (openAI) prefix(b []byte, rq *req) []byte {
	b = append(b, `data: {"id":"chatcmpl-mock","object":"chat.completion.chunk","created":1700000000,"model":`...)
	b = jsonStr(b, rq.model)
	return append(b, `,"choices":`...)
}

func (o openAI) start(b []byte, rq *req) []byte {
	b = o.prefix(b, rq)
	return append(b, `[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}`+"\n\n"...)
}

func (o openAI) chunk(b []byte, rq *req, text string, reasoning bool) []byte {
	b = o.prefix(b, rq)
	if reasoning {
		b = append(b, `[{"index":0,"delta":{"reasoning_content":`...)
	} else {
		b = append(b, `[{"index":0,"delta":{"content":`...)
	}
	b = jsonStr(b, text)
	return append(b, `},"finish_reason":null}]}`+"\n\n"...)
}

func usageJSON(b []byte, u [3]int) []byte {
	b = append(b, `{"prompt_tokens":`...)
	b = strconv.AppendInt(b, int64(u[0]), 10)
	b = append(b, `,"completion_tokens":`...)
	b = strconv.AppendInt(b, int64(u[1]), 10)
	b = append(b, `,"total_tokens":`...)
	b = strconv.AppendInt(b, int64(u[2]), 10)
	return append(b, '}')
}

func (o openAI) finish(b []byte, rq *req, u [3]int) []byte {
	b = o.prefix(b, rq)
	b = append(b, `[{"index":0,"delta":{},"finish_reason":"stop"}]}`+"\n\n"...)
	if rq.includeUsage {
		b = o.prefix(b, rq)
		b = append(b, `[],"usage":`...)
		b = usageJSON(b, u)
		b = append(b, "}\n\n"...)
	}
	return append(b, "data: [DONE]\n\n"...)
}

func (openAI) full(rq *req, text string, u [3]int) []byte {
	b := []byte(`{"id":"chatcmpl-mock","object":"chat.completion","created":1700000000,"model":`)
	b = jsonStr(b, rq.model)
	b = append(b, `,"choices":[{"index":0,"message":{"role":"assistant","content":`...)
	b = jsonStr(b, text)
	b = append(b, `},"finish_reason":"stop"}],"usage":`...)
	b = usageJSON(b, u)
	return append(b, '}')
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

func (g gemini) parse(body []byte) (req, error) {
	var b struct {
		Contents []struct {
			Role  string `json:"role"`
			Parts []struct {
				Text string `json:"text"`
			} `json:"parts"`
		} `json:"contents"`
		SystemInstruction *struct {
			Parts []struct {
				Text string `json:"text"`
			} `json:"parts"`
		} `json:"systemInstruction"`
	}
	if err := json.Unmarshal(body, &b); err != nil {
		return req{}, errors.New("mock: invalid JSON body")
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
	for _, c := range b.Contents {
		var sb strings.Builder
		for _, p := range c.Parts {
			sb.WriteString(p.Text)
		}
		rq.promptWords += countWords(sb.String())
		if c.Role == "user" {
			rq.lastUser = sb.String()
		}
	}
	return rq, nil
}

func (gemini) errorBody(status int, msg string) string {
	st := "INVALID_ARGUMENT"
	switch {
	case status == 429:
		st = "RESOURCE_EXHAUSTED"
	case status == 401:
		st = "UNAUTHENTICATED"
	case status == 403:
		st = "PERMISSION_DENIED"
	case status == 404:
		st = "NOT_FOUND"
	case status >= 500:
		st = "UNAVAILABLE"
	}
	b, _ := json.MarshalIndent(map[string]any{"error": map[string]any{"code": status, "message": msg, "status": st}}, "", "  ")
	return string(b)
}

func (gemini) start(b []byte, _ *req) []byte { return b }

func (gemini) event(b []byte, rq *req, text string, thought bool, last bool, u [3]int) []byte {
	b = append(b, `data: {"candidates": [{"content": {"parts": [{"text": `...)
	b = jsonStr(b, text)
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
		b = strconv.AppendInt(b, int64(u[0]), 10)
		b = append(b, `,"candidatesTokenCount": `...)
		b = strconv.AppendInt(b, int64(u[1]), 10)
		b = append(b, `,"totalTokenCount": `...)
		b = strconv.AppendInt(b, int64(u[2]), 10)
		b = append(b, '}')
	}
	b = append(b, `,"modelVersion": `...)
	b = jsonStr(b, rq.model)
	return append(b, "}\r\n\r\n"...)
}

func (g gemini) chunk(b []byte, rq *req, text string, reasoning bool) []byte {
	return g.event(b, rq, text, reasoning, false, [3]int{})
}

func (g gemini) finish(b []byte, rq *req, u [3]int) []byte {
	// Gemini puts finishReason and usage on the last content event; the mock sends
	// them on an empty-text event so every content chunk stays as Answer() says.
	return g.event(b, rq, "", false, true, u)
}

func (g gemini) full(rq *req, text string, u [3]int) []byte {
	b := g.event(nil, rq, text, false, true, u)
	return []byte(strings.TrimSuffix(strings.TrimPrefix(string(b), "data: "), "\r\n\r\n"))
}

func (gemini) midError(b []byte, _ bool) []byte {
	return append(b, "data: {\"error\": {\"code\": 500, \"message\": \"mock: injected mid-stream error\", \"status\": \"INTERNAL\"}}\r\n\r\n"...)
}
