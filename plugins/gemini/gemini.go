// Package gemini is Google's native Gemini dialect: :streamGenerateContent?alt=sse for
// streams and :generateContent otherwise, with the key in the x-goog-api-key header
// (never in the URL).
package gemini

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
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

const (
	maxEvent   = 4 << 20  // one SSE event; thinking summaries can be long
	maxWhole   = 32 << 20 // one non-streaming answer
	maxMessage = 300      // upstream error text shown to clients
)

// errClosed is what Recv returns after Close.
var errClosed = errors.New("stream closed")

// Provider talks to one Gemini API endpoint.
type Provider struct {
	cfg    config.Provider
	client *http.Client
	base   string // base_url without a trailing slash
	// header is every request's header, built once; requests share it read-only
	// (net/http does not modify a request's header).
	header http.Header
	// gen holds generationConfig defaults from params, encoded once at load time.
	gen map[string]json.RawMessage
	// top holds request-level Gemini fields from params (safetySettings, tools, ...).
	top map[string]json.RawMessage
	// secrets are redacted from upstream messages: the key, secret header values.
	secrets []string
}

// New builds the provider from its config. Params are split and encoded here, so a
// value JSON cannot express fails at load time rather than on every request.
func New(cfg config.Provider, deps llm.Deps) (llm.Provider, error) {
	u, err := url.Parse(cfg.BaseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%s: base_url must be an absolute http(s) URL", cfg.Name)
	}
	if u.RawQuery != "" {
		// The method suffix goes after the path; a query would end up before it.
		return nil, fmt.Errorf("%s: base_url must not have a query", cfg.Name)
	}
	if deps.Client == nil {
		deps.Client = http.DefaultClient
	}
	p := &Provider{cfg: cfg, client: deps.Client, base: strings.TrimRight(cfg.BaseURL, "/"),
		gen: map[string]json.RawMessage{}, top: map[string]json.RawMessage{}, header: http.Header{},
		secrets: llm.Secrets(cfg.APIKey, cfg.Headers)}
	p.header.Set("Content-Type", "application/json")
	if cfg.APIKey != "" {
		p.header.Set("x-goog-api-key", cfg.APIKey)
	}
	llm.SetHeaders(p.header, cfg.Headers)
	put := func(m map[string]json.RawMessage, k string, v any) error {
		if s, ok := v.(string); ok && k == "stopSequences" {
			v = []string{s}
		}
		b, err := json.Marshal(v)
		if err != nil {
			return fmt.Errorf("%s: params.%s: %w", cfg.Name, k, err)
		}
		m[k] = b
		return nil
	}
	// In a fixed order, so that when several params set one Gemini field the same one
	// always wins: OpenAI-style names first, then names in Gemini form, then the
	// generationConfig mapping, the most explicit; alphabetically within each.
	keys := make([]string, 0, len(cfg.Params))
	for k := range cfg.Params {
		keys = append(keys, k)
	}
	rank := func(k string) int {
		switch {
		case k == "generationConfig":
			return 2
		case generationKeys[k] != "" && generationKeys[k] != k:
			return 0
		}
		return 1
	}
	sort.Slice(keys, func(i, j int) bool {
		if ri, rj := rank(keys[i]), rank(keys[j]); ri != rj {
			return ri < rj
		}
		return keys[i] < keys[j]
	})
	for _, k := range keys {
		v := cfg.Params[k]
		switch {
		case k == "generationConfig":
			gm, ok := v.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("%s: params.generationConfig must be a mapping", cfg.Name)
			}
			for _, gk := range slices.Sorted(maps.Keys(gm)) {
				if err := put(p.gen, gk, gm[gk]); err != nil {
					return nil, err
				}
			}
			continue
		case requestFields[k]:
			err = put(p.top, k, v)
		case generationKeys[k] != "":
			err = put(p.gen, generationKeys[k], v)
		default:
			// Already in Gemini form: thinkingConfig, topK, candidateCount, responseMimeType, ...
			err = put(p.gen, k, v)
		}
		if err != nil {
			return nil, err
		}
	}
	return p, nil
}

// Name is the provider's configured name.
func (p *Provider) Name() string { return p.cfg.Name }

// generationKeys maps OpenAI-style parameter names to Gemini's generationConfig.
var generationKeys = map[string]string{
	"temperature": "temperature", "top_p": "topP", "top_k": "topK", "max_tokens": "maxOutputTokens",
	"max_completion_tokens": "maxOutputTokens", "max_output_tokens": "maxOutputTokens", "stop": "stopSequences", "presence_penalty": "presencePenalty",
	"frequency_penalty": "frequencyPenalty", "seed": "seed", "candidate_count": "candidateCount",
	"response_mime_type": "responseMimeType",
}

// requestFields are params that belong beside contents, not in generationConfig.
var requestFields = map[string]bool{
	"safetySettings": true, "tools": true, "toolConfig": true, "cachedContent": true, "labels": true,
	"safety_settings": true, "tool_config": true, "cached_content": true,
}

// extraKeys are OpenAI request fields (ChatRequest.Extra) Gemini can express. Not the
// penalties: Gemini 2.5 and later refuse them ("Penalty is not enabled for models/...")
// and many OpenAI clients send them by default; params can still set presencePenalty.
var extraKeys = map[string]string{
	"seed": "seed", "top_k": "topK",
}

type part struct {
	Text string `json:"text"`
}

type content struct {
	Role  string `json:"role,omitempty"`
	Parts []part `json:"parts"`
}

type request struct {
	Contents          []content                  `json:"contents"`
	SystemInstruction *content                   `json:"systemInstruction,omitempty"`
	GenerationConfig  map[string]json.RawMessage `json:"generationConfig,omitempty"`
}

// body builds the generateContent request: system messages → systemInstruction,
// assistant → role "model", every other role → "user", consecutive same-role turns
// merged (Gemini wants turns to alternate). Request values override params.
func (p *Provider) body(req *llm.ChatRequest) ([]byte, error) {
	var system []string
	contents := make([]content, 0, len(req.Messages))
	for _, m := range req.Messages {
		if m.Role == "system" || m.Role == "developer" {
			if m.Content != "" {
				system = append(system, m.Content)
			}
			continue
		}
		if m.Content == "" {
			continue // Gemini rejects empty text parts
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
	r := request{Contents: contents, GenerationConfig: p.gen}
	if len(contents) == 0 {
		// Gemini needs at least one turn; a system-only request becomes a user turn.
		r.Contents = []content{{Role: "user", Parts: []part{{Text: strings.Join(system, "\n\n")}}}}
		system = nil
	}
	if len(system) > 0 {
		r.SystemInstruction = &content{Parts: []part{{Text: strings.Join(system, "\n\n")}}}
	}
	copied := false
	set := func(k string, v any) error {
		b, err := json.Marshal(v)
		if err != nil {
			return fmt.Errorf("%s: %w", k, err)
		}
		if !copied {
			// p.gen is shared by concurrent requests: overrides go into a copy.
			copied = true
			r.GenerationConfig = make(map[string]json.RawMessage, len(p.gen)+4)
			for k, v := range p.gen {
				r.GenerationConfig[k] = v
			}
		}
		r.GenerationConfig[k] = b
		return nil
	}
	var err error
	for k, v := range req.Extra {
		if gk := extraKeys[k]; gk != "" && err == nil && string(v) != "null" {
			err = set(gk, v)
		}
	}
	if rf, ok := req.Extra["response_format"]; ok && err == nil {
		err = responseFormat(rf, set)
	}
	if req.Temperature != nil && err == nil {
		err = set("temperature", *req.Temperature)
	}
	if req.TopP != nil && err == nil {
		err = set("topP", *req.TopP)
	}
	if req.MaxTokens != nil && err == nil {
		err = set("maxOutputTokens", *req.MaxTokens)
	}
	if len(req.Stop) > 0 && err == nil {
		err = set("stopSequences", req.Stop)
	}
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(&r)
	if err != nil || len(p.top) == 0 {
		return b, err
	}
	// Splice request-level params in after the known fields.
	extra, err := json.Marshal(p.top)
	if err != nil {
		return nil, err
	}
	b = append(b[:len(b)-1], ',')
	return append(b, extra[1:]...), nil
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
	u := p.base + "/models/" + url.PathEscape(model)
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
	hr.Header = p.header
	resp, err := p.client.Do(hr)
	if err != nil {
		cancel()
		return nil, llm.TransportError(p.cfg.Name, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		b := llm.ReadError(resp)
		cancel()
		return nil, p.httpError(resp, b)
	}
	s := &stream{p: p, body: resp.Body}
	s.release = sync.OnceFunc(func() { cancel(); resp.Body.Close() })
	if !req.Stream {
		defer s.release()
		b, err := io.ReadAll(io.LimitReader(resp.Body, maxWhole))
		if err != nil {
			return nil, llm.TransportError(p.cfg.Name, err)
		}
		c, err := s.decode(b)
		if err != nil {
			return nil, err
		}
		if s.hasUsage && c.Usage == nil {
			c.Usage = s.usageOut()
		}
		// Nothing else uses the scanner's buffers: the chunk may keep them.
		return llm.Single(c), nil
	}
	s.rd = sse.NewReader(resp.Body, maxEvent)
	return s, nil
}

// responseFormat maps OpenAI's response_format: json_object asks for JSON
// (responseMimeType), json_schema for JSON following its schema (responseJsonSchema).
// text, null or an unknown type ask for nothing.
func responseFormat(raw json.RawMessage, set func(string, any) error) error {
	// The gateway checked the shape; the type and the schema are read apart so that
	// one cannot spoil the other.
	var rf struct {
		Type       string          `json:"type"`
		JSONSchema json.RawMessage `json:"json_schema"`
	}
	if json.Unmarshal(raw, &rf) != nil {
		return nil // not an object: left to the upstream's defaults
	}
	switch rf.Type {
	case "json_object":
		return set("responseMimeType", "application/json")
	case "json_schema":
		if err := set("responseMimeType", "application/json"); err != nil {
			return err
		}
		var js struct {
			Schema json.RawMessage `json:"schema"`
		}
		if json.Unmarshal(rf.JSONSchema, &js) == nil && len(js.Schema) > 0 && string(js.Schema) != "null" {
			return set("responseJsonSchema", js.Schema)
		}
	}
	return nil
}

// googleError is the inside of Google's error envelope {"error": {...}}.
type googleError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	Status  string `json:"status"`
	Details []struct {
		RetryDelay string `json:"retryDelay"` // google.rpc.RetryInfo: "12s", "12.5s"
		Reason     string `json:"reason"`     // google.rpc.ErrorInfo: "API_KEY_INVALID", ...
	} `json:"details"`
}

// providerFault tells the errors that say our access to Gemini is broken, whatever the
// request: Google answers a bad, expired or blocked API key with 400 INVALID_ARGUMENT
// (reason API_KEY_INVALID, ...), not 401, and an unsupported region with 400
// FAILED_PRECONDITION ("User location is not supported for the API use").
func (e *googleError) providerFault() bool {
	if e.Status == "FAILED_PRECONDITION" {
		return true
	}
	for _, d := range e.Details {
		switch d.Reason {
		case "API_KEY_INVALID", "API_KEY_EXPIRED", "API_KEY_SERVICE_BLOCKED", "API_KEY_HTTP_REFERRER_BLOCKED",
			"API_KEY_IP_ADDRESS_BLOCKED", "API_KEY_ANDROID_APP_BLOCKED", "API_KEY_IOS_APP_BLOCKED",
			"SERVICE_DISABLED", "CONSUMER_SUSPENDED", "BILLING_DISABLED", "ACCESS_TOKEN_EXPIRED":
			return true
		}
	}
	return false
}

func (e *googleError) text() string {
	if e.Status != "" && e.Message != "" {
		return e.Status + ": " + e.Message
	}
	return e.Status + e.Message
}

func (e *googleError) retryDelay() time.Duration {
	for _, d := range e.Details {
		if v, err := time.ParseDuration(strings.TrimSpace(d.RetryDelay)); err == nil && v > 0 {
			return v
		}
	}
	return 0
}

// parseEnvelope reads {"error":{...}}, also when wrapped in an array as Google does
// for some streaming endpoints. ok is false when b is not such an envelope.
func parseEnvelope(b []byte) (e googleError, ok bool) {
	var env struct {
		Error *googleError `json:"error"`
	}
	if json.Unmarshal(b, &env) == nil && env.Error != nil {
		return *env.Error, true
	}
	var arr []json.RawMessage
	if json.Unmarshal(b, &arr) == nil && len(arr) > 0 && json.Unmarshal(arr[0], &env) == nil && env.Error != nil {
		return *env.Error, true
	}
	return googleError{}, false
}

// httpError maps a non-2xx answer. Retry-After wins over a RetryInfo retryDelay.
func (p *Provider) httpError(resp *http.Response, b []byte) *llm.UpstreamError {
	msg := strings.TrimSpace(string(b))
	var retry time.Duration
	fault := false
	if e, ok := parseEnvelope(b); ok {
		msg, retry, fault = e.text(), e.retryDelay(), e.providerFault()
	}
	if msg == "" {
		msg = http.StatusText(resp.StatusCode)
	}
	if ra := llm.RetryAfter(resp.Header, resp.StatusCode, time.Now()); ra > 0 {
		retry = ra
	}
	return &llm.UpstreamError{Provider: p.cfg.Name, Status: resp.StatusCode,
		Message: llm.SanitizeSecrets(msg, p.secrets, maxMessage), RetryAfter: retry, ProviderFault: fault}
}

// streamError maps the value of an "error" member inside a 200 answer.
func (p *Provider) streamError(raw []byte) *llm.UpstreamError {
	var e googleError
	if json.Unmarshal(raw, &e) != nil {
		var s string
		if json.Unmarshal(raw, &s) == nil {
			e.Message = s
		}
	}
	status := e.Code
	if status < 400 || status > 599 {
		status = http.StatusBadGateway
	}
	msg := e.text()
	if msg == "" {
		msg = "error in upstream stream"
	}
	return &llm.UpstreamError{Provider: p.cfg.Name, Status: status,
		Message: llm.SanitizeSecrets(msg, p.secrets, maxMessage), RetryAfter: e.retryDelay()}
}

// stream reads a :streamGenerateContent?alt=sse answer (or decodes a whole one).
type stream struct {
	p       *Provider
	body    io.ReadCloser
	release func()
	rd      *sse.Reader
	sc      scanner
	err     error // terminal: returned by every Recv once set
	closed  atomic.Bool

	usage     usage // latest usageMetadata: Gemini repeats it, growing, on every event
	hasUsage  bool
	sent      usage // usage as last emitted
	usageSent bool
	finished  bool
}

// finishReason maps Gemini's finish reasons to OpenAI's.
func finishReason(r []byte) string {
	switch string(r) {
	case "STOP":
		return "stop"
	case "MAX_TOKENS":
		return "length"
	case "SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "LANGUAGE",
		"IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION":
		return "content_filter"
	}
	// OTHER, FINISH_REASON_UNSPECIFIED, MALFORMED_FUNCTION_CALL, a reason added later:
	// OpenAI's clients know only their own values (some throw on any other).
	return "stop"
}

// usageOut emits the latest usage; completion tokens include thinking tokens, which
// Google bills as output.
func (s *stream) usageOut() *llm.Usage {
	s.sent, s.usageSent = s.usage, true
	u := s.usage
	return &llm.Usage{PromptTokens: u.Prompt, CompletionTokens: u.Candidates + u.Thoughts, TotalTokens: u.Total}
}

// decode converts one response object into a chunk. Usage is kept aside and only
// put on the finish chunk: Gemini repeats it on every event and only the last is final.
func (s *stream) decode(data []byte) (llm.Chunk, error) {
	f, err := s.sc.parse(data)
	if err != nil {
		return llm.Chunk{}, fmt.Errorf("%s: %w", s.p.cfg.Name, err)
	}
	if f.Error != nil {
		return llm.Chunk{}, s.p.streamError(f.Error)
	}
	if f.HasUsage {
		s.usage, s.hasUsage = f.Usage, true
	}
	if !f.HasCandidate && len(f.BlockReason) > 0 {
		return llm.Chunk{}, &llm.UpstreamError{Provider: s.p.cfg.Name, Status: http.StatusBadRequest,
			Message: "prompt blocked: " + llm.SanitizeSecrets(string(f.BlockReason), s.p.secrets, 64)}
	}
	c := llm.Chunk{Text: f.Text, Reasoning: f.Reasoning}
	if f.Finish != nil {
		s.finished = true
		c.FinishReason = finishReason(f.Finish)
		if s.hasUsage {
			c.Usage = s.usageOut()
		}
	}
	return c, nil
}

// Recv returns the next chunk with something in it, io.EOF at the end of a complete
// answer (one with a finish reason: Gemini has no end marker), or an error:
// *llm.UpstreamError for an error the upstream reported, an error wrapping
// io.ErrUnexpectedEOF when the body ended before a finish reason.
//
// Text and Reasoning alias buffers that the next Recv overwrites. Usage comes once,
// with the finish chunk, or in a chunk of its own at the end if it changed after it.
func (s *stream) Recv() (llm.Chunk, error) {
	if s.err != nil {
		return llm.Chunk{}, s.err
	}
	if s.closed.Load() {
		return llm.Chunk{}, s.fail(errClosed)
	}
	for {
		ev, err := s.rd.Next()
		if err != nil {
			if s.closed.Load() {
				return llm.Chunk{}, s.fail(errClosed)
			}
			err = s.endErr(err)
			if err == io.EOF && s.hasUsage && (!s.usageSent || s.usage != s.sent) {
				s.fail(err)
				return llm.Chunk{Usage: s.usageOut()}, nil
			}
			return llm.Chunk{}, s.fail(err)
		}
		data := bytes.TrimSpace(ev.Data)
		if len(data) == 0 {
			continue
		}
		c, err := s.decode(data)
		if err != nil {
			return llm.Chunk{}, s.fail(err)
		}
		if len(c.Text) == 0 && len(c.Reasoning) == 0 && c.FinishReason == "" && c.Usage == nil {
			continue
		}
		return c, nil
	}
}

// endErr maps the reader's error at the end of input.
func (s *stream) endErr(err error) error {
	switch {
	case err == io.EOF && s.finished:
		return io.EOF
	case err == io.EOF:
		return fmt.Errorf("%s: stream ended without a finish reason: %w", s.p.cfg.Name, io.ErrUnexpectedEOF)
	case errors.Is(err, sse.ErrEventTooLarge):
		return fmt.Errorf("%s: %w", s.p.cfg.Name, err)
	}
	return fmt.Errorf("%s: read stream: %w", s.p.cfg.Name, err)
}

// fail makes err terminal and releases the request.
func (s *stream) fail(err error) error {
	s.err = err
	if s.rd != nil { // the stream is over: its reader goes back to the pool
		s.rd.Release()
		s.rd = nil
	}
	if s.release != nil {
		s.release()
	}
	return err
}

// SetBeforeWait implements llm.WaitNotifier.
func (s *stream) SetBeforeWait(fn func()) {
	if s.rd != nil {
		s.rd.SetBeforeWait(fn)
	}
}

// Close aborts the upstream request if it is still running; a Recv blocked in
// another goroutine then returns. It is safe to call more than once.
func (s *stream) Close() error {
	s.closed.Store(true)
	if s.release != nil {
		s.release()
	}
	return nil
}
