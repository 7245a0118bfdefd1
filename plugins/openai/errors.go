package openai

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/ralf-gateway/ralf/core/llm"
)

const (
	// maxMessage bounds the upstream message kept in an UpstreamError.
	maxMessage = 300
	// maxErrorBody bounds how much of an error answer is read.
	maxErrorBody = 64 << 10
)

// errorPayload is the body of an error in any of the shapes OpenAI-compatible
// servers use: {"error":{"message",...}}, {"error":"..."}, {"message":"..."} or
// FastAPI's {"detail":"..."} (vLLM).
type errorPayload struct {
	Error   json.RawMessage `json:"error"`
	Message json.RawMessage `json:"message"`
	Detail  json.RawMessage `json:"detail"`
}

// errorObject is the inner error object. OpenRouter's code is a number, OpenAI's a
// string, so it stays raw; Groq's mid-stream errors carry status_code.
type errorObject struct {
	Message    json.RawMessage `json:"message"`
	Code       json.RawMessage `json:"code"`
	StatusCode json.RawMessage `json:"status_code"`
	Status     json.RawMessage `json:"status"`
}

// parseErrorValue reads the value of an "error" field: a string or an error object.
// status is 0 when the object names none.
func parseErrorValue(raw []byte) (msg string, status int, ok bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "", 0, false
	}
	if raw[0] == '"' {
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return "", 0, false
		}
		return s, 0, true
	}
	var o errorObject
	if raw[0] != '{' || json.Unmarshal(raw, &o) != nil {
		return "", 0, false
	}
	msg = jsonString(o.Message)
	for _, c := range []json.RawMessage{o.StatusCode, o.Code, o.Status} {
		if n, err := strconv.Atoi(string(bytes.TrimSpace(c))); err == nil && n >= 100 && n <= 599 {
			return msg, n, true
		}
	}
	return msg, 0, true
}

// jsonString returns raw as a string when it is a JSON string, else "".
func jsonString(raw json.RawMessage) string {
	var s string
	if len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
		return ""
	}
	return s
}

// messageFromBody extracts the message of an error answer body, falling back to a
// short excerpt of the text.
func messageFromBody(body []byte) string {
	var p errorPayload
	if json.Unmarshal(body, &p) == nil {
		if msg, _, ok := parseErrorValue(p.Error); ok && msg != "" {
			return msg
		}
		if msg := jsonString(p.Message); msg != "" {
			return msg
		}
		if msg := jsonString(p.Detail); msg != "" {
			return msg
		}
	}
	if !utf8.Valid(body) {
		body = bytes.ToValidUTF8(body, []byte("\uFFFD"))
	}
	// Uncut: llm.Sanitize redacts the key before it bounds the message, so no key is
	// ever shown cut in half, not even one cut where the body's read stopped.
	return string(body)
}

// httpError builds the UpstreamError for a non-2xx answer.
func (p *Provider) httpError(resp *http.Response, body []byte) *llm.UpstreamError {
	msg := messageFromBody(body)
	if strings.TrimSpace(msg) == "" {
		msg = http.StatusText(resp.StatusCode)
	}
	return &llm.UpstreamError{
		Provider:   p.name,
		Status:     resp.StatusCode,
		Message:    llm.SanitizeSecrets(msg, p.secrets, maxMessage),
		RetryAfter: llm.RetryAfter(resp.Header, resp.StatusCode, p.now()),
	}
}

// streamError builds the UpstreamError for an error reported inside a 200 answer:
// Groq's "event: error" or a chunk with a top-level "error" (OpenRouter).
func (p *Provider) streamError(errValue []byte) *llm.UpstreamError {
	msg, status, _ := parseErrorValue(errValue)
	if status == 0 {
		status = http.StatusBadGateway
	}
	if msg == "" {
		msg = "upstream reported an error mid-stream"
	}
	return &llm.UpstreamError{Provider: p.name, Status: status, Message: llm.SanitizeSecrets(msg, p.secrets, maxMessage)}
}

// transportError hides the request URL (and any query) of a client error and names
// the provider, keeping the cause for errors.Is (timeouts, cancellation).
func (p *Provider) transportError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = &url.Error{Op: ue.Op, URL: p.safeURL, Err: ue.Err}
	}
	return fmt.Errorf("%s: %w", p.name, err)
}
