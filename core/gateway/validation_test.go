package gateway_test

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/ralf-gateway/ralf/core/gateway"
)

const limitsYAML = `
server: {max_body_bytes: 2048}
providers:
  - {name: up, base_url: "{{MOCK}}/v1", model: mock}
limits: {max_messages: 3, max_message_chars: 20}
store: memory://
`

func TestBadRequestsGetClearJSONErrors(t *testing.T) {
	e := newEnv(t, limitsYAML)
	big := `{"messages":[{"role":"user","content":"` + strings.Repeat("x", 3000) + `"}]}`
	cases := []struct {
		name, method, path, body, ctype string
		status                          int
		msg                             string
	}{
		{"malformed JSON says where", "POST", "/chat", "{\"messages\": [\n{\"role\": \"user\",, }]}", "application/json", 400, "line 2, column"},
		{"truncated JSON", "POST", "/chat", `{"messages":[`, "application/json", 400, "unexpected end"},
		{"empty body", "POST", "/chat", ``, "application/json", 400, "empty"},
		{"not an object", "POST", "/chat", `[1,2]`, "application/json", 400, "must be an object"},
		{"messages missing", "POST", "/chat", `{}`, "application/json", 400, "messages is required"},
		{"messages empty (seed message)", "POST", "/chat", `{"messages":[]}`, "application/json", 400, "messages array cannot be empty"},
		{"messages not an array", "POST", "/chat", `{"messages":"hi"}`, "application/json", 400, "must be an array"},
		{"too many messages", "POST", "/chat", `{"messages":[{"role":"user","content":"a"},{"role":"user","content":"a"},{"role":"user","content":"a"},{"role":"user","content":"a"}]}`, "application/json", 400, "too many messages"},
		{"bad role", "POST", "/chat", `{"messages":[{"role":"tool","content":"a"}]}`, "application/json", 400, "role must be one of system, user, assistant"},
		{"missing role", "POST", "/chat", `{"messages":[{"content":"a"}]}`, "application/json", 400, "role is required"},
		{"content not a string", "POST", "/chat", `{"messages":[{"role":"user","content":5}]}`, "application/json", 400, "content must be a string"},
		{"content missing", "POST", "/chat", `{"messages":[{"role":"user"}]}`, "application/json", 400, "content is required"},
		{"content too long", "POST", "/chat", `{"messages":[{"role":"user","content":"` + strings.Repeat("é", 21) + `"}]}`, "application/json", 400, "too long"},
		{"image part refused", "POST", "/chat", `{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}`, "application/json", 400, "only text parts"},
		{"bad temperature", "POST", "/chat", `{"temperature":7,"messages":[{"role":"user","content":"a"}]}`, "application/json", 400, "temperature"},
		{"too large", "POST", "/chat", big, "application/json", 413, "too large"},
		{"wrong content type", "POST", "/chat", hello, "multipart/form-data; boundary=x", 415, "Content-Type"},
		{"wrong method", "GET", "/chat", "", "", 405, "not allowed"},
		{"unknown path", "GET", "/nope", "", "", 404, "Not found"},
		{"v1 bad JSON", "POST", "/v1/chat/completions", `{"model":}`, "application/json", 400, "malformed JSON"},
		{"v1 max_completion_tokens 0", "POST", "/v1/chat/completions", `{"max_completion_tokens":0,"messages":[{"role":"user","content":"a"}]}`, "application/json", 400, "max_completion_tokens must be a positive integer"},
		{"v1 n>1", "POST", "/v1/chat/completions", `{"n":2,"messages":[{"role":"user","content":"a"}]}`, "application/json", 400, "n must be 1"},
		// Passed upstream, they would come back as parts of the answer ralf drops.
		{"v1 tools", "POST", "/v1/chat/completions", `{"tools":[{"type":"function","function":{"name":"f"}}],"messages":[{"role":"user","content":"a"}]}`, "application/json", 400, "tools is not supported"},
		{"v1 functions", "POST", "/v1/chat/completions", `{"functions":[{"name":"f"}],"messages":[{"role":"user","content":"a"}]}`, "application/json", 400, "functions is not supported"},
		{"v1 logprobs", "POST", "/v1/chat/completions", `{"logprobs":true,"messages":[{"role":"user","content":"a"}]}`, "application/json", 400, "logprobs is not supported"},
		{"v1 response_format not an object", "POST", "/v1/chat/completions", `{"response_format":"json","messages":[{"role":"user","content":"a"}]}`, "application/json", 400, "response_format must be an object"},
		{"v1 response_format json_schema malformed", "POST", "/v1/chat/completions", `{"response_format":{"type":"json_schema","json_schema":"oops"},"messages":[{"role":"user","content":"a"}]}`, "application/json", 400, "response_format.json_schema must be an object"},
		{"v1 response_format schema not an object", "POST", "/v1/chat/completions", `{"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":[1]}},"messages":[{"role":"user","content":"a"}]}`, "application/json", 400, "response_format.json_schema must be an object"},
		{"v1 top_logprobs", "POST", "/v1/chat/completions", `{"top_logprobs":2,"messages":[{"role":"user","content":"a"}]}`, "application/json", 400, "top_logprobs is not supported"},
		{"v1 max_tokens not an integer", "POST", "/v1/chat/completions", `{"max_tokens":1.5,"messages":[{"role":"user","content":"a"}]}`, "application/json", 400, "max_tokens must be an integer, not number 1.5"},
		{"v1 temperature not a number", "POST", "/v1/chat/completions", `{"temperature":"hot","messages":[{"role":"user","content":"a"}]}`, "application/json", 400, "temperature must be a number, not string"},
		{"v1 stream not a boolean", "POST", "/v1/chat/completions", `{"stream":"yes","messages":[{"role":"user","content":"a"}]}`, "application/json", 400, "stream must be a boolean, not string"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := e.mock.Requests()
			req, _ := http.NewRequest(tc.method, e.srv.URL+tc.path, strings.NewReader(tc.body))
			if tc.ctype != "" {
				req.Header.Set("Content-Type", tc.ctype)
			}
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			if res.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", res.StatusCode, tc.status)
			}
			if ct := res.Header.Get("Content-Type"); ct != "application/json" {
				t.Fatalf("Content-Type %q", ct)
			}
			var msg string
			if strings.HasPrefix(tc.path, "/v1") {
				var b struct {
					Error struct{ Message, Type, Code string } `json:"error"`
				}
				if err := json.NewDecoder(res.Body).Decode(&b); err != nil {
					t.Fatal(err)
				}
				msg = b.Error.Message
				if b.Error.Type == "" || b.Error.Code == "" {
					t.Fatalf("OpenAI error without type/code: %+v", b)
				}
			} else {
				var b struct {
					Error  string `json:"error"`
					Status int    `json:"status"`
				}
				if err := json.NewDecoder(res.Body).Decode(&b); err != nil {
					t.Fatal(err)
				}
				if b.Status != tc.status {
					t.Fatalf("body status %d, want %d", b.Status, tc.status)
				}
				msg = b.Error
			}
			if !strings.Contains(msg, tc.msg) {
				t.Fatalf("message %q does not contain %q", msg, tc.msg)
			}
			if e.mock.Requests() != before {
				t.Fatal("a rejected request reached the upstream")
			}
		})
	}
}

// TestCurlDefaultContentType: `curl -d` sends application/x-www-form-urlencoded; the
// README's quick start relies on /chat accepting it when the body is JSON.
func TestCurlDefaultContentType(t *testing.T) {
	e := newEnv(t, limitsYAML)
	r := e.chat(hello, "Content-Type", "application/x-www-form-urlencoded")
	if r.status != 200 {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
}

func TestTextPartsAccepted(t *testing.T) {
	e := newEnv(t, limitsYAML)
	r := e.do("POST", "/v1/chat/completions", `{"messages":[{"role":"user","content":[{"type":"text","text":"Summarize:"},{"type":"text","text":"the text"}]}]}`)
	if r.status != 200 {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	// Joined with a newline, as vLLM does: the words of two parts do not run together.
	if got := e.mock.LastRequest().Body; !strings.Contains(string(got), `"Summarize:\nthe text"`) {
		t.Fatalf("upstream got %s, want the text parts joined by a newline", got)
	}
}

// FuzzDecode: any body gets a JSON answer with a sane status, never a panic.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{hello, `{"messages":[{"role":"user","content":[{"type":"text","text":"a"}]}]}`,
		`{"messages":null}`, `{"messages":[{"role":null}]}`, `{"temperature":"x"}`, "\x00", `{"messages":[{"role":"user","content":"\ud800"}]}`} {
		f.Add(s)
	}
	e := newEnv(f, `
providers:
  - {name: up, base_url: "{{MOCK}}/v1", model: mock+chunks=1}
store: memory://
`)
	f.Fuzz(func(t *testing.T, body string) {
		e := *e
		e.t = t
		for _, path := range []string{"/chat", "/v1/chat/completions"} {
			r := e.do("POST", path, body)
			if r.status != 200 && r.status != 400 && r.status != 404 && r.status != 413 {
				t.Fatalf("%s: status %d for %q: %s", path, r.status, body, r.body)
			}
			if r.status != 200 && !json.Valid([]byte(r.body)) {
				t.Fatalf("%s: non-JSON error %q", path, r.body)
			}
		}
	})
}

// TestWrongMethodSaysWhichAreAllowed: a 405 carries the Allow header (RFC 9110).
func TestWrongMethodSaysWhichAreAllowed(t *testing.T) {
	e := newEnv(t, "providers:\n  - {name: m, base_url: \"{{MOCK}}/v1\", model: mock}\nstore: memory://\n")
	for path, want := range map[string]string{"/chat": "POST", "/v1/chat/completions": "POST", "/v1/models": "GET", "/v1/models/m": "GET", "/health": "GET, HEAD"} {
		r := e.do(http.MethodPut, path, "")
		if r.status != 405 || r.header.Get("Allow") != want {
			t.Errorf("PUT %s: status %d Allow %q, want 405 and %q", path, r.status, r.header.Get("Allow"), want)
		}
	}
}

// TestReloadWarnsAboutWhatNeedsARestart: settings a reload cannot apply are named in
// a warning, so an operator is not left wondering why nothing changed.
func TestReloadWarnsAboutWhatNeedsARestart(t *testing.T) {
	const provider = "providers:\n  - {name: m, base_url: \"{{MOCK}}/v1\", model: mock}\n"
	e := newEnv(t, provider+"store: memory://\nserver: {listen: \":3000\"}\nlog: {format: json}\n")
	e.apply(provider + "store: \"sqlite://x.db\"\nserver: {listen: \":4000\"}\nlog: {format: console}\n")
	var got []string
	for _, l := range e.logs.FilterLevelExact(zap.WarnLevel).All() {
		got = append(got, l.Message)
	}
	for _, want := range []string{"server.listen changed", "store changed", "log.format changed"} {
		if !strings.Contains(strings.Join(got, "\n"), want) {
			t.Errorf("warnings %q lack %q", got, want)
		}
	}
	// Changed back to what is in use: nothing to restart for.
	before := len(e.logs.FilterLevelExact(zap.WarnLevel).All())
	e.apply(provider + "store: memory://\nserver: {listen: \":3000\"}\nlog: {format: json}\n")
	if after := e.logs.FilterLevelExact(zap.WarnLevel).All(); len(after) != before {
		t.Errorf("back to the settings in use, still warned: %v", after[before:])
	}
}

// TestRetrieveDisabledModelIs404: for GET /v1/models/{id}, a disabled provider does
// not exist (a 400 on a GET would make SDKs raise a bad-request error).
func TestRetrieveDisabledModelIs404(t *testing.T) {
	e := newEnv(t, "providers:\n  - {name: m, base_url: \"{{MOCK}}/v1\", model: mock}\n  - {name: off, enabled: false, base_url: \"{{MOCK}}/v1\", model: mock2}\nstore: memory://\n")
	for _, id := range []string{"off", "off/x"} {
		if r := e.do(http.MethodGet, "/v1/models/"+id, ""); r.status != 404 || !strings.Contains(r.body, "disabled") {
			t.Errorf("GET /v1/models/%s: %d %s, want 404 saying it is disabled", id, r.status, r.body)
		}
	}
}

// TestSlowBodyIsCutOff: a client that sends its head and then trickles (or stops
// sending) its body gets 408 once the body's read time is up, and the handler ends.
func TestSlowBodyIsCutOff(t *testing.T) {
	old := *gateway.BodyReadTimeout
	*gateway.BodyReadTimeout = 300 * time.Millisecond
	t.Cleanup(func() { *gateway.BodyReadTimeout = old })
	e := newEnv(t, "providers:\n  - {name: m, base_url: \"{{MOCK}}/v1\", model: mock}\nstore: memory://\n")
	conn := e.rawConn()
	io.WriteString(conn, "POST /chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer to a stalled body: %v", err)
	}
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusRequestTimeout || !strings.Contains(string(b), "not received within") {
		t.Fatalf("status %d %s, want 408", res.StatusCode, b)
	}
	// A body that arrives in time is read as usual.
	if r := e.chat(hello); r.status != 200 {
		t.Fatalf("a normal request after it: %d %s", r.status, r.body)
	}
}
