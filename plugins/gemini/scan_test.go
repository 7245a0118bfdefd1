package gemini

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"testing"
	"unicode/utf8"

	"github.com/ralf-gateway/ralf/core/config"
	"github.com/ralf-gateway/ralf/core/llm"
	"github.com/ralf-gateway/ralf/core/sse"
)

var fixtureStreams = []string{"gemini_stream_basic.sse", "gemini_stream_single_event.sse", "gemini_stream_thinking.sse", "gemini_stream_usage_live.sse"}

// testStream is a stream over body without HTTP.
func testStream(body []byte) *stream {
	return &stream{p: &Provider{cfg: config.Provider{Name: "gem", APIKey: testKey}}, rd: sse.NewReader(bytes.NewReader(body), 1<<16)}
}

// FuzzStream feeds arbitrary bodies through Recv: it must not panic, must end, and
// must only end cleanly after a finish reason.
func FuzzStream(f *testing.F) {
	for _, n := range fixtureStreams {
		f.Add(fixture(f, n))
	}
	f.Add(fixture(f, "gemini_error_403.json"))
	f.Add([]byte("data: {\"error\":{}}\r\n\r\n"))
	f.Add([]byte("data: {\"promptFeedback\":{\"blockReason\":\"SAFETY\"}}\n\n"))
	f.Add([]byte("data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"\\ud83d\\ude00\",\"thought\":true}]},\"index\":0,\"finishReason\":\"STOP\"}]}\n\n"))
	f.Fuzz(func(t *testing.T, body []byte) {
		s := testStream(body)
		finished := false
		for i := 0; ; i++ {
			if i > len(body)+2 {
				t.Fatal("Recv did not terminate")
			}
			c, err := s.Recv()
			if err == io.EOF {
				if !finished {
					t.Fatal("clean end without a finish reason")
				}
				break
			}
			if err != nil {
				var ue *llm.UpstreamError
				if errors.As(err, &ue) && bytes.Contains([]byte(ue.Message), []byte(testKey)) {
					t.Fatal("key in error")
				}
				if _, err2 := s.Recv(); err2 != err {
					t.Fatalf("error not sticky: %v then %v", err, err2)
				}
				break
			}
			if len(c.Text) == 0 && len(c.Reasoning) == 0 && c.FinishReason == "" && c.Usage == nil {
				t.Fatal("empty chunk returned")
			}
			finished = finished || c.FinishReason != ""
		}
	})
}

// FuzzScan checks the hand-written scanner against encoding/json: it accepts exactly
// the valid JSON objects, and decodes text like encoding/json does.
func FuzzScan(f *testing.F) {
	for _, n := range fixtureStreams {
		for _, line := range bytes.Split(fixture(f, n), []byte("\r\n\r\n")) {
			if d := bytes.TrimPrefix(bytes.TrimSpace(line), []byte("data: ")); len(d) > 0 {
				f.Add(d)
			}
		}
	}
	f.Add([]byte(`{"candidates":[{"content":{"parts":[{"text":"a\"\\\/\b\f\n\r\t\u00e9\ud800x"}]}}]}`))
	f.Add([]byte(`{"candidates":[{"content":{"parts":[{"text":1}]},"index":-1.5e3}],"x":[true,false,null,{}]}`))
	f.Fuzz(func(t *testing.T, d []byte) {
		var sc scanner
		fl, err := sc.parse(d)
		deep := bytes.Count(d, []byte("["))+bytes.Count(d, []byte("{")) > maxDepth-8
		valid := json.Valid(d) && bytes.HasPrefix(bytes.TrimLeft(d, " \t\r\n"), []byte("{"))
		if !deep && valid != (err == nil) {
			t.Fatalf("json.Valid %v, scanner error %v", valid, err)
		}
		if err != nil {
			return
		}
		// Where the JSON is simple enough for one reading, both decoders must agree.
		var ref struct {
			Candidates []struct {
				Content struct {
					Parts []struct {
						Text    *string `json:"text"`
						Thought *bool   `json:"thought"`
					} `json:"parts"`
				} `json:"content"`
				Index *int `json:"index"`
			} `json:"candidates"`
		}
		// Invalid UTF-8 passes through the scanner as is (framers make it U+FFFD on /v1),
		// while encoding/json replaces it: not comparable.
		if !utf8.Valid(d) || json.Unmarshal(d, &ref) != nil || len(ref.Candidates) != 1 || ref.Candidates[0].Index != nil || bytes.Contains(d, []byte(`\u`)) {
			return
		}
		lower := bytes.ToLower(d)
		for _, k := range []string{"candidates", "content", "parts", "text", "thought", "index"} {
			// encoding/json matches keys case-insensitively; Gemini (and the scanner) do not.
			if bytes.Count(lower, []byte(k)) != bytes.Count(d, []byte(k)) {
				return
			}
		}
		var want string
		for _, p := range ref.Candidates[0].Content.Parts {
			if p.Text != nil && (p.Thought == nil || !*p.Thought) {
				want += *p.Text
			}
		}
		if bytes.Count(d, []byte(`"text"`)) == len(ref.Candidates[0].Content.Parts) && string(fl.Text) != want {
			t.Fatalf("text %q, encoding/json says %q", fl.Text, want)
		}
	})
}

// TestScanNoAllocs pins the hot path: decoding an event allocates nothing once the
// scanner's buffers have grown.
func TestScanNoAllocs(t *testing.T) {
	d := []byte(`{"candidates": [{"content": {"parts": [{"text": "caf\u00e9 \n"},{"text":"t","thought":true}],"role": "model"},"index": 0}],"usageMetadata": {"promptTokenCount": 18,"candidatesTokenCount": 31,"totalTokenCount": 84,"promptTokensDetails": [{"modality": "TEXT","tokenCount": 18}],"thoughtsTokenCount": 35},"modelVersion": "gemini-2.5-flash"}`)
	var sc scanner
	if _, err := sc.parse(d); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() { sc.parse(d) }); n != 0 {
		t.Fatalf("%v allocations per event", n)
	}
	f, _ := sc.parse(d)
	if string(f.Text) != "café \n" || string(f.Reasoning) != "t" || f.Usage != (usage{18, 31, 35, 84}) {
		t.Fatalf("decoded %+v", f)
	}
}

func benchBody(n int) []byte {
	var b bytes.Buffer
	for i := 0; i < n; i++ {
		fin := ""
		if i == n-1 {
			fin = `,"finishReason": "STOP"`
		}
		fmt.Fprintf(&b, "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \" word\\n%d\"}],\"role\": \"model\"}%s,\"index\": 0}],"+
			"\"usageMetadata\": {\"promptTokenCount\": 18,\"candidatesTokenCount\": %d,\"totalTokenCount\": %d,"+
			"\"promptTokensDetails\": [{\"modality\": \"TEXT\",\"tokenCount\": 18}],\"thoughtsTokenCount\": 35,\"serviceTier\": \"standard\"},"+
			"\"modelVersion\": \"gemini-2.5-flash\",\"responseId\": \"ru1garvBEoOiqtsP2fznmQw\"}\r\n\r\n", i, fin, i+1, i+54)
	}
	return b.Bytes()
}

// BenchmarkRecv decodes a 20-event stream like gemini_stream_usage_live (usage on
// every event); one op is the whole stream, reader setup included.
func BenchmarkRecv(b *testing.B) {
	body := benchBody(20)
	p := &Provider{cfg: config.Provider{Name: "gem"}}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	var rd bytes.Reader
	for b.Loop() {
		rd.Reset(body)
		s := &stream{p: p, rd: sse.NewReader(&rd, 1<<20)}
		n := 0
		for {
			c, err := s.Recv()
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			n += len(c.Text)
		}
		if n == 0 {
			b.Fatal("no text")
		}
	}
}
