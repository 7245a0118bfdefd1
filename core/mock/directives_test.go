package mock

import (
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParsePlan(t *testing.T) {
	cases := []struct {
		name, model, header string
		want                func(p plan) bool
		err                 string
	}{
		{name: "plain model", model: "gpt-4o", want: func(p plan) bool { return p.chunks == 20 && p.status == 0 && p.cut < 0 && !p.hang }},
		{name: "model directives", model: "mock+chunks=3+slow=25ms+reasoning", want: func(p plan) bool {
			return p.chunks == 3 && p.slow == 25*time.Millisecond && p.reasoning
		}},
		{name: "header with commas and semicolons", model: "mock", header: "status=429, retry_after=2; delay=1s", want: func(p plan) bool {
			return p.status == 429 && p.retryAfter == "2" && p.delay == time.Second
		}},
		{name: "header wins over model", model: "mock+status=503+chunks=4", header: "status=429", want: func(p plan) bool { return p.status == 429 && p.chunks == 4 }},
		{name: "fault positions", model: "m+cut=1+hang_after=2+error_event=3+error_chunk=4+malformed", want: func(p plan) bool {
			return p.cut == 1 && p.hangAfter == 2 && p.errorEvent == 3 && p.errorChunk == 4 && p.malformed
		}},
		{name: "fixture with status", model: "m+fixture=openai_error_401.json+status=401", want: func(p plan) bool { return p.fixture == "openai_error_401.json" && p.status == 401 }},
		{name: "fixture with 200", model: "m+fixture=a.sse+status=200", want: func(p plan) bool { return p.status == 200 }},
		{name: "chunks=0 is an empty answer", model: "m+chunks=0", want: func(p plan) bool { return p.chunks == 0 }},
		{name: "unknown directive", model: "mock+stauts=503", err: `unknown mock directive "stauts"`},
		{name: "unknown in header", header: "frobnicate", err: `unknown mock directive "frobnicate"`},
		{name: "bad number", model: "m+chunks=many", err: "chunks"},
		{name: "negative number", model: "m+cut=-1", err: "cut"},
		{name: "too many chunks", model: "m+chunks=100001", err: "chunks"},
		{name: "bad duration", model: "m+slow=fast", err: "slow"},
		{name: "flag with value", model: "m+hang=5s", err: "hang takes no value"},
		{name: "status out of range", model: "m+status=99", err: "status"},
		{name: "2xx status without fixture", model: "m+status=200", err: "status=200"},
		{name: "retry_after without status", model: "m+retry_after=3", err: "retry_after needs status"},
		{name: "fixture path escape", model: "m+fixture=../go.mod", err: "fixture"},
		{name: "fixture hidden file", model: "m+fixture=.env", err: "fixture"},
		{name: "fixture with a synthetic fault", model: "m+fixture=a.sse+error_chunk=1", err: "do not apply"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := parsePlan(tc.model, tc.header, 20)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil || !tc.want(p) {
				t.Fatalf("plan %+v, error %v", p, err)
			}
		})
	}
}

func FuzzParsePlan(f *testing.F) {
	f.Add("mock+status=503+retry_after=2", "cut=3; slow=1ms")
	f.Add("m+fixture=a.sse", "hang")
	f.Fuzz(func(t *testing.T, model, header string) {
		p, err := parsePlan(model, header, 20)
		if err != nil {
			return
		}
		if p.chunks < 0 || p.chunks > maxChunks || (p.status != 0 && p.fixture == "" && p.status < 400) ||
			strings.ContainsAny(p.fixture, `/\`) || p.delay < 0 || p.slow < 0 {
			t.Fatalf("accepted an invalid plan %+v from %q / %q", p, model, header)
		}
	})
}

// events splits a stream body after each blank line, separators kept.
func events(body, sep string) []string {
	var out []string
	for _, ev := range strings.SplitAfter(body, sep) {
		if ev != "" {
			out = append(out, ev)
		}
	}
	return out
}

// TestStatusDirective: an injected status comes in the dialect's error shape before
// any stream byte, from the model name or the X-Mock header.
func TestStatusDirective(t *testing.T) {
	e := newEnv(t, Options{})
	cases := []struct {
		name, model, header string
		status              int
		retryAfter          string
		oaType, gemStatus   string
	}{
		{"503 from the model", "mock+status=503", "", 503, "", "server_error", "UNAVAILABLE"},
		{"429 with Retry-After", "mock+status=429+retry_after=7", "", 429, "7", "requests", "RESOURCE_EXHAUSTED"},
		{"401", "mock+status=401", "", 401, "", "invalid_request_error", "UNAUTHENTICATED"},
		{"header wins", "mock+status=503", "status=429", 429, "", "requests", "RESOURCE_EXHAUSTED"},
		{"header only", "gpt-4o", "status=500;retry_after=1", 500, "1", "server_error", "INTERNAL"},
		{"after a delay", "mock+delay=5ms+status=502", "", 502, "", "server_error", "INTERNAL"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var hdr []string
			if tc.header != "" {
				hdr = []string{"X-Mock", tc.header}
			}
			a := e.post("/v1/chat/completions", oaReq(tc.model, true, true, "Hi"), hdr...)
			checkOpenAIError(t, a, tc.status, tc.oaType, "injected status")
			if got := a.header.Get("Retry-After"); got != tc.retryAfter {
				t.Fatalf("Retry-After %q, want %q", got, tc.retryAfter)
			}
			a = e.post(gemStream(tc.model), gemReq, hdr...)
			checkGeminiError(t, a, tc.status, tc.gemStatus)
			if got := a.header.Get("Retry-After"); got != tc.retryAfter {
				t.Fatalf("gemini Retry-After %q, want %q", got, tc.retryAfter)
			}
		})
	}
}

func TestBadDirectivesAre400(t *testing.T) {
	e := newEnv(t, Options{})
	for _, tc := range []struct{ name, model, header string }{
		{"typo in the model", "mock+stauts=503", ""},
		{"typo in the header", "mock", "chunk=3"},
		{"bad value", "mock+delay=soon", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var hdr []string
			if tc.header != "" {
				hdr = []string{"X-Mock", tc.header}
			}
			checkOpenAIError(t, e.post("/v1/chat/completions", oaReq(tc.model, true, false, "Hi"), hdr...), 400, "invalid_request_error", "mock directive")
			checkGeminiError(t, e.post(gemStream(tc.model), gemReq, hdr...), 400, "INVALID_ARGUMENT")
		})
	}
}

// TestEveryXMockHeaderCounts: a second X-Mock header is read too, so its directives
// apply and its typos are caught.
func TestEveryXMockHeaderCounts(t *testing.T) {
	e := newEnv(t, Options{})
	a := e.post("/v1/chat/completions", oaReq("mock", true, false, "Hi"), "X-Mock", "chunks=2", "X-Mock", "status=503")
	checkOpenAIError(t, a, 503, "server_error", "injected status")
	a = e.post("/v1/chat/completions", oaReq("mock", true, false, "Hi"), "X-Mock", "chunks=2", "X-Mock", "bogus")
	checkOpenAIError(t, a, 400, "invalid_request_error", "mock directive")
}

// TestOpenAIStreamFaults asserts the exact bytes of each mid-stream fault, built from
// the events of the same stream without the fault.
func TestOpenAIStreamFaults(t *testing.T) {
	e := newEnv(t, Options{})
	body := oaReq("m+chunks=3", true, true, "Hi")
	clean := e.post("/v1/chat/completions", body)
	ev := events(clean.body, "\n\n") // role, 3 content, finish, usage, [DONE]
	if len(ev) != 7 {
		t.Fatalf("%d events in %q", len(ev), clean.body)
	}
	head := strings.Join(ev[:1], "")
	upTo := func(n int) string { return strings.Join(ev[:1+n], "") }
	end := strings.Join(ev[4:], "")
	const groq = "event: error\ndata: {\"error\":{\"message\":\"mock: injected mid-stream error\",\"type\":\"invalid_request_error\",\"status_code\":400}}\n\n"
	const openrouter = "data: {\"error\":{\"code\":502,\"message\":\"mock: injected mid-stream error\"}}\n\ndata: [DONE]\n\n"
	const bad = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"oops\"\n\n"
	cases := []struct {
		name, header, want string
		cutOff             bool // the connection must end with an error, not a clean EOF
	}{
		{"error_event", "error_event=2", upTo(2) + groq, false},
		{"error_event before any chunk", "error_event=0", head + groq, false},
		{"error_chunk", "error_chunk=2", upTo(2) + openrouter, false},
		{"malformed after the first chunk", "malformed", upTo(1) + bad + strings.Join(ev[2:], ""), false},
		{"cut", "cut=2", upTo(2), true},
		{"cut past the end keeps the finish away", "cut=99", upTo(3), true},
		{"error_chunk past the end", "error_chunk=50", upTo(3) + openrouter, false},
		{"slow changes no byte", "slow=1ms", clean.body, false},
		{"delay changes no byte", "delay=1ms", clean.body, false},
		{"empty answer", "chunks=0", head + strings.Replace(end, `"completion_tokens":3,"total_tokens":6`, `"completion_tokens":0,"total_tokens":3`, 1), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := e.post("/v1/chat/completions", body, "X-Mock", tc.header)
			if a.status != 200 {
				t.Fatalf("status %d", a.status)
			}
			if a.body != tc.want {
				t.Fatalf("body\n got %q\nwant %q", a.body, tc.want)
			}
			if tc.cutOff != (a.err != nil) {
				t.Fatalf("read error %v, want cut off %v", a.err, tc.cutOff)
			}
			if tc.cutOff && !errors.Is(a.err, io.ErrUnexpectedEOF) {
				t.Fatalf("read error %v, want unexpected EOF", a.err)
			}
		})
	}
	t.Run("malformed with one chunk", func(t *testing.T) {
		a := e.post("/v1/chat/completions", oaReq("m+chunks=1+malformed", true, false, "Hi"))
		ev := events(a.body, "\n\n")
		if len(ev) != 5 || ev[2] != bad || ev[4] != "data: [DONE]\n\n" {
			t.Fatalf("events %q", ev)
		}
	})
	t.Run("reasoning comes first and apart", func(t *testing.T) {
		a := e.post("/v1/chat/completions", oaReq("m+reasoning", true, true, "Hi"))
		s := parseOA(t, a.body)
		if !s.roleFirst || strings.Join(s.reasoning, "") != strings.Join(reasoningDeltas, "") ||
			strings.Join(s.deltas, "") != strings.Join(Answer("Hi", 20), "") || !s.done {
			t.Fatalf("stream %+v", s)
		}
		if strings.Index(a.body, "reasoning_content") > strings.Index(a.body, `"content":`) {
			t.Fatal("reasoning after the answer")
		}
	})
}

func TestGeminiStreamFaults(t *testing.T) {
	e := newEnv(t, Options{})
	clean := e.post(gemStream("m+chunks=3"), gemReq)
	ev := events(clean.body, "\r\n\r\n")
	if len(ev) != 3 || !strings.Contains(ev[2], `"finishReason": "STOP"`) {
		t.Fatalf("events %q", ev)
	}
	// The third chunk as a plain event: what a stream cut after it carries.
	plain3 := strings.Replace(ev[1], quote(Answer("Hi", 3)[1]), quote(Answer("Hi", 3)[2]), 1)
	const gerr = "data: {\"error\": {\"code\": 500, \"message\": \"mock: injected mid-stream error\", \"status\": \"INTERNAL\"}}\r\n\r\n"
	const bad = "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"oops\"\r\n\r\n"
	cases := []struct {
		name, header, want string
		cutOff             bool
	}{
		{"cut", "cut=1", ev[0], true},
		{"cut after the last chunk sends no finish", "cut=3", ev[0] + ev[1] + plain3, true},
		{"error_chunk", "error_chunk=2", ev[0] + ev[1] + gerr, false},
		{"error_event", "error_event=1", ev[0] + gerr, false},
		{"malformed", "malformed", ev[0] + bad + ev[1] + ev[2], false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := e.post(gemStream("m+chunks=3"), gemReq, "X-Mock", tc.header)
			if a.status != 200 || a.body != tc.want {
				t.Fatalf("status %d body\n got %q\nwant %q", a.status, a.body, tc.want)
			}
			if tc.cutOff != errors.Is(a.err, io.ErrUnexpectedEOF) || (!tc.cutOff && a.err != nil) {
				t.Fatalf("read error %v, want cut off %v", a.err, tc.cutOff)
			}
		})
	}
	t.Run("reasoning as thought parts", func(t *testing.T) {
		a := e.post(gemStream("m+reasoning"), gemReq)
		text, thoughts, finished := parseGem(t, a.body)
		if text != strings.Join(Answer("Hi", 20), "") || thoughts != strings.Join(reasoningDeltas, "") || !finished {
			t.Fatalf("text %q thoughts %q finished %v", text, thoughts, finished)
		}
		if strings.Index(a.body, `"thought": true`) > strings.Index(a.body, quote(Answer("Hi", 20)[0])) {
			t.Fatal("thoughts after the answer")
		}
	})
	t.Run("empty answer still finishes", func(t *testing.T) {
		a := e.post(gemStream("m+chunks=0"), gemReq)
		text, _, finished := parseGem(t, a.body)
		if a.status != 200 || text != "" || !finished || strings.Count(a.body, "\r\n\r\n") != 1 {
			t.Fatalf("%d %q", a.status, a.body)
		}
	})
}

// TestNonStreamFaults: the mid-stream faults on a whole (stream:false) answer.
func TestNonStreamFaults(t *testing.T) {
	e := newEnv(t, Options{})
	body := oaReq("m", false, false, "Hi")
	whole := e.post("/v1/chat/completions", body)
	cases := []struct {
		name, header string
		check        func(t *testing.T, a answer)
	}{
		{"cut sends half and drops the connection", "cut=1", func(t *testing.T, a answer) {
			if !errors.Is(a.err, io.ErrUnexpectedEOF) || a.body != whole.body[:len(whole.body)/2] {
				t.Fatalf("err %v body %q", a.err, a.body)
			}
		}},
		{"malformed is not JSON", "malformed", func(t *testing.T, a answer) {
			if a.status != 200 || a.err != nil || a.body != whole.body[:len(whole.body)/2] {
				t.Fatalf("%d %v %q", a.status, a.err, a.body)
			}
		}},
		{"error_chunk is a 200 with an error object", "error_chunk=1", func(t *testing.T, a answer) {
			checkOpenAIError(t, answer{status: a.status - 200 + 502, header: a.header, body: a.body}, 502, "server_error", "injected")
		}},
		{"slow", "slow=1ms", func(t *testing.T, a answer) {
			if a.body != whole.body {
				t.Fatalf("%q", a.body)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { tc.check(t, e.post("/v1/chat/completions", body, "X-Mock", tc.header)) })
	}
}

func TestFixtureDirective(t *testing.T) {
	dir := fixtureDir(t)
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	e := newEnv(t, Options{FixtureDir: dir})
	cases := []struct {
		name, path, directives string
		status                 int
		ctype, retryAfter      string
		want                   string
		cutOff                 bool
	}{
		{"openai stream", "/v1/chat/completions", "fixture=openai_stream_usage.sse", 200, "text/event-stream", "", read("openai_stream_usage.sse"), false},
		{"gemini stream", gemStream("m"), "fixture=gemini_stream_basic.sse", 200, "text/event-stream", "", read("gemini_stream_basic.sse"), false},
		{"json error with its status", "/v1/chat/completions", "fixture=openai_error_401.json;status=401", 401, "application/json", "", read("openai_error_401.json"), false},
		{"429 with Retry-After", "/v1/chat/completions", "fixture=openrouter_error_429.json,status=429,retry_after=3", 429, "application/json", "3", read("openrouter_error_429.json"), false},
		{"gemini error", gemWhole("m"), "fixture=gemini_error_403.json;status=403", 403, "application/json", "", read("gemini_error_403.json"), false},
		{"slow keeps the bytes", "/v1/chat/completions", "fixture=openrouter_stream_basic.sse;slow=1ms", 200, "text/event-stream", "", read("openrouter_stream_basic.sse"), false},
		{"cut after two events", gemStream("m"), "fixture=gemini_stream_basic.sse;cut=2", 200, "text/event-stream", "",
			strings.Join(events(read("gemini_stream_basic.sse"), "\r\n\r\n")[:2], ""), true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			reqBody := oaReq("m", true, false, "Hi")
			if strings.HasPrefix(tc.path, "/v1beta") {
				reqBody = gemReq
			}
			a := e.post(tc.path, reqBody, "X-Mock", tc.directives)
			if a.status != tc.status || a.header.Get("Content-Type") != tc.ctype || a.header.Get("Retry-After") != tc.retryAfter {
				t.Fatalf("status %d type %q Retry-After %q", a.status, a.header.Get("Content-Type"), a.header.Get("Retry-After"))
			}
			if a.body != tc.want {
				t.Fatalf("body\n got %q\nwant %q", a.body, tc.want)
			}
			if tc.cutOff != errors.Is(a.err, io.ErrUnexpectedEOF) || (!tc.cutOff && a.err != nil) {
				t.Fatalf("read error %v", a.err)
			}
		})
	}
	t.Run("missing file", func(t *testing.T) {
		checkOpenAIError(t, e.post("/v1/chat/completions", oaReq("m+fixture=nope.sse", true, false, "Hi")), 400, "invalid_request_error", "nope.sse")
	})
	t.Run("no fixture directory", func(t *testing.T) {
		e := newEnv(t, Options{})
		checkOpenAIError(t, e.post("/v1/chat/completions", oaReq("m+fixture=openai_stream_usage.sse", true, false, "Hi")), 400, "invalid_request_error", "no fixture directory")
	})
	t.Run("no path escape", func(t *testing.T) {
		checkOpenAIError(t, e.post("/v1/chat/completions", oaReq("m", true, false, "Hi"), "X-Mock", "fixture=../SOURCES.md"), 400, "invalid_request_error", "fixture")
	})
}

// TestHeaderNotOnlyModel: directives from X-Mock apply when the model has none, so a
// test can drive one provider differently per request.
func TestHeaderNotOnlyModel(t *testing.T) {
	e := newEnv(t, Options{})
	a := e.post("/v1/chat/completions", oaReq("gpt-4o", true, false, "Hi"), "X-Mock", "chunks=2")
	if s := parseOA(t, a.body); len(s.deltas) != 2 {
		t.Fatalf("deltas %q", s.deltas)
	}
	if a.status != http.StatusOK {
		t.Fatalf("status %d", a.status)
	}
}
