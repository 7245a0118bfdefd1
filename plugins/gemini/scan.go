package gemini

import (
	"errors"
	"math"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// errMalformed marks an event that is not valid JSON. Its text never includes the
// event itself, as that would put message content into logs.
var errMalformed = errors.New("malformed JSON in upstream answer")

// maxDepth bounds nesting in skipped values so hostile input cannot recurse deeply.
const maxDepth = 256

// fields is what one GenerateContentResponse carries that the gateway needs. Text
// and Reasoning alias the scanner's buffers and are valid until the next parse.
type fields struct {
	Text, Reasoning []byte
	Finish          []byte // finishReason of candidate 0 when it is a non-empty string
	Usage           usage
	HasUsage        bool
	BlockReason     []byte // promptFeedback.blockReason
	HasCandidate    bool   // candidate 0 was present
	Error           []byte // raw JSON of a non-null top-level "error" value
}

// usage is usageMetadata as Gemini counts it; thoughts are billed as output.
type usage struct {
	Prompt, Candidates, Thoughts, Total int
}

// scanner decodes Gemini response objects with a small hand-written parser:
// encoding/json with reflection costs about fifteen allocations per event on the hot
// path, this costs none once its buffers have grown.
type scanner struct {
	d                  []byte
	textBuf, reasonBuf []byte
	f                  fields

	// state of the candidate and part being read
	candIndex            int
	candFinish           []byte
	partText             []byte
	partEsc, partThought bool
	partHasText          bool
	textMark, reasonMark int
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
	if len(s.textBuf) > 0 {
		s.f.Text = s.textBuf
	}
	if len(s.reasonBuf) > 0 {
		s.f.Reasoning = s.reasonBuf
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

// memberFunc handles the value of one object member starting at i and returns the
// index after it.
type memberFunc func(key []byte, i int) (int, error)

// object walks the object at i, calling member for each key. It returns the index
// after '}'.
func (s *scanner) object(i int, member memberFunc) (int, error) {
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
			// Real keys never carry escapes, but "\u0074ext" is still "text" to any
			// JSON decoder; this rare path allocates.
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

// array walks the array at i, calling elem for each element with its position.
func (s *scanner) array(i int, elem func(n, i int) (int, error)) (int, error) {
	if i >= len(s.d) || s.d[i] != '[' {
		return 0, errMalformed
	}
	i = s.ws(i + 1)
	if i < len(s.d) && s.d[i] == ']' {
		return i + 1, nil
	}
	for n := 0; ; n++ {
		var err error
		if i, err = elem(n, i); err != nil {
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

func (s *scanner) is(i int, c byte) bool { return i < len(s.d) && s.d[i] == c }

func (s *scanner) topKey(key []byte, i int) (int, error) {
	switch string(key) {
	case "candidates":
		if s.is(i, '[') {
			return s.array(i, s.candidate)
		}
	case "usageMetadata":
		if s.is(i, '{') {
			s.f.Usage, s.f.HasUsage = usage{}, true
			return s.object(i, s.usageKey)
		}
	case "promptFeedback":
		if s.is(i, '{') {
			return s.object(i, s.feedbackKey)
		}
	case "error":
		end, err := s.skip(i, 0)
		if err != nil {
			return 0, err
		}
		if !s.isNull(i) {
			s.f.Error = s.d[i:end]
		}
		return end, nil
	}
	return s.skip(i, 0)
}

func (s *scanner) usageKey(key []byte, i int) (int, error) {
	var dst *int
	switch string(key) {
	case "promptTokenCount":
		dst = &s.f.Usage.Prompt
	case "candidatesTokenCount":
		dst = &s.f.Usage.Candidates
	case "thoughtsTokenCount":
		dst = &s.f.Usage.Thoughts
	case "totalTokenCount":
		dst = &s.f.Usage.Total
	default:
		return s.skip(i, 1)
	}
	end, err := s.skip(i, 1)
	if err != nil {
		return 0, err
	}
	if n, ok := parseInt(s.d[i:end]); ok {
		*dst = n
	}
	return end, nil
}

func (s *scanner) feedbackKey(key []byte, i int) (int, error) {
	if string(key) == "blockReason" && s.is(i, '"') {
		b, next, err := s.strValue(i)
		if err != nil {
			return 0, err
		}
		s.f.BlockReason = b
		return next, nil
	}
	return s.skip(i, 1)
}

// candidate reads one element of candidates. Only the candidate with index 0 (the
// default when "index" is absent) is kept; as "index" often comes after "content",
// what another candidate appended to the buffers is rolled back at its end.
func (s *scanner) candidate(_ int, i int) (int, error) {
	if !s.is(i, '{') {
		return s.skip(i, 1)
	}
	s.candIndex, s.candFinish = 0, nil
	s.textMark, s.reasonMark = len(s.textBuf), len(s.reasonBuf)
	end, err := s.object(i, s.candidateKey)
	if err != nil {
		return 0, err
	}
	if s.candIndex != 0 || s.f.HasCandidate {
		s.textBuf, s.reasonBuf = s.textBuf[:s.textMark], s.reasonBuf[:s.reasonMark]
		return end, nil
	}
	s.f.HasCandidate = true
	if len(s.candFinish) > 0 {
		s.f.Finish = s.candFinish
	}
	return end, nil
}

func (s *scanner) candidateKey(key []byte, i int) (int, error) {
	switch string(key) {
	case "content":
		if s.is(i, '{') {
			return s.object(i, s.contentKey)
		}
	case "finishReason":
		if s.is(i, '"') {
			b, next, err := s.strValue(i)
			if err != nil {
				return 0, err
			}
			s.candFinish = b
			return next, nil
		}
	case "index":
		end, err := s.skip(i, 2)
		if err != nil {
			return 0, err
		}
		if n, ok := parseInt(s.d[i:end]); ok {
			s.candIndex = n
		}
		return end, nil
	}
	return s.skip(i, 2)
}

func (s *scanner) contentKey(key []byte, i int) (int, error) {
	if string(key) == "parts" && s.is(i, '[') {
		return s.array(i, s.part)
	}
	return s.skip(i, 3)
}

// part reads one element of content.parts. "thought" may follow "text", so the text
// is placed once the whole part has been read.
func (s *scanner) part(_ int, i int) (int, error) {
	if !s.is(i, '{') {
		return s.skip(i, 4)
	}
	s.partText, s.partEsc, s.partThought, s.partHasText = nil, false, false, false
	end, err := s.object(i, s.partKey)
	if err != nil {
		return 0, err
	}
	if s.partHasText {
		buf := &s.textBuf
		if s.partThought {
			buf = &s.reasonBuf
		}
		if s.partEsc {
			*buf = appendUnescaped(*buf, s.partText)
		} else {
			*buf = append(*buf, s.partText...)
		}
	}
	return end, nil
}

func (s *scanner) partKey(key []byte, i int) (int, error) {
	switch string(key) {
	case "text":
		if s.is(i, '"') {
			st, en, esc, next, err := s.str(i)
			if err != nil {
				return 0, err
			}
			s.partText, s.partEsc, s.partHasText = s.d[st:en], esc, true
			return next, nil
		}
	case "thought":
		if s.is(i, 't') {
			end, err := s.lit(i, "true")
			if err != nil {
				return 0, err
			}
			s.partThought = true
			return end, nil
		}
	}
	return s.skip(i, 5)
}

func (s *scanner) isNull(i int) bool {
	return i+4 <= len(s.d) && string(s.d[i:i+4]) == "null"
}

// strValue decodes a short string (an enum value) at i. Without escapes it aliases
// the input; with escapes it allocates, which real upstreams never cause.
func (s *scanner) strValue(i int) ([]byte, int, error) {
	st, en, esc, next, err := s.str(i)
	if err != nil {
		return nil, 0, err
	}
	if !esc {
		return s.d[st:en], next, nil
	}
	return appendUnescaped(nil, s.d[st:en]), next, nil
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
				if j+4 >= len(d) || !validHex4(d[j+1:j+5]) {
					return 0, 0, false, 0, errMalformed
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
	case c == '{' || c == '[':
		return s.skipNested(i, depth)
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

// skipNested steps over an object or array. It is kept apart from skip so that the
// closures it needs are only built for nested values (usage details, safety ratings).
func (s *scanner) skipNested(i, depth int) (int, error) {
	if depth >= maxDepth {
		return 0, errMalformed
	}
	if s.d[i] == '{' {
		return s.object(i, func(_ []byte, j int) (int, error) { return s.skip(j, depth+1) })
	}
	return s.array(i, func(_, j int) (int, error) { return s.skip(j, depth+1) })
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

// parseInt reads a token count or index. Integers are the norm; a number with a
// fraction or exponent is truncated, and anything else (or out of range) is rejected.
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
			f, err := strconv.ParseFloat(string(b), 64)
			if err != nil || math.IsNaN(f) || f > math.MaxInt32 || f < math.MinInt32 {
				return 0, false
			}
			return int(f), true
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
