package jsonscan

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/ralf-gateway/ralf/core/fixtures"
)

// decode reads the value at i with the primitives into the shapes encoding/json
// gives with UseNumber, checking on the way that Skip ends every value where the
// decoder does. Strings are copied, as StrValue's buffer is reused.
func decode(t testing.TB, s *Scanner, i, depth int, buf *[]byte) (any, int, error) {
	skipEnd, skipErr := s.Skip(i, depth)
	v, end, err := decodeValue(t, s, i, depth, buf)
	if (err == nil) != (skipErr == nil) || err == nil && end != skipEnd {
		t.Fatalf("at %d: Skip ends at %d (%v), decoding at %d (%v)", i, skipEnd, skipErr, end, err)
	}
	return v, end, err
}

func decodeValue(t testing.TB, s *Scanner, i, depth int, buf *[]byte) (any, int, error) {
	switch {
	case s.Is(i, '{'):
		if depth >= MaxDepth {
			return nil, 0, ErrMalformed
		}
		m := map[string]any{}
		end, err := s.Object(i, func(key []byte, j int) (int, error) {
			v, end, err := decode(t, s, j, depth+1, buf)
			m[string(key)] = v
			return end, err
		})
		return m, end, err
	case s.Is(i, '['):
		if depth >= MaxDepth {
			return nil, 0, ErrMalformed
		}
		a := []any{}
		end, err := s.Array(i, func(n, j int) (int, error) {
			if n != len(a) {
				t.Fatalf("element %d reported as %d", len(a), n)
			}
			v, end, err := decode(t, s, j, depth+1, buf)
			a = append(a, v)
			return end, err
		})
		return a, end, err
	case s.Is(i, '"'):
		b, end, err := s.StrValue(i, buf)
		return string(b), end, err
	case s.Is(i, 't'):
		end, err := s.Literal(i, "true")
		return true, end, err
	case s.Is(i, 'f'):
		end, err := s.Literal(i, "false")
		return false, end, err
	case s.Is(i, 'n'):
		if s.IsNull(i) {
			return nil, i + 4, nil
		}
		return nil, 0, ErrMalformed
	}
	end, err := s.Number(i)
	if err != nil {
		return nil, 0, err
	}
	raw := s.Data[i:end]
	if n, ok := ParseInt(raw); n != refInt(raw) || ok != refIntOK(raw) {
		t.Fatalf("ParseInt(%s) = %d, %v; want %d, %v", raw, n, ok, refInt(raw), refIntOK(raw))
	}
	return json.Number(raw), end, nil
}

// scan decodes d as one top-level object with Scan.
func scan(t testing.TB, d []byte) (map[string]any, error) {
	var s Scanner
	var buf []byte
	m := map[string]any{}
	err := s.Scan(d, func(key []byte, i int) (int, error) {
		v, end, err := decode(t, &s, i, 0, &buf)
		m[string(key)] = v
		return end, err
	})
	return m, err
}

// reference decodes d with encoding/json the same way.
func reference(t testing.TB, d []byte) map[string]any {
	dec := json.NewDecoder(bytes.NewReader(d))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("encoding/json: %v", err)
	}
	return m
}

// refInt and refIntOK are ParseInt's contract spelled with strconv: integers within
// ±math.MaxInt32, other numbers truncated when they fit in an int32.
func refInt(raw []byte) int {
	n, _ := refParse(raw)
	return n
}

func refIntOK(raw []byte) bool {
	_, ok := refParse(raw)
	return ok
}

func refParse(raw []byte) (int, bool) {
	if n, err := strconv.ParseInt(string(raw), 10, 64); err == nil || errors.Is(err, strconv.ErrRange) && !bytes.ContainsAny(raw, ".eE") {
		if err != nil || n > math.MaxInt32 || n < -math.MaxInt32 {
			return 0, false
		}
		return int(n), true
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil || f > math.MaxInt32 || f < math.MinInt32 {
		return 0, false
	}
	return int(f), true
}

func depthOf(d []byte) int {
	n, max := 0, 0
	for _, c := range d {
		switch c {
		case '{', '[':
			if n++; n > max {
				max = n
			}
		case '}', ']':
			n--
		}
	}
	return max
}

// check compares Scan with encoding/json on d: the same validity, and on valid UTF-8
// the same values.
func check(t testing.TB, d []byte) {
	got, err := scan(t, d)
	trimmed := bytes.TrimLeft(d, " \t\r\n")
	if !json.Valid(d) || len(trimmed) == 0 || trimmed[0] != '{' {
		if err == nil {
			t.Fatalf("accepted invalid or non-object JSON %q", d)
		}
		if !errors.Is(err, ErrMalformed) {
			t.Fatalf("error %v, want ErrMalformed", err)
		}
		return
	}
	if err != nil {
		if depthOf(d) > MaxDepth+1 {
			return // the scanner's nesting bound, deliberately lower than encoding/json's
		}
		t.Fatalf("rejected valid JSON %q: %v", d, err)
	}
	if !utf8.Valid(d) {
		return // encoding/json rewrites invalid UTF-8 in strings; the scanner passes it through
	}
	if want := reference(t, d); !reflect.DeepEqual(got, want) {
		t.Fatalf("decoded %#v, encoding/json says %#v", got, want)
	}
}

func TestScan(t *testing.T) {
	tests := []struct {
		name string
		in   string
	}{
		{"empty object", `{}`},
		{"white space everywhere", " \t\r\n{ \"a\" : [ 1 , { } , [ ] ] , \"b\" : { \"c\" : null } }\n"},
		{"scalars", `{"s":"x","t":true,"f":false,"n":null,"i":-12,"z":0,"e":1.5E+3,"g":-0.25e-2}`},
		{"escapes", `{"s":"a\"b\\c\/d\n\t\r\b\f\u0041\u00e9\u4e2d"}`},
		{"surrogate pair", `{"s":"\ud83d\ude0a!"}`},
		{"lone surrogates become U+FFFD", `{"s":"\ud83dx\ude0a\ud83d\u0041\udbff"}`},
		{"raw UTF-8", `{"s":"héllo 😊"}`},
		{"escaped key", `{"\u0063ontent":"x"}`},
		{"duplicate keys: last wins", `{"a":1,"a":{"b":2}}`},
		{"nesting at the bound", `{"a":` + strings.Repeat("[", MaxDepth) + strings.Repeat("]", MaxDepth) + `}`},
		{"big numbers are only validated", `{"a":1e400,"b":123456789012345678901234567890}`},
		{"truncated string", `{"a":"x`},
		{"truncated object", `{"a":1`},
		{"truncated array", `{"a":[1,`},
		{"empty input", ``},
		{"not an object", `[1]`},
		{"bare string", `"x"`},
		{"trailing garbage", `{} x`},
		{"two objects", `{}{}`},
		{"bad escape", `{"a":"\x"}`},
		{"bad unicode escape", `{"a":"\u12G4"}`},
		{"short unicode escape", `{"a":"\u12"}`},
		{"control character in string", "{\"a\":\"a\nb\"}"},
		{"unit separator in string", "{\"a\":\"\x1f\"}"},
		{"DEL in string is allowed", "{\"a\":\"\x7f\"}"},
		{"leading zero", `{"a":01}`},
		{"bare minus", `{"a":-}`},
		{"no fraction digits", `{"a":1.}`},
		{"no exponent digits", `{"a":1e+}`},
		{"plus sign", `{"a":+1}`},
		{"bad literal", `{"a":nul}`},
		{"capitalised literal", `{"a":True}`},
		{"missing comma", `{"a":1 "b":2}`},
		{"missing colon", `{"a" 1}`},
		{"trailing comma in object", `{"a":1,}`},
		{"trailing comma in array", `{"a":[1,]}`},
		{"unquoted key", `{a:1}`},
		{"single quotes", `{'a':1}`},
		{"nesting past the bound", `{"a":` + strings.Repeat("[", 1000) + strings.Repeat("]", 1000) + `}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { check(t, []byte(tc.in)) })
	}
}

// TestDepthBound: values nested deeper than MaxDepth are refused, not recursed into.
func TestDepthBound(t *testing.T) {
	for _, n := range []int{MaxDepth - 1, MaxDepth, MaxDepth + 1} {
		d := []byte(strings.Repeat("[", n) + strings.Repeat("]", n))
		s := Scanner{Data: d}
		end, err := s.Skip(0, 0)
		if ok := n <= MaxDepth; (err == nil) != ok || ok && end != len(d) {
			t.Errorf("depth %d: Skip = %d, %v", n, end, err)
		}
	}
}

// TestErrorsCarryNoInput: a malformed document's error never quotes the document,
// which would put message content into logs.
func TestErrorsCarryNoInput(t *testing.T) {
	for _, in := range []string{`{"content":"secret`, `{"content":"secret"`, `{"content":secret}`, `{"content":"secret"} secret`} {
		_, err := scan(t, []byte(in))
		if !errors.Is(err, ErrMalformed) || strings.Contains(err.Error(), "secret") {
			t.Errorf("%s: error %v", in, err)
		}
	}
}

// TestMemberError: an error from a member ends the walk and is returned as is.
func TestMemberError(t *testing.T) {
	stop := errors.New("stop")
	var s Scanner
	calls := 0
	err := s.Scan([]byte(`{"a":1,"b":2}`), func([]byte, int) (int, error) { calls++; return 0, stop })
	if err != stop || calls != 1 {
		t.Fatalf("Scan = %v after %d calls, want stop after 1", err, calls)
	}
}

func TestStrValue(t *testing.T) {
	tests := []struct {
		name, in, want string
		alias          bool // the result is a slice of the input
	}{
		{name: "plain", in: `"word"`, want: "word", alias: true},
		{name: "empty", in: `""`, want: "", alias: true},
		{name: "escaped", in: `"a\nb"`, want: "a\nb"},
		{name: "escaped non-BMP", in: `"\ud83d\ude0a"`, want: "😊"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := Scanner{Data: []byte(tc.in + ",")}
			buf := make([]byte, 0, 64)
			b, next, err := s.StrValue(0, &buf)
			if err != nil || string(b) != tc.want || next != len(tc.in) {
				t.Fatalf("StrValue = %q, %d, %v; want %q, %d", b, next, err, tc.want, len(tc.in))
			}
			inInput := len(b) > 0 && &b[0] == &s.Data[1]
			inBuf := len(b) > 0 && &b[:1][0] == &buf[:1][0]
			if len(b) > 0 && (inInput != tc.alias || inBuf == tc.alias) {
				t.Errorf("aliases input %v, buffer %v; want input %v", inInput, inBuf, tc.alias)
			}
			nb, _, _ := s.StrValue(0, nil)
			if string(nb) != tc.want {
				t.Errorf("without a buffer: %q", nb)
			}
		})
	}
}

func TestParseInt(t *testing.T) {
	tests := []struct {
		in   string
		want int
		ok   bool
	}{
		{"0", 0, true},
		{"42", 42, true},
		{"-7", -7, true},
		{"2147483647", math.MaxInt32, true},
		{"-2147483647", -math.MaxInt32, true},
		{"2147483648", 0, false},
		{"99999999999999999999", 0, false},
		{"9.0", 9, true},
		{"1.9", 1, true},
		{"-1.9", -1, true},
		{"1e2", 100, true},
		{"1.5E3", 1500, true},
		{"1e10", 0, false},
		{"1e400", 0, false},
		{"", 0, false},
		{`"3"`, 0, false},
		{"null", 0, false},
		{"true", 0, false},
		{"false", 0, false},
		{"{}", 0, false},
		{"[1]", 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			if n, ok := ParseInt([]byte(tc.in)); n != tc.want || ok != tc.ok {
				t.Fatalf("ParseInt(%s) = %d, %v; want %d, %v", tc.in, n, ok, tc.want, tc.ok)
			}
		})
	}
}

// TestNoAllocs pins what the dialects rely on: walking a chunk, skipping nested
// values and decoding an escaped string into a grown buffer allocate nothing.
func TestNoAllocs(t *testing.T) {
	d := []byte(`{"id":"chatcmpl-1","created":1755691077,"choices":[{"index":0,"delta":{"content":" line\n\"quoted\" \u00e9"},"logprobs":null,"finish_reason":null}],"usage":{"prompt_tokens":14,"details":[{"a":[1,2,{"b":true}]}]}}`)
	var s Scanner
	var buf []byte
	text := 0
	var member MemberFunc
	member = func(key []byte, i int) (int, error) {
		switch {
		case string(key) == "content":
			b, next, err := s.StrValue(i, &buf)
			text += len(b)
			return next, err
		case string(key) == "choices" && s.Is(i, '['):
			return s.Array(i, func(_, j int) (int, error) { return s.Object(j, member) })
		case string(key) == "delta" && s.Is(i, '{'):
			return s.Object(i, member)
		}
		return s.Skip(i, 1)
	}
	if err := s.Scan(d, member); err != nil || text == 0 {
		t.Fatalf("Scan: %v, %d bytes of text", err, text)
	}
	if n := testing.AllocsPerRun(100, func() { s.Scan(d, member) }); n != 0 {
		t.Fatalf("%v allocations per document", n)
	}
	if string(buf) != " line\n\"quoted\" é" {
		t.Fatalf("content decoded as %q", buf)
	}
}

// FuzzScan compares Scanner with encoding/json: it accepts exactly the valid JSON
// objects (within MaxDepth) and decodes every value alike. The seeds are every event
// of the recorded upstream streams and the dialect plugins' fuzz findings.
func FuzzScan(f *testing.F) {
	dir := fixtures.Upstream(f)
	for _, pattern := range []string{"*.sse", "*.json"} {
		names, err := filepath.Glob(filepath.Join(dir, pattern))
		if err != nil {
			f.Fatal(err)
		}
		for _, name := range names {
			b, err := os.ReadFile(name)
			if err != nil {
				f.Fatal(err)
			}
			if strings.HasSuffix(name, ".json") {
				f.Add(b)
				continue
			}
			for _, line := range bytes.Split(b, []byte("\n")) {
				if d, ok := bytes.CutPrefix(bytes.TrimSpace(line), []byte("data:")); ok {
					f.Add(bytes.TrimSpace(d))
				}
			}
		}
	}
	f.Add([]byte(`{"choices":[{"delta":{"content":"\ud83d\ude0a \u00e9\n\"x\"","reasoning":"\ud800"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1e2}}`))
	f.Add([]byte(`{"candidates":[{"content":{"parts":[{"text":1}]},"index":-1.5e3}],"x":[true,false,null,{}]}`))
	f.Fuzz(func(t *testing.T, d []byte) { check(t, d) })
}
