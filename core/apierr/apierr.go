// Package apierr writes error answers in the shape the client's API expects:
// the seed's {"error":"...","status":N} on /chat and elsewhere, and OpenAI's
// {"error":{"message","type","code"}} under /v1.
package apierr

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
)

// IsOpenAI reports whether the request is on the OpenAI-compatible API.
func IsOpenAI(r *http.Request) bool {
	return r != nil && (r.URL.Path == "/v1" || strings.HasPrefix(r.URL.Path, "/v1/"))
}

// Write sends a JSON error with status for the request's API shape.
func Write(w http.ResponseWriter, r *http.Request, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Del("Content-Length")
	w.WriteHeader(status)
	_, _ = w.Write(Body(r, status, msg))
}

// Body is the JSON error body Write sends, without a trailing newline.
func Body(r *http.Request, status int, msg string) []byte {
	var v any
	if IsOpenAI(r) {
		v = map[string]any{"error": map[string]any{"message": msg, "type": Type(status), "code": Code(status)}}
	} else {
		v = struct {
			Error  string `json:"error"`
			Status int    `json:"status"`
		}{msg, status}
	}
	// No HTML escaping: messages like "Bearer <key>" stay readable.
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

// Type is the OpenAI error type for a status.
func Type(status int) string {
	switch {
	case status == 401 || status == 403:
		return "authentication_error"
	case status == 429:
		return "rate_limit_error"
	case status == 404:
		return "not_found_error"
	case status >= 500:
		return "api_error"
	}
	return "invalid_request_error"
}

// Code is the OpenAI error code for a status.
func Code(status int) string {
	switch status {
	case 400:
		return "invalid_request"
	case 401:
		return "missing_api_key"
	case 403:
		return "invalid_api_key"
	case 404:
		return "not_found"
	case 405:
		return "method_not_allowed"
	case 413:
		return "request_too_large"
	case 415:
		return "unsupported_media_type"
	case 429:
		return "rate_limit_exceeded"
	case 502:
		return "upstream_error"
	case 503:
		return "no_provider_available"
	case 504:
		return "upstream_timeout"
	}
	return "error"
}
