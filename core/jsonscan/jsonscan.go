// Package jsonscan holds the primitives of ralf's hand-written JSON scanners.
//
// The dialect plugins decode one upstream object per streamed chunk. encoding/json
// with reflection costs several allocations per chunk on that hot path; a Scanner
// costs none: it validates the input as it walks it, hands each object member to a
// callback that reads only the fields it needs, and returns strings as slices of the
// input (or of a caller's reused buffer when they hold escapes).
//
// Every index-taking method works on Scanner.Data: i is the offset of a value (or of
// white space before one) and the result is the offset just after what was read.
// Any syntax error is ErrMalformed, whose text never includes the input, as that
// would put message content into logs.
package jsonscan

import (
	"errors"
	"math"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// ErrMalformed is returned for input that is not valid JSON (RFC 8259), or that nests
// deeper than MaxDepth.
var ErrMalformed = errors.New("malformed JSON")

// MaxDepth bounds nesting in skipped values so hostile input cannot recurse deeply.
const MaxDepth = 256

// MemberFunc handles the value of one object member starting at i and returns the
// index after it. key aliases the input unless it held escapes.
type MemberFunc func(key []byte, i int) (int, error)

// ElemFunc handles the array element at position n starting at i and returns the
// index after it.
type ElemFunc func(n, i int) (int, error)

// Scanner walks the JSON text in Data. The zero value is ready once Data is set;
// a plugin embeds it beside its own buffers and result fields.
type Scanner struct {
	Data []byte
}

// Scan sets Data to d and walks the single JSON object it must hold, with optional
// white space around it, calling member for each top-level key.
func (s *Scanner) Scan(d []byte, member MemberFunc) error {
	s.Data = d
	i, err := s.Object(s.SkipSpace(0), member)
	if err != nil {
		return err
	}
	if s.SkipSpace(i) != len(d) {
		return ErrMalformed
	}
	return nil
}

// SkipSpace returns the index of the first byte at or after i that is not JSON white
// space.
func (s *Scanner) SkipSpace(i int) int {
	for i < len(s.Data) {
		switch s.Data[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// Is reports whether the byte at i is c; members use it to check a value's type
// before reading it.
func (s *Scanner) Is(i int, c byte) bool { return i < len(s.Data) && s.Data[i] == c }

// IsNull reports whether the value at i is null.
func (s *Scanner) IsNull(i int) bool {
	return i+4 <= len(s.Data) && string(s.Data[i:i+4]) == "null"
}

// Object walks the object at i, calling member for each key with the index of its
// value. It returns the index after '}'. Members skip values of unexpected types
// themselves (with Skip), so that a field of the wrong type is ignored, not an error.
func (s *Scanner) Object(i int, member MemberFunc) (int, error) {
	d := s.Data
	if i >= len(d) || d[i] != '{' {
		return 0, ErrMalformed
	}
	i = s.SkipSpace(i + 1)
	if i < len(d) && d[i] == '}' {
		return i + 1, nil
	}
	for {
		if i >= len(d) || d[i] != '"' {
			return 0, ErrMalformed
		}
		ks, ke, esc, next, err := s.Str(i)
		if err != nil {
			return 0, err
		}
		key := d[ks:ke]
		if esc {
			// Real keys never carry escapes, but "\u0074ext" is still "text" to any
			// JSON decoder; this rare path allocates.
			key = AppendUnescaped(nil, key)
		}
		i = s.SkipSpace(next)
		if i >= len(d) || d[i] != ':' {
			return 0, ErrMalformed
		}
		i = s.SkipSpace(i + 1)
		if i, err = member(key, i); err != nil {
			return 0, err
		}
		var done bool
		if i, done, err = s.after(i, '}'); err != nil || done {
			return i, err
		}
		i = s.SkipSpace(i)
	}
}

// Array walks the array at i, calling elem for each element with its position. It
// returns the index after ']'.
func (s *Scanner) Array(i int, elem ElemFunc) (int, error) {
	d := s.Data
	if i >= len(d) || d[i] != '[' {
		return 0, ErrMalformed
	}
	i = s.SkipSpace(i + 1)
	if i < len(d) && d[i] == ']' {
		return i + 1, nil
	}
	for n := 0; ; n++ {
		var err error
		if i, err = elem(n, i); err != nil {
			return 0, err
		}
		var done bool
		if i, done, err = s.after(i, ']'); err != nil || done {
			return i, err
		}
		i = s.SkipSpace(i)
	}
}

// after steps over what follows an object member or array element: white space,
// then ',' (not done: it returns the index after the comma) or the closing byte
// (done: it returns the index after it). It is small enough to be inlined.
func (s *Scanner) after(i int, closing byte) (int, bool, error) {
	i = s.SkipSpace(i)
	if i < len(s.Data) {
		switch s.Data[i] {
		case ',':
			return i + 1, false, nil
		case closing:
			return i + 1, true, nil
		}
	}
	return 0, false, ErrMalformed
}

// StrValue decodes the string at i. Without escapes it aliases the input; with
// escapes it decodes into *buf (reset first), so no allocation happens once the
// buffer has grown. A nil buf means "scratch, not kept" and allocates a fresh slice,
// which suits short enum values that real upstreams never escape.
func (s *Scanner) StrValue(i int, buf *[]byte) ([]byte, int, error) {
	st, en, esc, next, err := s.Str(i)
	if err != nil {
		return nil, 0, err
	}
	if !esc {
		return s.Data[st:en], next, nil
	}
	if buf == nil {
		return AppendUnescaped(nil, s.Data[st:en]), next, nil
	}
	*buf = AppendUnescaped((*buf)[:0], s.Data[st:en])
	return *buf, next, nil
}

// Str validates the string starting at the quote at i and returns the bounds of its
// raw contents, whether it holds escapes (then AppendUnescaped decodes it), and the
// index after the closing quote. Bytes of 0x80 and above are passed through
// unchecked, as encoding/json's validator does.
func (s *Scanner) Str(i int) (start, end int, esc bool, next int, err error) {
	d := s.Data
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
				return 0, 0, false, 0, ErrMalformed
			}
			switch d[j] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if j+4 >= len(d) || !validHex4(d[j+1:j+5]) {
					return 0, 0, false, 0, ErrMalformed
				}
				j += 4
			default:
				return 0, 0, false, 0, ErrMalformed
			}
		case c < 0x20:
			return 0, 0, false, 0, ErrMalformed
		}
	}
	return 0, 0, false, 0, ErrMalformed
}

// Skip validates and steps over any JSON value at i, returning the index after it.
// depth is the nesting level of the value; past MaxDepth it is malformed.
func (s *Scanner) Skip(i, depth int) (int, error) {
	d := s.Data
	if i >= len(d) {
		return 0, ErrMalformed
	}
	switch c := d[i]; {
	case c == '"':
		_, _, _, next, err := s.Str(i)
		return next, err
	case c == '{' || c == '[':
		return s.skipNested(i, depth)
	case c == 't':
		return s.Literal(i, "true")
	case c == 'f':
		return s.Literal(i, "false")
	case c == 'n':
		return s.Literal(i, "null")
	case c == '-' || (c >= '0' && c <= '9'):
		return s.Number(i)
	}
	return 0, ErrMalformed
}

// skipNested steps over an object or array. It is kept apart from Skip so that the
// closures it needs are only built for nested values (usage details, safety ratings).
func (s *Scanner) skipNested(i, depth int) (int, error) {
	if depth >= MaxDepth {
		return 0, ErrMalformed
	}
	if s.Data[i] == '{' {
		return s.Object(i, func(_ []byte, j int) (int, error) { return s.Skip(j, depth+1) })
	}
	return s.Array(i, func(_, j int) (int, error) { return s.Skip(j, depth+1) })
}

// Literal checks that the literal w (true, false or null) is at i.
func (s *Scanner) Literal(i int, w string) (int, error) {
	if i+len(w) <= len(s.Data) && string(s.Data[i:i+len(w)]) == w {
		return i + len(w), nil
	}
	return 0, ErrMalformed
}

// Number validates a JSON number (RFC 8259 grammar) at i.
func (s *Scanner) Number(i int) (int, error) {
	d := s.Data
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
		return 0, ErrMalformed
	}
	if i < len(d) && d[i] == '.' {
		i++
		if i >= len(d) || d[i] < '0' || d[i] > '9' {
			return 0, ErrMalformed
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
			return 0, ErrMalformed
		}
		for i < len(d) && d[i] >= '0' && d[i] <= '9' {
			i++
		}
	}
	return i, nil
}

// ParseInt reads a token count or index from a raw JSON value (as Skip delimits it).
// Integers are the norm; a number with a fraction or exponent is truncated toward
// zero, and anything else, or a value outside the int32 range, is rejected.
func ParseInt(b []byte) (int, bool) {
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

// parseFloatInt is ParseInt's rare path, kept apart so the common one stays small.
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

func validHex4(b []byte) bool {
	for _, c := range b {
		if unhex(c) < 0 {
			return false
		}
	}
	return true
}

func hex4(b []byte) rune {
	return rune(unhex(b[0])<<12 | unhex(b[1])<<8 | unhex(b[2])<<4 | unhex(b[3]))
}

// AppendUnescaped appends the decoded form of the raw string contents src (as Str
// delimits and validates them) to dst, as encoding/json does: \uXXXX surrogate
// pairs are combined and a lone surrogate becomes U+FFFD.
func AppendUnescaped(dst, src []byte) []byte {
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
