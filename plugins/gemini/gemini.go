// Package gemini is Google's native Gemini dialect: :streamGenerateContent?alt=sse for
// streams and :generateContent otherwise, with the key in the x-goog-api-key header
// (never in the URL).
package gemini

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/ralf-gateway/ralf/core/config"
	"github.com/ralf-gateway/ralf/core/llm"
	"github.com/ralf-gateway/ralf/core/sse"
)

func init() { llm.Register("gemini", New) }

var (
	_ llm.Provider     = (*Provider)(nil)
	_ llm.Stream       = (*stream)(nil)
	_ llm.WaitNotifier = (*stream)(nil)
)

// Provider talks to one Gemini API endpoint.
type Provider struct {
	cfg    config.Provider
	client *http.Client
}

// New builds the provider from its config.
func New(cfg config.Provider, deps llm.Deps) (llm.Provider, error) {
	u, err := url.Parse(cfg.BaseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("base_url must be an absolute http(s) URL")
	}
	if deps.Client == nil {
		deps.Client = http.DefaultClient
	}
	return &Provider{cfg: cfg, client: deps.Client}, nil
}

// Name is the provider's configured name.
func (p *Provider) Name() string { return p.cfg.Name }

type part struct {
	Text string `json:"text"`
}

type content struct {
	Role  string `json:"role,omitempty"`
	Parts []part `json:"parts"`
}

// generationKeys maps OpenAI-style parameter names to Gemini's generationConfig.
var generationKeys = map[string]string{
	"temperature": "temperature", "top_p": "topP", "top_k": "topK", "max_tokens": "maxOutputTokens",
	"max_output_tokens": "maxOutputTokens", "stop": "stopSequences", "presence_penalty": "presencePenalty",
	"frequency_penalty": "frequencyPenalty", "seed": "seed", "candidate_count": "candidateCount",
}

// body builds the generateContent request: system messages → systemInstruction,
// assistant → role "model", consecutive same-role turns merged.
func (p *Provider) body(req *llm.ChatRequest) ([]byte, error) {
	var system []string
	var contents []content
	for _, m := range req.Messages {
		switch m.Role {
		case "system":
			system = append(system, m.Content)
			continue
		}
		role := "user"
		if m.Role == "assistant" {
			role = "model"
		}
		if n := len(contents); n > 0 && contents[n-1].Role == role {
			contents[n-1].Parts = append(contents[n-1].Parts, part{Text: m.Content})
			continue
		}
		contents = append(contents, content{Role: role, Parts: []part{{Text: m.Content}}})
	}
	if len(contents) == 0 {
		// Gemini needs at least one turn; a system-only request becomes a user turn.
		contents = []content{{Role: "user", Parts: []part{{Text: strings.Join(system, "\n\n")}}}}
		system = nil
	}
	gen := map[string]any{}
	body := map[string]any{"contents": contents}
	for k, v := range p.cfg.Params {
		switch k {
		case "generationConfig":
			if m, ok := v.(map[string]any); ok {
				for gk, gv := range m {
					gen[gk] = gv
				}
			}
		case "safetySettings", "tools", "toolConfig", "cachedContent", "labels":
			body[k] = v // request-level Gemini fields
		default:
			if gk, ok := generationKeys[k]; ok {
				gen[gk] = v
			} else {
				gen[k] = v // already in Gemini form: thinkingConfig, topK, responseMimeType, ...
			}
		}
	}
	if req.Temperature != nil {
		gen["temperature"] = *req.Temperature
	}
	if req.TopP != nil {
		gen["topP"] = *req.TopP
	}
	if req.MaxTokens != nil {
		gen["maxOutputTokens"] = *req.MaxTokens
	}
	if len(req.Stop) > 0 {
		gen["stopSequences"] = req.Stop
	}
	if s, ok := gen["stopSequences"].(string); ok {
		gen["stopSequences"] = []string{s}
	}
	if len(gen) > 0 {
		body["generationConfig"] = gen
	}
	if len(system) > 0 {
		body["systemInstruction"] = content{Parts: []part{{Text: strings.Join(system, "\n\n")}}}
	}
	return json.Marshal(body)
}

// ChatStream sends the request; an HTTP error answer is an *llm.UpstreamError.
func (p *Provider) ChatStream(ctx context.Context, req *llm.ChatRequest) (llm.Stream, error) {
	body, err := p.body(req)
	if err != nil {
		return nil, fmt.Errorf("%s: encode request: %w", p.cfg.Name, err)
	}
	model := p.cfg.Model
	if req.Model != "" {
		model = req.Model
	}
	u := p.cfg.BaseURL + "/models/" + url.PathEscape(model)
	if req.Stream {
		u += ":streamGenerateContent?alt=sse"
	} else {
		u += ":generateContent"
	}
	ctx, cancel := llm.ReqCtx(ctx, p.cfg.Timeout)
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		cancel()
		return nil, fmt.Errorf("%s: build request: %w", p.cfg.Name, err)
	}
	hr.Header.Set("Content-Type", "application/json")
	if p.cfg.APIKey != "" {
		hr.Header.Set("x-goog-api-key", p.cfg.APIKey)
	}
	for k, v := range p.cfg.Headers {
		hr.Header.Set(k, v)
	}
	resp, err := p.client.Do(hr)
	if err != nil {
		cancel()
		return nil, llm.TransportError(p.cfg.Name, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		b := llm.ReadError(resp)
		cancel()
		msg, retry := errorDetails(b)
		ra := llm.RetryAfter(resp.Header, resp.StatusCode, time.Now())
		if ra == 0 {
			ra = retry
		}
		return nil, &llm.UpstreamError{Provider: p.cfg.Name, Status: resp.StatusCode,
			Message: llm.Sanitize(msg, p.cfg.APIKey, 300), RetryAfter: ra}
	}
	s := &stream{p: p, body: resp.Body, cancel: cancel}
	s.release = sync.OnceFunc(func() { cancel(); resp.Body.Close() })
	if !req.Stream {
		defer s.release()
		b, err := io.ReadAll(io.LimitReader(resp.Body, 32<<20))
		if err != nil {
			return nil, llm.TransportError(p.cfg.Name, err)
		}
		c, err := s.decode(bytes.TrimSpace(b))
		if err != nil {
			return nil, err
		}
		if u := s.usage; u != nil {
			c.Usage = u
		}
		c.Text = append([]byte(nil), c.Text...)
		c.Reasoning = append([]byte(nil), c.Reasoning...)
		return llm.Single(c), nil
	}
	s.rd = sse.NewReader(resp.Body, 4<<20)
	return s, nil
}

// errorDetails reads Google's error envelope {error:{code,message,status,details}}.
func errorDetails(b []byte) (string, time.Duration) {
	var e struct {
		Error struct {
			Message string `json:"message"`
			Status  string `json:"status"`
			Details []struct {
				Type       string `json:"@type"`
				RetryDelay string `json:"retryDelay"`
			} `json:"details"`
		} `json:"error"`
	}
	if json.Unmarshal(b, &e) != nil || e.Error.Message == "" {
		var arr []json.RawMessage // some endpoints wrap the envelope in an array
		if json.Unmarshal(b, &arr) == nil && len(arr) > 0 {
			return errorDetails(arr[0])
		}
		return strings.TrimSpace(string(b)), 0
	}
	var retry time.Duration
	for _, d := range e.Error.Details {
		if d.RetryDelay != "" {
			retry, _ = time.ParseDuration(d.RetryDelay)
		}
	}
	msg := e.Error.Message
	if e.Error.Status != "" {
		msg = e.Error.Status + ": " + msg
	}
	return msg, retry
}

// stream reads a :streamGenerateContent?alt=sse answer.
type stream struct {
	p        *Provider
	body     io.ReadCloser
	cancel   context.CancelFunc
	release  func()
	rd       *sse.Reader
	w        wire
	text     []byte
	reason   []byte
	usage    *llm.Usage
	finished bool
	done     bool
}

type wire struct {
	Candidates []struct {
		Content struct {
			Parts []struct {
				Text    string `json:"text"`
				Thought bool   `json:"thought"`
			} `json:"parts"`
		} `json:"content"`
		FinishReason string `json:"finishReason"`
	} `json:"candidates"`
	UsageMetadata *struct {
		PromptTokenCount     int `json:"promptTokenCount"`
		CandidatesTokenCount int `json:"candidatesTokenCount"`
		ThoughtsTokenCount   int `json:"thoughtsTokenCount"`
		TotalTokenCount      int `json:"totalTokenCount"`
	} `json:"usageMetadata"`
	PromptFeedback *struct {
		BlockReason string `json:"blockReason"`
	} `json:"promptFeedback"`
	Error *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Status  string `json:"status"`
	} `json:"error"`
}

// finishReasons maps Gemini's finish reasons to OpenAI's.
func finishReason(r string) string {
	switch r {
	case "":
		return ""
	case "STOP":
		return "stop"
	case "MAX_TOKENS":
		return "length"
	case "SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY":
		return "content_filter"
	}
	return strings.ToLower(r)
}

// decode converts one response object into a chunk. Usage is kept aside: Gemini
// repeats it on every event, and only the last value is final.
func (s *stream) decode(data []byte) (llm.Chunk, error) {
	// A fresh value each time: encoding/json leaves fields absent from this event
	// (like "thought") as they were in a reused element.
	s.w = wire{}
	if err := json.Unmarshal(data, &s.w); err != nil {
		return llm.Chunk{}, &llm.UpstreamError{Provider: s.p.cfg.Name, Status: http.StatusBadGateway, Message: "malformed data in upstream stream"}
	}
	if e := s.w.Error; e != nil {
		status := e.Code
		if status < 400 || status > 599 {
			status = http.StatusBadGateway
		}
		msg := e.Message
		if e.Status != "" {
			msg = e.Status + ": " + msg
		}
		return llm.Chunk{}, &llm.UpstreamError{Provider: s.p.cfg.Name, Status: status, Message: llm.Sanitize(msg, s.p.cfg.APIKey, 300)}
	}
	if u := s.w.UsageMetadata; u != nil {
		s.usage = &llm.Usage{PromptTokens: u.PromptTokenCount, CompletionTokens: u.CandidatesTokenCount + u.ThoughtsTokenCount, TotalTokens: u.TotalTokenCount}
	}
	if len(s.w.Candidates) == 0 {
		if f := s.w.PromptFeedback; f != nil && f.BlockReason != "" {
			return llm.Chunk{}, &llm.UpstreamError{Provider: s.p.cfg.Name, Status: http.StatusBadRequest, Message: "prompt blocked: " + f.BlockReason}
		}
		return llm.Chunk{}, nil
	}
	c := &s.w.Candidates[0]
	s.text, s.reason = s.text[:0], s.reason[:0]
	for _, pt := range c.Content.Parts {
		if pt.Thought {
			s.reason = append(s.reason, pt.Text...)
		} else {
			s.text = append(s.text, pt.Text...)
		}
	}
	out := llm.Chunk{Text: s.text, Reasoning: s.reason, FinishReason: finishReason(c.FinishReason)}
	if out.FinishReason != "" {
		s.finished = true
	}
	return out, nil
}

// Recv returns the next chunk with something in it; Text and Reasoning alias buffers
// reused by the next Recv. The final usage comes with the finish chunk.
func (s *stream) Recv() (llm.Chunk, error) {
	if s.done {
		return llm.Chunk{}, io.EOF
	}
	for {
		ev, err := s.rd.Next()
		if err == io.EOF {
			s.done = true
			if !s.finished {
				return llm.Chunk{}, fmt.Errorf("%s: stream ended without a finish reason: %w", s.p.cfg.Name, io.ErrUnexpectedEOF)
			}
			return llm.Chunk{}, io.EOF
		}
		if err != nil {
			return llm.Chunk{}, fmt.Errorf("%s: read stream: %w", s.p.cfg.Name, err)
		}
		c, err := s.decode(ev.Data)
		if err != nil {
			return llm.Chunk{}, err
		}
		if c.FinishReason != "" {
			c.Usage = s.usage
		}
		if len(c.Text) == 0 && len(c.Reasoning) == 0 && c.FinishReason == "" {
			continue
		}
		return c, nil
	}
}

// SetBeforeWait implements llm.WaitNotifier.
func (s *stream) SetBeforeWait(fn func()) { s.rd.SetBeforeWait(fn) }

// Close aborts the upstream request and releases the connection.
func (s *stream) Close() error {
	s.release()
	return nil
}
