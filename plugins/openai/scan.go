package openai

import (
	"errors"

	"github.com/ralf-gateway/ralf/core/jsonscan"
	"github.com/ralf-gateway/ralf/core/llm"
)

// errMalformed marks a chunk that is not valid JSON. Its text never includes the
// chunk itself, as that would put message content into logs.
var errMalformed = errors.New("malformed JSON chunk")

// maxDepth bounds nesting in skipped values so hostile input cannot recurse deeply.
const maxDepth = jsonscan.MaxDepth

// fields is what one chat.completion(.chunk) object carries that the gateway needs.
// It is decoded by a small hand-written scanner because encoding/json with reflection
// costs several allocations per chunk on the hot path. Text and Reasoning alias either
// the input (strings without escapes) or the scanner's scratch buffers.
type fields struct {
	Text, Reasoning []byte
	HasText         bool // content was a string (possibly empty)
	HasReasoning    bool
	Finish          []byte // finish_reason when it is a non-empty string
	Usage           llm.Usage
	HasUsage        bool // top-level usage object
	GroqUsage       llm.Usage
	HasGroqUsage    bool   // x_groq.usage object
	Error           []byte // raw JSON of a non-null top-level "error" value
}

// scanner decodes chunks with the shared jsonscan primitives; it only says which
// fields to read. Its buffers are reused from one chunk to the next.
type scanner struct {
	jsonscan.Scanner
	textBuf   []byte
	reasonBuf []byte
	f         fields
}

// parse decodes one JSON object into s.f. The result is valid until the next parse.
func (s *scanner) parse(d []byte) (*fields, error) {
	s.f = fields{}
	s.textBuf = s.textBuf[:0]
	s.reasonBuf = s.reasonBuf[:0]
	if err := s.Scan(d, s.topKey); err != nil {
		return nil, errMalformed
	}
	return &s.f, nil
}

func (s *scanner) topKey(key []byte, i int) (int, error) {
	switch string(key) {
	case "choices":
		if s.Is(i, '[') {
			return s.Array(i, s.choice)
		}
	case "usage":
		if s.Is(i, '{') {
			s.f.Usage = llm.Usage{}
			s.f.HasUsage = true
			return s.Object(i, s.usageKey(&s.f.Usage))
		}
	case "x_groq":
		if s.Is(i, '{') {
			return s.Object(i, s.groqKey)
		}
	case "error":
		end, err := s.Skip(i, 0)
		if err != nil {
			return 0, err
		}
		if s.IsNull(i) {
			s.f.Error = nil
		} else {
			s.f.Error = s.Data[i:end]
		}
		return end, nil
	}
	return s.Skip(i, 0)
}

func (s *scanner) groqKey(key []byte, i int) (int, error) {
	if string(key) == "usage" {
		if s.Is(i, '{') {
			s.f.GroqUsage = llm.Usage{}
			s.f.HasGroqUsage = true
			return s.Object(i, s.usageKey(&s.f.GroqUsage))
		}
	}
	return s.Skip(i, 0)
}

// usageKey returns a member func filling u. It is only called on the usage path
// (about once per stream), so the closure allocation does not matter.
func (s *scanner) usageKey(u *llm.Usage) jsonscan.MemberFunc {
	return func(key []byte, i int) (int, error) {
		var dst *int
		switch string(key) {
		case "prompt_tokens":
			dst = &u.PromptTokens
		case "completion_tokens":
			dst = &u.CompletionTokens
		case "total_tokens":
			dst = &u.TotalTokens
		default:
			return s.Skip(i, 0)
		}
		end, err := s.Skip(i, 0)
		if err != nil {
			return 0, err
		}
		if n, ok := jsonscan.ParseInt(s.Data[i:end]); ok {
			*dst = n
		}
		return end, nil
	}
}

// choice reads one element of choices: the first is decoded, the rest skipped.
func (s *scanner) choice(n, i int) (int, error) {
	if n == 0 && s.Is(i, '{') {
		return s.Object(i, s.choiceKey)
	}
	return s.Skip(i, 1)
}

func (s *scanner) choiceKey(key []byte, i int) (int, error) {
	switch string(key) {
	case "delta", "message":
		if s.Is(i, '{') {
			return s.Object(i, s.deltaKey)
		}
	case "finish_reason":
		if s.Is(i, '"') {
			b, next, err := s.StrValue(i, nil)
			if err != nil {
				return 0, err
			}
			if len(b) > 0 {
				s.f.Finish = b
			}
			return next, nil
		}
	}
	return s.Skip(i, 1)
}

func (s *scanner) deltaKey(key []byte, i int) (int, error) {
	switch string(key) {
	case "content":
		if s.Is(i, '"') {
			b, next, err := s.StrValue(i, &s.textBuf)
			if err != nil {
				return 0, err
			}
			s.f.Text, s.f.HasText = b, true
			return next, nil
		}
	case "reasoning", "reasoning_content":
		if s.Is(i, '"') {
			b, next, err := s.StrValue(i, &s.reasonBuf)
			if err != nil {
				return 0, err
			}
			// Both spellings may appear with one of them null; null and values of
			// other types leave what was found untouched.
			s.f.Reasoning, s.f.HasReasoning = b, true
			return next, nil
		}
	}
	return s.Skip(i, 2)
}
