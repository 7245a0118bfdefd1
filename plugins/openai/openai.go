// Package openai is the OpenAI chat-completions dialect: POST {base_url}/chat/completions
// with Server-Sent Events back. Groq, Cerebras, OpenRouter, the Hugging Face router,
// DeepSeek, vLLM, Ollama and any OpenAI-compatible server speak it.
package openai

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/ralf-gateway/ralf/core/config"
	"github.com/ralf-gateway/ralf/core/llm"
)

func init() { llm.Register("openai", New) }

// Interface guards.
var (
	_ llm.Provider = (*Provider)(nil)
	_ llm.Stream   = (*stream)(nil)
)

// maxCompletionBody bounds a non-streaming answer.
const maxCompletionBody = 32 << 20

// reserved are the body fields the dialect owns: params and extras cannot override them.
var reserved = map[string]bool{"model": true, "messages": true, "stream": true, "stream_options": true}

// Provider is one OpenAI-compatible upstream.
type Provider struct {
	name    string
	model   string
	secrets []string // redacted from upstream messages: the key, secret header values
	url     string   // {base_url}/chat/completions
	safeURL string   // url without query or credentials, for transport errors
	timeout time.Duration
	// streamHeader and wholeHeader are the requests' headers, built once; requests
	// share them read-only (net/http does not modify a request's header).
	streamHeader, wholeHeader http.Header
	params                    map[string]json.RawMessage // cfg.Params, encoded once
	noStreamOpts              bool                       // params.stream_options: null: send no stream_options
	client                    *http.Client
	log                       *zap.Logger
	now                       func() time.Time // clock for Retry-After dates without a Date header
}

// New builds a Provider from its config. It is the "openai" dialect's llm.Factory.
func New(cfg config.Provider, deps llm.Deps) (llm.Provider, error) {
	base := strings.TrimRight(cfg.BaseURL, "/")
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("openai: base_url must be an absolute http(s) URL")
	}
	endpoint := *u
	endpoint.Path = strings.TrimRight(u.Path, "/") + "/chat/completions"
	endpoint.RawPath = ""
	safe := endpoint
	safe.User, safe.RawQuery, safe.Fragment = nil, "", ""

	params := make(map[string]json.RawMessage, len(cfg.Params))
	for k, v := range cfg.Params {
		b, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("openai: params.%s: %w", k, err)
		}
		params[k] = b
	}
	// stream_options is ralf's (usage is always asked for), but an upstream that
	// refuses the field (Mistral: 422 extra_forbidden) could never stream: params can
	// turn it off with null or false.
	noStreamOptions := false
	if v, ok := params["stream_options"]; ok {
		if string(v) != "null" && string(v) != "false" {
			return nil, fmt.Errorf("openai: params.stream_options: only null or false (to send none, for an upstream that refuses it), not %s", v)
		}
		noStreamOptions = true
	}
	header := func(accept string) http.Header {
		h := http.Header{}
		if cfg.APIKey != "" {
			h.Set("Authorization", "Bearer "+cfg.APIKey)
		}
		h.Set("Content-Type", "application/json")
		h.Set("Accept", accept)
		llm.SetHeaders(h, cfg.Headers)
		return h
	}
	client := deps.Client
	if client == nil {
		client = &http.Client{}
	}
	log := deps.Logger
	if log == nil {
		log = zap.NewNop()
	}
	return &Provider{
		name:         cfg.Name,
		model:        cfg.Model,
		secrets:      llm.Secrets(cfg.APIKey, cfg.Headers),
		url:          endpoint.String(),
		safeURL:      safe.String(),
		timeout:      cfg.Timeout,
		streamHeader: header("text/event-stream"),
		wholeHeader:  header("application/json"),
		params:       params,
		noStreamOpts: noStreamOptions,
		client:       client,
		log:          log,
		now:          time.Now,
	}, nil
}

// Name returns the provider's configured name.
func (p *Provider) Name() string { return p.name }

// ChatStream sends req upstream. Errors before the answer starts are returned here:
// *llm.UpstreamError for an HTTP error answer, a wrapped transport error otherwise.
// The request (including reading its body) is bounded by the provider's timeout and
// cancelled with ctx or by Stream.Close. The Text and Reasoning of a received Chunk
// alias internal buffers and are valid only until the next Recv.
func (p *Provider) ChatStream(ctx context.Context, req *llm.ChatRequest) (llm.Stream, error) {
	body, err := p.body(req)
	if err != nil {
		return nil, fmt.Errorf("%s: encode request: %w", p.name, err)
	}
	var cancel context.CancelFunc
	if p.timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, p.timeout)
	} else {
		ctx, cancel = context.WithCancel(ctx)
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url, bytes.NewReader(body))
	if err != nil {
		cancel()
		return nil, fmt.Errorf("%s: build request: %w", p.name, p.transportError(err))
	}
	hr.Header = p.wholeHeader
	if req.Stream {
		hr.Header = p.streamHeader
	}

	resp, err := p.client.Do(hr)
	if err != nil {
		cancel()
		return nil, p.transportError(err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		resp.Body.Close()
		cancel()
		return nil, p.httpError(resp, b)
	}
	// The answer's type decides how it is read, not what was asked: some servers
	// ignore stream:true (one JSON object) or always stream.
	ct := mediaType(resp.Header.Get("Content-Type"))
	if ct == "text/event-stream" || (req.Stream && ct != "application/json") {
		return newStream(p, resp.Body, cancel), nil
	}
	if req.Stream {
		p.log.Debug("upstream answered a streaming request with one JSON object")
	}
	defer cancel()
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxCompletionBody))
	if err != nil {
		return nil, fmt.Errorf("%s: read answer: %w", p.name, err)
	}
	return p.completion(b)
}

func mediaType(ct string) string {
	if ct == "text/event-stream" || ct == "application/json" { // the usual answers, parsed for free
		return ct
	}
	mt, _, _ := mime.ParseMediaType(ct)
	return mt
}

// completion converts a chat.completion object into a one-chunk Stream.
func (p *Provider) completion(b []byte) (llm.Stream, error) {
	var sc scanner
	f, err := sc.parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: decode answer: %w", p.name, err)
	}
	if f.Error != nil {
		return nil, p.streamError(f.Error)
	}
	// The scanner's results alias b and its buffers, which this stream owns alone.
	c := llm.Chunk{Text: f.Text, Reasoning: f.Reasoning, FinishReason: finishString(f.Finish)}
	if u := usageOf(f); u != nil {
		c.Usage = u
	}
	return llm.Single(c), nil
}

// body encodes the upstream request: the dialect's own fields first, then cfg.Params
// overridden by the request's extras and its own sampling parameters.
func (p *Provider) body(req *llm.ChatRequest) ([]byte, error) {
	model := req.Model
	if model == "" {
		model = p.model
	}
	rest := make(map[string]json.RawMessage, len(p.params)+len(req.Extra)+4)
	for k, v := range p.params {
		if !reserved[k] {
			rest[k] = v
		}
	}
	for k, v := range req.Extra {
		// A null is "not set", as for the known fields: it does not erase a default.
		if !reserved[k] && len(v) > 0 && string(bytes.TrimSpace(v)) != "null" {
			rest[k] = v
		}
	}
	set := func(k string, v any) error {
		b, err := json.Marshal(v)
		if err != nil {
			return fmt.Errorf("%s: %w", k, err)
		}
		rest[k] = b
		return nil
	}
	var err error
	if req.Temperature != nil {
		err = set("temperature", *req.Temperature)
	}
	if err == nil && req.TopP != nil {
		err = set("top_p", *req.TopP)
	}
	if err == nil && req.MaxTokens != nil {
		// Sent by the name the client used; a default under the other name in params
		// would contradict it.
		name, other := "max_tokens", "max_completion_tokens"
		if req.MaxCompletionTokens {
			name, other = other, name
		}
		delete(rest, other)
		err = set(name, *req.MaxTokens)
	}
	if err == nil && req.Stop != nil {
		err = set("stop", req.Stop)
	}
	if err != nil {
		return nil, err
	}

	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	buf.WriteString(`{"model":`)
	if err := enc.Encode(model); err != nil {
		return nil, err
	}
	buf.WriteString(`,"messages":`)
	msgs := req.Messages
	if msgs == nil {
		msgs = []llm.Message{}
	}
	if err := enc.Encode(msgs); err != nil {
		return nil, err
	}
	switch {
	case req.Stream && p.noStreamOpts:
		buf.WriteString(`,"stream":true`)
	case req.Stream:
		// Usage is always asked for: the gateway counts tokens for every request.
		buf.WriteString(`,"stream":true,"stream_options":{"include_usage":true}`)
	default:
		buf.WriteString(`,"stream":false`)
	}
	keys := make([]string, 0, len(rest))
	for k := range rest {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		buf.WriteByte(',')
		if err := enc.Encode(k); err != nil {
			return nil, err
		}
		buf.WriteByte(':')
		if err := json.Compact(&buf, rest[k]); err != nil {
			return nil, fmt.Errorf("%s: %w", k, err)
		}
	}
	buf.WriteByte('}')
	// Encoder.Encode appends newlines; they are valid JSON white space but noise in
	// recorded requests, so drop them.
	return bytes.ReplaceAll(buf.Bytes(), []byte("\n"), nil), nil
}

// usageOf picks the usage of a chunk: the standard top-level object, else Groq's x_groq.usage.
func usageOf(f *fields) *llm.Usage {
	switch {
	case f.HasUsage:
		u := f.Usage
		return &u
	case f.HasGroqUsage:
		u := f.GroqUsage
		return &u
	}
	return nil
}

// finishString converts a finish reason without allocating for the common values.
func finishString(b []byte) string {
	switch string(b) {
	case "":
		return ""
	case "stop":
		return "stop"
	case "length":
		return "length"
	case "tool_calls":
		return "tool_calls"
	case "content_filter":
		return "content_filter"
	case "function_call":
		return "function_call"
	case "eos":
		return "eos"
	}
	return string(b)
}
