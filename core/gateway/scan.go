package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"unicode/utf8"

	"github.com/ralf-gateway/ralf/core/jsonscan"
)

// The request bodies are decoded in one pass by a small scanner when they have the
// usual shape: string roles and contents, numbers where numbers go, no nulls. That
// costs a fraction of encoding/json's reflection (a map of raw values, then one
// Unmarshal per field). Anything else (a syntax error, a null, a wrong type, content
// parts, a non-integer count, invalid UTF-8, a key that differs from a known one only
// by case) makes the scanner give up, and encoding/json decodes the body as before:
// its result, or its precise error message, is the reference. Whatever the scanner
// accepts, it decodes exactly as encoding/json would.

// errSlow: the body is left to encoding/json.
var errSlow = errors.New("gateway: not the usual request shape")

type bodyScanner struct {
	sc jsonscan.Scanner
}

// str reads a string value; it gives up on invalid UTF-8, which encoding/json
// replaces with U+FFFD.
func (s *bodyScanner) str(i int) (string, int, error) {
	if !s.sc.Is(i, '"') {
		return "", 0, errSlow
	}
	v, next, err := s.sc.StrValue(i, nil)
	if err != nil || !utf8.Valid(v) {
		return "", 0, errSlow
	}
	return string(v), next, nil
}

func (s *bodyScanner) float(i int) (*float64, int, error) {
	end, err := s.sc.Number(i)
	if err != nil {
		return nil, 0, errSlow
	}
	v, err := strconv.ParseFloat(string(s.sc.Data[i:end]), 64)
	if err != nil {
		return nil, 0, errSlow
	}
	return &v, end, nil
}

// integer reads a number without fraction or exponent, as encoding/json requires
// for an int.
func (s *bodyScanner) integer(i int) (*int, int, error) {
	end, err := s.sc.Number(i)
	if err != nil {
		return nil, 0, errSlow
	}
	v, err := strconv.Atoi(string(s.sc.Data[i:end]))
	if err != nil {
		return nil, 0, errSlow
	}
	return &v, end, nil
}

func (s *bodyScanner) boolean(i int) (bool, int, error) {
	if s.sc.Is(i, 't') {
		end, err := s.sc.Literal(i, "true")
		return true, end, err
	}
	if s.sc.Is(i, 'f') {
		end, err := s.sc.Literal(i, "false")
		return false, end, err
	}
	return false, 0, errSlow
}

// skip steps over a member that encoding/json would ignore in a struct. A key that
// matches one of the struct's fields only without regard to case would not be
// ignored there (encoding/json matches names case-insensitively), so that body is
// left to it.
func (s *bodyScanner) skip(key []byte, i int, fields ...string) (int, error) {
	for _, f := range fields {
		if bytes.EqualFold(key, []byte(f)) {
			return 0, errSlow
		}
	}
	return s.sc.Skip(i, 1)
}

// messages reads an array of {"role": string, "content": string} objects.
func (s *bodyScanner) messages(i int) ([]wireMessage, int, error) {
	if !s.sc.Is(i, '[') {
		return nil, 0, errSlow
	}
	msgs := make([]wireMessage, 0, 4)
	end, err := s.sc.Array(i, func(_, j int) (int, error) {
		var m wireMessage
		next, err := s.sc.Object(j, func(key []byte, k int) (int, error) {
			switch string(key) {
			case "role":
				v, next, err := s.str(k)
				m.Role = &v
				return next, err
			case "content":
				v, next, err := s.str(k)
				m.Content = content{text: v, set: true}
				return next, err
			case "name":
				v, next, err := s.str(k)
				m.Name = &v
				return next, err
			}
			return s.skip(key, k, "role", "content", "name")
		})
		msgs = append(msgs, m)
		return next, err
	})
	if err != nil {
		return nil, 0, errSlow
	}
	return msgs, end, nil
}

// shared reads the members both endpoints have; ok is false for any other key.
func (s *bodyScanner) shared(key []byte, i int, msgs *[]wireMessage, temp, topP **float64, maxTokens **int) (next int, ok bool, err error) {
	switch string(key) {
	case "messages":
		*msgs, next, err = s.messages(i)
	case "temperature":
		*temp, next, err = s.float(i)
	case "top_p":
		*topP, next, err = s.float(i)
	case "max_tokens":
		*maxTokens, next, err = s.integer(i)
	default:
		return 0, false, nil
	}
	return next, true, err
}

// scanOpenAI decodes the usual /v1/chat/completions body into b and extra, the
// members that are not openAIKnown. It returns false when encoding/json must decode
// the body instead.
func scanOpenAI(body []byte, b *openAIBody, extra *map[string]json.RawMessage) bool {
	var s bodyScanner
	err := s.sc.Scan(body, func(key []byte, i int) (next int, err error) {
		if s.sc.IsNull(i) {
			return 0, errSlow
		}
		if next, ok, err := s.shared(key, i, &b.Messages, &b.Temperature, &b.TopP, &b.MaxTokens); ok {
			return next, err
		}
		switch string(key) {
		case "model":
			b.Model, next, err = s.str(i)
		case "stream":
			b.Stream, next, err = s.boolean(i)
		case "stream_options":
			var include bool
			next, err = s.sc.Object(i, func(key []byte, j int) (int, error) {
				if string(key) == "include_usage" {
					v, next, err := s.boolean(j)
					include = v
					return next, err
				}
				return s.skip(key, j, "include_usage")
			})
			b.StreamOptions = &struct {
				IncludeUsage bool `json:"include_usage"`
			}{include}
		case "max_completion_tokens":
			b.MaxCompletionTokens, next, err = s.integer(i)
		case "n":
			b.N, next, err = s.integer(i)
		case "stop":
			next, err = s.sc.Skip(i, 1)
			if err == nil {
				b.Stop = body[i:next]
			}
		default:
			if !utf8.Valid(key) { // encoding/json would replace the bad bytes
				return 0, errSlow
			}
			next, err = s.sc.Skip(i, 1)
			if err == nil {
				if *extra == nil {
					*extra = make(map[string]json.RawMessage)
				}
				(*extra)[string(key)] = body[i:next]
			}
		}
		return next, err
	})
	return err == nil
}

var chatFields = [...]string{"messages", "provider", "temperature", "top_p", "max_tokens", "stream"}

// scanChat decodes the usual POST /chat body into b; false when encoding/json must
// decode it instead.
func scanChat(body []byte, b *chatBody) bool {
	var s bodyScanner
	var seen int
	err := s.sc.Scan(body, func(key []byte, i int) (next int, err error) {
		if s.sc.IsNull(i) {
			return 0, errSlow
		}
		// encoding/json decodes a repeated member into what the first one left (a
		// second messages array into the first one's elements): leave that to it.
		for n, f := range chatFields {
			if string(key) == f {
				if seen&(1<<n) != 0 {
					return 0, errSlow
				}
				seen |= 1 << n
			}
		}
		if next, ok, err := s.shared(key, i, &b.Messages, &b.Temperature, &b.TopP, &b.MaxTokens); ok {
			return next, err
		}
		switch string(key) {
		case "provider":
			b.Provider, next, err = s.str(i)
		case "stream":
			var v bool
			v, next, err = s.boolean(i)
			b.Stream = &v
		default:
			next, err = s.skip(key, i, chatFields[:]...)
		}
		return next, err
	})
	return err == nil
}
