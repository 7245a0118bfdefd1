package openai

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math"
	"runtime"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/ralf-gateway/ralf/core/llm"
)

func TestScanChunk(t *testing.T) {
	tests := []struct {
		name      string
		in        string
		text      string
		reasoning string
		finish    string
		usage     *llm.Usage
		errValue  string
		malformed bool
	}{
		{name: "escapes", in: `{"choices":[{"delta":{"content":"a\"b\\c\/d\n\t\r\b\f\u0041\u00e9\u4e2d"}}]}`, text: "a\"b\\c/d\n\t\r\b\fAé中"},
		{name: "surrogate pair", in: `{"choices":[{"delta":{"content":"\ud83d\ude0a!"}}]}`, text: "😊!"},
		{name: "lone surrogates become U+FFFD", in: `{"choices":[{"delta":{"content":"\ud83dx\ude0a\ud83d\u0041"}}]}`, text: "\uFFFDx\uFFFD\uFFFDA"},
		{name: "raw UTF-8 passes through", in: `{"choices":[{"delta":{"content":"héllo 😊"}}]}`, text: "héllo 😊"},
		{name: "only the first choice", in: `{"choices":[{"delta":{"content":"one"}},{"delta":{"content":"two"}}]}`, text: "one"},
		{name: "non-stream message", in: `{"choices":[{"message":{"content":"m","reasoning_content":"r"},"finish_reason":"stop"}]}`, text: "m", reasoning: "r", finish: "stop"},
		{name: "null reasoning beside reasoning_content", in: `{"choices":[{"delta":{"reasoning_content":"r","reasoning":null,"content":null}}]}`, reasoning: "r"},
		{name: "unexpected types are ignored", in: `{"choices":[{"delta":{"content":5,"reasoning":{"a":[1,2]}},"finish_reason":7}],"usage":"x","x_groq":[]}`},
		{name: "groq usage", in: `{"choices":[],"x_groq":{"id":"r","usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3,"queue_time":0.5}}}`,
			usage: &llm.Usage{PromptTokens: 1, CompletionTokens: 2, TotalTokens: 3}},
		{name: "top-level usage wins over x_groq", in: `{"x_groq":{"usage":{"total_tokens":9}},"usage":{"prompt_tokens":4,"completion_tokens":5,"total_tokens":9.0}}`,
			usage: &llm.Usage{PromptTokens: 4, CompletionTokens: 5, TotalTokens: 9}},
		{name: "null usage", in: `{"choices":[{"delta":{"content":"x"},"finish_reason":null}],"usage":null}`, text: "x"},
		{name: "error object", in: `{"error":{"code":400,"message":"m"},"choices":[]}`, errValue: `{"code":400,"message":"m"}`},
		{name: "null error", in: `{"error":null,"choices":[{"delta":{"content":"x"}}]}`, text: "x"},
		{name: "white space", in: " \t{ \"choices\" : [ { \"delta\" : { \"content\" : \"x\" } } ] }\r\n", text: "x"},
		{name: "escaped key", in: `{"choices":[{"delta":{"\u0063ontent":"x"}}]}`, text: "x"},
		{name: "truncated", in: `{"choices":[{"delta":{"content":"x`, malformed: true},
		{name: "bad escape", in: `{"choices":[{"delta":{"content":"\x"}}]}`, malformed: true},
		{name: "bad unicode escape", in: `{"choices":[{"delta":{"content":"\u12G4"}}]}`, malformed: true},
		{name: "control char in string", in: "{\"choices\":[{\"delta\":{\"content\":\"a\nb\"}}]}", malformed: true},
		{name: "trailing garbage", in: `{"choices":[]} x`, malformed: true},
		{name: "not an object", in: `[1]`, malformed: true},
		{name: "bad number", in: `{"a":01}`, malformed: true},
		{name: "bad literal", in: `{"a":nul}`, malformed: true},
		{name: "missing comma", in: `{"a":1 "b":2}`, malformed: true},
		{name: "deep nesting", in: `{"a":` + strings.Repeat("[", 1000) + strings.Repeat("]", 1000) + `}`, malformed: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var sc scanner
			f, err := sc.parse([]byte(tc.in))
			if tc.malformed {
				if !errors.Is(err, errMalformed) {
					t.Fatalf("parse error = %v, want errMalformed", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			if string(f.Text) != tc.text || string(f.Reasoning) != tc.reasoning || string(f.Finish) != tc.finish {
				t.Errorf("got text %q reasoning %q finish %q", f.Text, f.Reasoning, f.Finish)
			}
			if u := usageOf(f); !(u == nil && tc.usage == nil || u != nil && tc.usage != nil && *u == *tc.usage) {
				t.Errorf("usage = %+v, want %+v", u, tc.usage)
			}
			if string(f.Error) != tc.errValue {
				t.Errorf("error value = %q, want %q", f.Error, tc.errValue)
			}
		})
	}
}

// openaiFixtures are the OpenAI-dialect recordings, the fuzzers' seed corpus.
var openaiFixtures = []string{
	"openai_stream_usage.sse", "openrouter_stream_basic.sse", "openrouter_stream_reasoning.sse",
	"openrouter_stream_midstream_error.sse", "groq_stream_reasoning_xgroq.sse", "groq_stream_midstream_error.sse",
	"deepseek_stream_reasoning_content.sse", "hf_router_stream_basic.sse", "openai_error_401.json", "openrouter_error_429.json",
}

func testProvider() *Provider { return &Provider{name: "fuzz", secrets: []string{testKey}} }

// FuzzStream feeds arbitrary bodies to a stream: it must not panic, must end, must
// never return a chunk that carries nothing, and must keep returning its end.
func FuzzStream(f *testing.F) {
	for _, name := range openaiFixtures {
		f.Add(fixture(f, name))
	}
	f.Add([]byte("data: {\"choices\":[{\"delta\":{\"content\":\"\\ud83d\"}}]}\n\ndata: [DONE]\n\n"))
	f.Add([]byte("event: error\ndata: {\"error\":\"x\"}\n\n"))
	f.Fuzz(func(t *testing.T, body []byte) {
		st := newStream(testProvider(), io.NopCloser(bytes.NewReader(body)), func() {})
		var end error
		for i := 0; i <= len(body)+2; i++ {
			c, err := st.Recv()
			if err != nil {
				end = err
				break
			}
			if len(c.Text) == 0 && len(c.Reasoning) == 0 && c.FinishReason == "" && c.Usage == nil {
				t.Fatal("empty chunk returned")
			}
		}
		if end == nil {
			t.Fatal("stream did not end")
		}
		if _, err := st.Recv(); err != end {
			t.Fatalf("Recv after end = %v, want %v", err, end)
		}
		if err := st.Close(); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(end.Error(), testKey) {
			t.Fatal("error shows the key")
		}
	})
}

// FuzzScan compares the scanner with encoding/json on every valid object without
// duplicate keys: same validity, same text, reasoning, finish reason and usage.
func FuzzScan(f *testing.F) {
	for _, name := range openaiFixtures {
		for _, line := range bytes.Split(fixture(f, name), []byte("\n")) {
			if d, ok := bytes.CutPrefix(line, []byte("data: ")); ok {
				f.Add(d)
			}
		}
	}
	f.Add([]byte(`{"choices":[{"delta":{"content":"\ud83d\ude0a \u00e9\n\"x\"","reasoning":"\ud800"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1e2}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var sc scanner
		got, err := sc.parse(data)
		trimmed := bytes.TrimSpace(data)
		if !json.Valid(data) || len(trimmed) == 0 || trimmed[0] != '{' {
			if err == nil {
				t.Fatalf("scanner accepted invalid or non-object JSON %q", data)
			}
			return
		}
		if err != nil {
			if depth(data) >= maxDepth-4 {
				return // the scanner's nesting bound, deliberately lower than encoding/json's
			}
			t.Fatalf("scanner rejected valid JSON %q: %v", data, err)
		}
		if !utf8.Valid(data) || hasDuplicateKeys(data) {
			return // encoding/json rewrites invalid UTF-8; duplicates have no defined meaning
		}
		want := reference(t, data)
		if want.ambiguous {
			return
		}
		if string(got.Text) != want.text || string(got.Finish) != want.finish {
			t.Errorf("text/finish = %q/%q, want %q/%q", got.Text, got.Finish, want.text, want.finish)
		}
		if want.reasoningKeys <= 1 && string(got.Reasoning) != want.reasoning {
			t.Errorf("reasoning = %q, want %q", got.Reasoning, want.reasoning)
		}
		if (got.Error != nil) != want.hasError {
			t.Errorf("error = %q, want present=%v", got.Error, want.hasError)
		}
		if gu := usageOf(got); want.usageOK && !(gu == nil && want.usage == nil || gu != nil && want.usage != nil && *gu == *want.usage) {
			t.Errorf("usage = %+v, want %+v", gu, want.usage)
		}
	})
}

type refFields struct {
	text, reasoning, finish string
	reasoningKeys           int
	ambiguous               bool
	usage                   *llm.Usage
	usageOK                 bool // usage numbers are in the range both decoders agree on
	hasError                bool
}

// reference decodes the fields with encoding/json and exact key matching.
func reference(t *testing.T, data []byte) refFields {
	var r refFields
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		t.Fatalf("reference: %v", err)
	}
	str := func(raw json.RawMessage) (string, bool) {
		var s string
		if len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
			return "", false
		}
		return s, true
	}
	r.hasError = len(top["error"]) > 0 && string(top["error"]) != "null"
	var choices []json.RawMessage
	if json.Unmarshal(top["choices"], &choices) == nil && len(choices) > 0 {
		var choice map[string]json.RawMessage
		if json.Unmarshal(choices[0], &choice) == nil {
			if s, ok := str(choice["finish_reason"]); ok {
				r.finish = s
			}
			objects := 0
			for _, key := range []string{"delta", "message"} {
				var d map[string]json.RawMessage
				if json.Unmarshal(choice[key], &d) != nil || d == nil {
					continue
				}
				if objects++; objects > 1 {
					r.ambiguous = true // which one wins depends on key order
				}
				if s, ok := str(d["content"]); ok {
					r.text = s
				}
				for _, k := range []string{"reasoning", "reasoning_content"} {
					if s, ok := str(d[k]); ok {
						r.reasoning = s
						r.reasoningKeys++
					}
				}
			}
		}
	}
	r.usageOK = true
	readUsage := func(raw json.RawMessage) *llm.Usage {
		var m map[string]json.RawMessage
		if len(raw) == 0 || raw[0] != '{' || json.Unmarshal(raw, &m) != nil {
			return nil
		}
		u := &llm.Usage{}
		for k, dst := range map[string]*int{"prompt_tokens": &u.PromptTokens, "completion_tokens": &u.CompletionTokens, "total_tokens": &u.TotalTokens} {
			var v float64
			if len(m[k]) == 0 || json.Unmarshal(m[k], &v) != nil {
				continue
			}
			if math.Abs(v) >= math.MaxInt32/2 {
				r.usageOK = false
			}
			*dst = int(v)
		}
		return u
	}
	r.usage = readUsage(top["usage"])
	if r.usage == nil {
		var g map[string]json.RawMessage
		if len(top["x_groq"]) > 0 && top["x_groq"][0] == '{' && json.Unmarshal(top["x_groq"], &g) == nil {
			r.usage = readUsage(g["usage"])
		}
	}
	return r
}

// hasDuplicateKeys reports whether any object in data repeats a key.
func hasDuplicateKeys(data []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(data))
	type frame struct {
		obj    bool
		keys   map[string]bool
		expect bool // next string token in this object is a key
	}
	var stack []*frame
	for {
		tok, err := dec.Token()
		if err != nil {
			return false
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		isKey := top != nil && top.obj && top.expect
		switch v := tok.(type) {
		case json.Delim:
			switch v {
			case '{', '[':
				if top != nil && top.obj {
					top.expect = true
				}
				stack = append(stack, &frame{obj: v == '{', keys: map[string]bool{}, expect: true})
			default:
				stack = stack[:len(stack)-1]
			}
			continue
		case string:
			if isKey {
				if top.keys[v] {
					return true
				}
				top.keys[v] = true
				top.expect = false
				continue
			}
		}
		if top != nil && top.obj {
			top.expect = true
		}
	}
}

func depth(data []byte) int {
	d, max := 0, 0
	for _, c := range data {
		switch c {
		case '{', '[':
			d++
			if d > max {
				max = d
			}
		case '}', ']':
			d--
		}
	}
	return max
}

// TestRecvAllocsPerChunk: once its buffers have grown, Recv allocates nothing per
// chunk, so a 200-chunk stream costs the same allocations as a 20-chunk one.
func TestRecvAllocsPerChunk(t *testing.T) {
	allocs := func(n int) float64 {
		body := benchBody(n)
		return testing.AllocsPerRun(20, func() {
			st := newStream(testProvider(), io.NopCloser(bytes.NewReader(body)), func() {})
			for {
				if _, err := st.Recv(); err != nil {
					break
				}
			}
		})
	}
	a20, a200 := allocs(20), allocs(200)
	// A little slack: a buffer may grow once more on a longer body; per-chunk
	// allocations would add about 180.
	if a200 > a20+2 {
		t.Errorf("allocations grow with chunks: %v for 20 chunks, %v for 200", a20, a200)
	}
}

// benchBody is a typical OpenAI stream: role chunk, n content chunks (one with
// escapes), finish chunk, usage chunk, [DONE].
func benchBody(n int) []byte {
	var b bytes.Buffer
	const head = `data: {"id":"chatcmpl-C6bjxzOr3Oz1rTiafksd6himIit3q","object":"chat.completion.chunk","created":1755691077,"model":"gpt-4o-mini","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{`
	const tail = `},"logprobs":null,"finish_reason":null}],"usage":null}` + "\n\n"
	b.WriteString(head + `"role":"assistant","content":""` + tail)
	for i := 0; i < n; i++ {
		if i == n/2 {
			b.WriteString(head + `"content":" line\n\"quoted\" \u00e9"` + tail)
			continue
		}
		b.WriteString(head + `"content":" word"` + tail)
	}
	b.WriteString(`data: {"id":"x","object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}` + "\n\n")
	b.WriteString(`data: {"id":"x","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":14,"completion_tokens":20,"total_tokens":34}}` + "\n\n")
	b.WriteString("data: [DONE]\n\n")
	return b.Bytes()
}

// BenchmarkRecv decodes a 20-chunk stream; allocs/chunk excludes nothing, so the
// per-stream setup (reader buffer, usage) is spread over the chunks.
func BenchmarkRecv(b *testing.B) {
	const chunks = 20
	body := benchBody(chunks)
	p := testProvider()
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	var rd bytes.Reader
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		rd.Reset(body)
		st := newStream(p, io.NopCloser(&rd), func() {})
		n := 0
		for {
			c, err := st.Recv()
			if err != nil {
				if err != io.EOF {
					b.Fatal(err)
				}
				break
			}
			n += len(c.Text)
		}
		if n == 0 {
			b.Fatal("no text")
		}
	}
	b.StopTimer()
	runtime.ReadMemStats(&m1)
	b.ReportMetric(float64(m1.Mallocs-m0.Mallocs)/float64(b.N)/chunks, "allocs/chunk")
}

// BenchmarkScanChunk decodes one typical content chunk.
func BenchmarkScanChunk(b *testing.B) {
	data := []byte(`{"id":"chatcmpl-C6bjxzOr3Oz1rTiafksd6himIit3q","object":"chat.completion.chunk","created":1755691077,"model":"gpt-4o-mini","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{"content":" word"},"logprobs":null,"finish_reason":null}],"usage":null}`)
	var sc scanner
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := sc.parse(data); err != nil {
			b.Fatal(err)
		}
	}
}
