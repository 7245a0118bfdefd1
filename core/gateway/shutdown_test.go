package gateway_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ralf-gateway/ralf/core/gateway"
)

// TestShutdownEndsRequestsWithAnError: when the shutdown timeout cancels the server's
// base context with gateway.ErrShuttingDown, a stream under way ends with an error
// event saying so (not as a cut connection, nor as a complete-looking answer), a
// request not yet answered gets a 503, and the provider's health is untouched.
func TestShutdownEndsRequestsWithAnError(t *testing.T) {
	e := newEnv(t, `
routing: {failure_threshold: 1}
providers:
  - {name: slow, base_url: "{{MOCK}}/v1", model: "mock+chunks=50+slow=100ms"}
  - {name: late, base_url: "{{MOCK}}/v1", model: "mock+delay=10s"}
`)
	cases := []struct {
		name, path, body, accept string
		started                  bool // the answer has begun when the shutdown comes
		check                    func(t *testing.T, status int, body string)
	}{
		{"chat SSE", "/chat", `{"provider":"slow","messages":[{"role":"user","content":"Hello"}]}`, "", true,
			func(t *testing.T, status int, body string) {
				evs := sseEvents(body)
				if want := `event: error` + "\n" + `data: {"error":"the gateway is shutting down","status":503}`; evs[len(evs)-1] != want {
					t.Fatalf("last event %q, want %q", evs[len(evs)-1], want)
				}
			}},
		{"v1 stream", "/v1/chat/completions", `{"model":"slow","stream":true,"messages":[{"role":"user","content":"Hello"}]}`, "", true,
			func(t *testing.T, status int, body string) {
				if strings.Contains(body, "[DONE]") {
					t.Fatalf("stream looks complete: %q", body)
				}
				evs := sseEvents(body)
				var ev struct {
					Error struct{ Message, Type string } `json:"error"`
				}
				if err := json.Unmarshal([]byte(strings.TrimPrefix(evs[len(evs)-1], "data: ")), &ev); err != nil ||
					ev.Error.Message != "the gateway is shutting down" {
					t.Fatalf("last event %q, want the shutdown error", evs[len(evs)-1])
				}
			}},
		{"before the first byte", "/v1/chat/completions", `{"model":"late","messages":[{"role":"user","content":"Hello"}]}`, "", false,
			func(t *testing.T, status int, body string) {
				if status != 503 || !strings.Contains(body, `"message":"the gateway is shutting down"`) {
					t.Fatalf("%d %s, want 503 saying the gateway is shutting down", status, body)
				}
			}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			base, abort := context.WithCancelCause(context.Background())
			defer abort(nil)
			srv := httptest.NewUnstartedServer(e.gw)
			srv.Config.BaseContext = func(net.Listener) context.Context { return base }
			srv.Start()
			defer srv.Close()

			req, _ := http.NewRequest("POST", srv.URL+c.path, strings.NewReader(c.body))
			req.Header.Set("Content-Type", "application/json")
			if !c.started {
				// Shut down while the upstream is still silent.
				time.AfterFunc(300*time.Millisecond, func() { abort(gateway.ErrShuttingDown) })
			}
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			br := bufio.NewReader(res.Body)
			var head string
			if c.started {
				if head, err = br.ReadString('\n'); err != nil || !strings.HasPrefix(head, "data: ") {
					t.Fatalf("first line %q %v", head, err)
				}
				abort(gateway.ErrShuttingDown)
			}
			done := make(chan struct{})
			var rest []byte
			go func() { defer close(done); rest, err = io.ReadAll(br) }()
			select {
			case <-done:
			case <-time.After(4 * time.Second):
				t.Fatal("the answer did not end soon after the shutdown")
			}
			if err != nil {
				t.Fatalf("answer cut instead of ended with an error: %v (read %q)", err, rest)
			}
			c.check(t, res.StatusCode, head+string(rest))
		})
	}
	for _, p := range e.health().Providers {
		if p.State != "up" {
			t.Fatalf("provider %s is %s after a shutdown: it was not its fault", p.Name, p.State)
		}
	}
}
