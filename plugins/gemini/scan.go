package gemini

import (
	"errors"

	"github.com/ralf-gateway/ralf/core/jsonscan"
)

// errMalformed marks an event that is not valid JSON. Its text never includes the
// event itself, as that would put message content into logs.
var errMalformed = errors.New("malformed JSON in upstream answer")

// maxDepth bounds nesting in skipped values so hostile input cannot recurse deeply.
const maxDepth = jsonscan.MaxDepth

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

// scanner decodes Gemini response objects with the shared jsonscan primitives; it
// only says which fields to read. encoding/json with reflection costs about fifteen
// allocations per event on the hot path, this costs none once its buffers have grown.
type scanner struct {
	jsonscan.Scanner
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
	s.f = fields{}
	s.textBuf = s.textBuf[:0]
	s.reasonBuf = s.reasonBuf[:0]
	if err := s.Scan(d, s.topKey); err != nil {
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

func (s *scanner) topKey(key []byte, i int) (int, error) {
	switch string(key) {
	case "candidates":
		if s.Is(i, '[') {
			return s.Array(i, s.candidate)
		}
	case "usageMetadata":
		if s.Is(i, '{') {
			s.f.Usage, s.f.HasUsage = usage{}, true
			return s.Object(i, s.usageKey)
		}
	case "promptFeedback":
		if s.Is(i, '{') {
			return s.Object(i, s.feedbackKey)
		}
	case "error":
		end, err := s.Skip(i, 0)
		if err != nil {
			return 0, err
		}
		if !s.IsNull(i) {
			s.f.Error = s.Data[i:end]
		}
		return end, nil
	}
	return s.Skip(i, 0)
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
		return s.Skip(i, 1)
	}
	end, err := s.Skip(i, 1)
	if err != nil {
		return 0, err
	}
	if n, ok := jsonscan.ParseInt(s.Data[i:end]); ok {
		*dst = n
	}
	return end, nil
}

func (s *scanner) feedbackKey(key []byte, i int) (int, error) {
	if string(key) == "blockReason" && s.Is(i, '"') {
		b, next, err := s.StrValue(i, nil)
		if err != nil {
			return 0, err
		}
		s.f.BlockReason = b
		return next, nil
	}
	return s.Skip(i, 1)
}

// candidate reads one element of candidates. Only the candidate with index 0 (the
// default when "index" is absent) is kept; as "index" often comes after "content",
// what another candidate appended to the buffers is rolled back at its end.
func (s *scanner) candidate(_ int, i int) (int, error) {
	if !s.Is(i, '{') {
		return s.Skip(i, 1)
	}
	s.candIndex, s.candFinish = 0, nil
	s.textMark, s.reasonMark = len(s.textBuf), len(s.reasonBuf)
	end, err := s.Object(i, s.candidateKey)
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
		if s.Is(i, '{') {
			return s.Object(i, s.contentKey)
		}
	case "finishReason":
		if s.Is(i, '"') {
			b, next, err := s.StrValue(i, nil)
			if err != nil {
				return 0, err
			}
			s.candFinish = b
			return next, nil
		}
	case "index":
		end, err := s.Skip(i, 2)
		if err != nil {
			return 0, err
		}
		if n, ok := jsonscan.ParseInt(s.Data[i:end]); ok {
			s.candIndex = n
		}
		return end, nil
	}
	return s.Skip(i, 2)
}

func (s *scanner) contentKey(key []byte, i int) (int, error) {
	if string(key) == "parts" && s.Is(i, '[') {
		return s.Array(i, s.part)
	}
	return s.Skip(i, 3)
}

// part reads one element of content.parts. "thought" may follow "text", so the text
// is placed once the whole part has been read.
func (s *scanner) part(_ int, i int) (int, error) {
	if !s.Is(i, '{') {
		return s.Skip(i, 4)
	}
	s.partText, s.partEsc, s.partThought, s.partHasText = nil, false, false, false
	end, err := s.Object(i, s.partKey)
	if err != nil {
		return 0, err
	}
	if s.partHasText {
		buf := &s.textBuf
		if s.partThought {
			buf = &s.reasonBuf
		}
		if s.partEsc {
			*buf = jsonscan.AppendUnescaped(*buf, s.partText)
		} else {
			*buf = append(*buf, s.partText...)
		}
	}
	return end, nil
}

func (s *scanner) partKey(key []byte, i int) (int, error) {
	switch string(key) {
	case "text":
		if s.Is(i, '"') {
			st, en, esc, next, err := s.Str(i)
			if err != nil {
				return 0, err
			}
			s.partText, s.partEsc, s.partHasText = s.Data[st:en], esc, true
			return next, nil
		}
	case "thought":
		if s.Is(i, 't') {
			end, err := s.Literal(i, "true")
			if err != nil {
				return 0, err
			}
			s.partThought = true
			return end, nil
		}
	}
	return s.Skip(i, 5)
}
