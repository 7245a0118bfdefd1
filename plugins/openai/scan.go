package openai

import (
	"errors"
	"math"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/ralf-gateway/ralf/core/llm"
)

// errMalformed marks a chunk that is not valid JSON. Its text never includes the
// chunk itself, as that would put message content into logs.
var errMalformed = errors.New("malformed JSON chunk")

// maxDepth bounds nesting in skipped values so hostile input cannot recurse deeply.
const maxDepth = 256

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

// scanner decodes chunks; its buffers are reused from one chunk to the next.
type scanner struct {
	d         []byte
	textBuf   []byte
	reasonBuf []byte
	f         fields
}

// parse decodes one JSON object into s.f. The result is valid until the next parse.
func (s *scanner) parse(d []byte) (*fields, error) {
	s.d = d
	s.f = fields{}
	s.textBuf = s.textBuf[:0]
	s.reasonBuf = s.reasonBuf[:0]
	i := s.ws(0)
	i, err := s.object(i, s.topKey)
	if err != nil {
		return nil, err
	}
	if i = s.ws(i); i != len(d) {
		return nil, errMalformed
	}
	return &s.f, nil
}

func (s *scanner) ws(i int) int {
	for i < len(s.d) {
		switch s.d[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// object walks the object at i, calling member for each key with the index of its
// value; member returns the index after the value. It returns the index after '}'.
// Callers only call it on '{'; fields of unexpected types are skipped by the members.
func (s *scanner) object(i int, member func(key []byte, i int) (int, error)) (int, error) {
	if i >= len(s.d) || s.d[i] != '{' {
		return 0, errMalformed
	}
	i = s.ws(i + 1)
	if i < len(s.d) && s.d[i] == '}' {
		return i + 1, nil
	}
	for {
		if i >= len(s.d) || s.d[i] != '"' {
			return 0, errMalformed
		}
		ks, ke, esc, next, err := s.str(i)
		if err != nil {
			return 0, err
		}
		key := s.d[ks:ke]
		if esc {
			// Real keys never carry escapes, but "\u0063ontent" is still "content"
			// to any JSON decoder; this rare path may allocate.
			key = appendUnescaped(nil, key)
		}
		i = s.ws(next)
		if i >= len(s.d) || s.d[i] != ':' {
			return 0, errMalformed
		}
		i = s.ws(i + 1)
		if i, err = member(key, i); err != nil {
			return 0, err
		}
		i = s.ws(i)
		if i >= len(s.d) {
			return 0, errMalformed
		}
		switch s.d[i] {
		case ',':
			i = s.ws(i + 1)
		case '}':
			return i + 1, nil
		default:
			return 0, errMalformed
		}
	}
}

func (s *scanner) topKey(key []byte, i int) (int, error) {
	switch string(key) {
	case "choices":
		if i < len(s.d) && s.d[i] == '[' {
			return s.choices(i)
		}
	case "usage":
		if i < len(s.d) && s.d[i] == '{' {
			s.f.Usage = llm.Usage{}
			s.f.HasUsage = true
			return s.object(i, s.usageKey(&s.f.Usage))
		}
	case "x_groq":
		if i < len(s.d) && s.d[i] == '{' {
			return s.object(i, s.groqKey)
		}
	case "error":
		end, err := s.skip(i, 0)
		if err != nil {
			return 0, err
		}
		if s.isNull(i) {
			s.f.Error = nil
		} else {
			s.f.Error = s.d[i:end]
		}
		return end, nil
	}
	return s.skip(i, 0)
}

func (s *scanner) groqKey(key []byte, i int) (int, error) {
	if string(key) == "usage" {
		if i < len(s.d) && s.d[i] == '{' {
			s.f.GroqUsage = llm.Usage{}
			s.f.HasGroqUsage = true
			return s.object(i, s.usageKey(&s.f.GroqUsage))
		}
	}
	return s.skip(i, 0)
}

// usageKey returns a member func filling u. It is only called on the usage path
// (about once per stream), so the closure allocation does not matter.
func (s *scanner) usageKey(u *llm.Usage) func([]byte, int) (int, error) {
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
			return s.skip(i, 0)
		}
		end, err := s.skip(i, 0)
		if err != nil {
			return 0, err
		}
		if n, ok := parseInt(s.d[i:end]); ok {
			*dst = n
		}
		return end, nil
	}
}

// choices decodes the first element of the choices array and skips the rest.
func (s *scanner) choices(i int) (int, error) {
	i = s.ws(i + 1)
	if i < len(s.d) && s.d[i] == ']' {
		return i + 1, nil
	}
	for n := 0; ; n++ {
		var err error
		if n == 0 && i < len(s.d) && s.d[i] == '{' {
			i, err = s.object(i, s.choiceKey)
		} else {
			i, err = s.skip(i, 1)
		}
		if err != nil {
			return 0, err
		}
		i = s.ws(i)
		if i >= len(s.d) {
			return 0, errMalformed
		}
		switch s.d[i] {
		case ',':
			i = s.ws(i + 1)
		case ']':
			return i + 1, nil
		default:
			return 0, errMalformed
		}
	}
}

func (s *scanner) choiceKey(key []byte, i int) (int, error) {
	switch string(key) {
	case "delta", "message":
		if i < len(s.d) && s.d[i] == '{' {
			return s.object(i, s.deltaKey)
		}
	case "finish_reason":
		if i < len(s.d) && s.d[i] == '"' {
			b, next, err := s.strValue(i, nil)
			if err != nil {
				return 0, err
			}
			if len(b) > 0 {
				s.f.Finish = b
			}
			return next, nil
		}
	}
	return s.skip(i, 1)
}

func (s *scanner) deltaKey(key []byte, i int) (int, error) {
	switch string(key) {
	case "content":
		if i < len(s.d) && s.d[i] == '"' {
			b, next, err := s.strValue(i, &s.textBuf)
			if err != nil {
				return 0, err
			}
			s.f.Text, s.f.HasText = b, true
			return next, nil
		}
	case "reasoning", "reasoning_content":
		if i < len(s.d) && s.d[i] == '"' {
			b, next, err := s.strValue(i, &s.reasonBuf)
			if err != nil {
				return 0, err
			}
			// Both spellings may appear with one of them null; null and values of
			// other types leave what was found untouched.
			s.f.Reasoning, s.f.HasReasoning = b, true
			return next, nil
		}
	}
	return s.skip(i, 2)
}

func (s *scanner) isNull(i int) bool {
	return i+4 <= len(s.d) && string(s.d[i:i+4]) == "null"
}

// strValue decodes the string at i. Without escapes it aliases the input; with
// escapes it decodes into *buf (reset first) so no allocation happens once the
// buffer has grown. A nil buf means "scratch, not kept" and uses a fresh slice.
func (s *scanner) strValue(i int, buf *[]byte) ([]byte, int, error) {
	st, en, esc, next, err := s.str(i)
	if err != nil {
		return nil, 0, err
	}
	if !esc {
		return s.d[st:en], next, nil
	}
	if buf == nil {
		return appendUnescaped(nil, s.d[st:en]), next, nil
	}
	*buf = appendUnescaped((*buf)[:0], s.d[st:en])
	return *buf, next, nil
}

// str validates the string starting at the quote at i and returns the bounds of its
// raw contents, whether it holds escapes, and the index after the closing quote.
func (s *scanner) str(i int) (start, end int, esc bool, next int, err error) {
	d := s.d
	start = i + 1
	for j := start; j < len(d); j++ {
		c := d[j]
		switch {
		case c == '"':
			return start, j, esc, j + 1, nil
		case c == '\\':
			esc = true
			j++
			if j >= len(d) {
				return 0, 0, false, 0, errMalformed
			}
			switch d[j] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if j+4 >= len(d) {
					return 0, 0, false, 0, errMalformed
				}
				for k := 1; k <= 4; k++ {
					if unhex(d[j+k]) < 0 {
						return 0, 0, false, 0, errMalformed
					}
				}
				j += 4
			default:
				return 0, 0, false, 0, errMalformed
			}
		case c < 0x20:
			return 0, 0, false, 0, errMalformed
		}
	}
	return 0, 0, false, 0, errMalformed
}

// skip validates and steps over any JSON value at i, returning the index after it.
func (s *scanner) skip(i, depth int) (int, error) {
	d := s.d
	if i >= len(d) {
		return 0, errMalformed
	}
	switch c := d[i]; {
	case c == '"':
		_, _, _, next, err := s.str(i)
		return next, err
	case c == '{':
		if depth >= maxDepth {
			return 0, errMalformed
		}
		return s.object(i, func(_ []byte, j int) (int, error) { return s.skip(j, depth+1) })
	case c == '[':
		if depth >= maxDepth {
			return 0, errMalformed
		}
		i = s.ws(i + 1)
		if i < len(d) && d[i] == ']' {
			return i + 1, nil
		}
		for {
			var err error
			if i, err = s.skip(i, depth+1); err != nil {
				return 0, err
			}
			i = s.ws(i)
			if i >= len(d) {
				return 0, errMalformed
			}
			switch d[i] {
			case ',':
				i = s.ws(i + 1)
			case ']':
				return i + 1, nil
			default:
				return 0, errMalformed
			}
		}
	case c == 't':
		return s.lit(i, "true")
	case c == 'f':
		return s.lit(i, "false")
	case c == 'n':
		return s.lit(i, "null")
	case c == '-' || (c >= '0' && c <= '9'):
		return s.number(i)
	}
	return 0, errMalformed
}

func (s *scanner) lit(i int, w string) (int, error) {
	if i+len(w) <= len(s.d) && string(s.d[i:i+len(w)]) == w {
		return i + len(w), nil
	}
	return 0, errMalformed
}

// number validates a JSON number (RFC 8259 grammar) at i.
func (s *scanner) number(i int) (int, error) {
	d := s.d
	if i < len(d) && d[i] == '-' {
		i++
	}
	switch {
	case i < len(d) && d[i] == '0':
		i++
	case i < len(d) && d[i] >= '1' && d[i] <= '9':
		for i < len(d) && d[i] >= '0' && d[i] <= '9' {
			i++
		}
	default:
		return 0, errMalformed
	}
	if i < len(d) && d[i] == '.' {
		i++
		if i >= len(d) || d[i] < '0' || d[i] > '9' {
			return 0, errMalformed
		}
		for i < len(d) && d[i] >= '0' && d[i] <= '9' {
			i++
		}
	}
	if i < len(d) && (d[i] == 'e' || d[i] == 'E') {
		i++
		if i < len(d) && (d[i] == '+' || d[i] == '-') {
			i++
		}
		if i >= len(d) || d[i] < '0' || d[i] > '9' {
			return 0, errMalformed
		}
		for i < len(d) && d[i] >= '0' && d[i] <= '9' {
			i++
		}
	}
	return i, nil
}

// parseInt reads a token count. Integers are the norm; a number with a fraction or
// exponent is truncated, and anything else (or out of range) is rejected.
func parseInt(b []byte) (int, bool) {
	if len(b) == 0 || b[0] == '"' || b[0] == 'n' || b[0] == 't' || b[0] == 'f' || b[0] == '{' || b[0] == '[' {
		return 0, false
	}
	neg := b[0] == '-'
	j := 0
	if neg {
		j = 1
	}
	var n int64
	for ; j < len(b); j++ {
		c := b[j]
		if c < '0' || c > '9' {
			return parseFloatInt(b)
		}
		if n > (math.MaxInt32-int64(c-'0'))/10 {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	if neg {
		n = -n
	}
	return int(n), true
}

func parseFloatInt(b []byte) (int, bool) {
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil || math.IsNaN(f) || f > math.MaxInt32 || f < math.MinInt32 {
		return 0, false
	}
	return int(f), true
}

func unhex(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

func hex4(b []byte) rune {
	return rune(unhex(b[0])<<12 | unhex(b[1])<<8 | unhex(b[2])<<4 | unhex(b[3]))
}

// appendUnescaped appends the decoded form of the raw (already validated) string
// contents src to dst, as encoding/json does: \uXXXX surrogate pairs are combined
// and a lone surrogate becomes U+FFFD.
func appendUnescaped(dst, src []byte) []byte {
	for i := 0; i < len(src); {
		c := src[i]
		if c != '\\' {
			j := i + 1
			for j < len(src) && src[j] != '\\' {
				j++
			}
			dst = append(dst, src[i:j]...)
			i = j
			continue
		}
		if i+1 >= len(src) {
			return dst
		}
		switch src[i+1] {
		case '"', '\\', '/':
			dst = append(dst, src[i+1])
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			if i+6 > len(src) {
				return dst
			}
			r := hex4(src[i+2 : i+6])
			i += 6
			if utf16.IsSurrogate(r) {
				if i+6 <= len(src) && src[i] == '\\' && src[i+1] == 'u' && validHex4(src[i+2:i+6]) {
					if r2 := utf16.DecodeRune(r, hex4(src[i+2:i+6])); r2 != utf8.RuneError {
						dst = utf8.AppendRune(dst, r2)
						i += 6
						continue
					}
				}
				r = utf8.RuneError
			}
			dst = utf8.AppendRune(dst, r)
			continue
		}
		i += 2
	}
	return dst
}

func validHex4(b []byte) bool {
	for _, c := range b {
		if unhex(c) < 0 {
			return false
		}
	}
	return true
}
