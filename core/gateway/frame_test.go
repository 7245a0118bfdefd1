package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ralf-gateway/ralf/core/config"
	"github.com/ralf-gateway/ralf/core/llm"
	"github.com/ralf-gateway/ralf/core/middleware"
	"github.com/ralf-gateway/ralf/core/sse"
	_ "github.com/ralf-gateway/ralf/plugins/openai"
)

// TestChatSSELineBreaks: a delta's lines become data lines whatever ends them; a lone
// "\r" left inside a data line would end it for an SSE reader and lose the rest.
func TestChatSSELineBreaks(t *testing.T) {
	got := string(chatSSE{}.delta(nil, &llm.Chunk{Text: []byte("a\rb\r\nc\nd\n")}))
	want := "data: a\ndata: b\ndata: c\ndata: d\ndata: \n\n"
	if got != want {
		t.Fatalf("framed %q, want %q", got, want)
	}
	// What a client reads back from a sequence of deltas: no text lost, and a "\r\n"
	// split across two deltas is one line break, as when it came whole.
	for _, c := range []struct {
		deltas []string
		want   string
	}{
		{[]string{"a\rb\r\nc\nd\n"}, "a\nb\nc\nd\n"},
		{[]string{"x\r", "\ny"}, "x\ny"},
		{[]string{"x\r\n", "y"}, "x\ny"},
		{[]string{"x\r", "y"}, "xy"}, // the lone "\r" is dropped, never the text after it
	} {
		var framed []byte
		for _, d := range c.deltas {
			framed = chatSSE{}.delta(framed, &llm.Chunk{Text: []byte(d)})
		}
		rd := sse.NewReader(strings.NewReader(string(framed)), 0)
		var text string
		for {
			ev, err := rd.Next()
			if err != nil {
				break
			}
			text += string(ev.Data)
		}
		if text != c.want {
			t.Errorf("deltas %q: a client reads %q, want %q (framed %q)", c.deltas, text, c.want, framed)
		}
	}
}

// TestDialTimeoutIsNotTheProvidersTimeout: a dial that times out reports as a
// DeadlineExceeded too; only once the provider's own timeout has passed is an error
// of that kind reported as that timeout.
func TestDialTimeoutIsNotTheProvidersTimeout(t *testing.T) {
	cfg, err := config.Parse([]byte("providers:\n  - {name: p, base_url: \"http://127.0.0.1:1/v1\", model: m, timeout: 2m}\nstore: memory://\n"), config.Options{})
	if err != nil {
		t.Fatal(err)
	}
	g, err := New(cfg, Deps{})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	s := g.cur.Load()
	r := httptest.NewRequest(http.MethodPost, "/chat", nil)
	_, derr := (&net.Dialer{Timeout: time.Nanosecond}).Dial("tcp", "127.0.0.1:1")
	if !errors.Is(derr, context.DeadlineExceeded) {
		t.Fatalf("a dial timeout is %v, not a DeadlineExceeded: the case under test is gone", derr)
	}
	dial := fmt.Errorf("p: %w", derr)
	rv := &receiver{in: &middleware.Info{}, timedOut: new(atomic.Bool), first: cfg.Routing.FirstByteTimeout, deadline: time.Now().Add(2 * time.Minute)}
	if res := g.failed(r, s, &s.providers[0], rv, dial); res.timeout || res.status != http.StatusBadGateway || strings.Contains(res.err.Error(), "provider's timeout") {
		t.Errorf("dial timeout 10s into a 2m budget: timeout=%v status %d %q, want a 502 connection error", res.timeout, res.status, res.err)
	}
	rv.deadline = time.Now().Add(-time.Millisecond)
	if res := g.failed(r, s, &s.providers[0], rv, dial); !res.timeout || res.status != http.StatusGatewayTimeout || !strings.Contains(res.err.Error(), "provider's timeout (2m0s)") {
		t.Errorf("after the provider's timeout: timeout=%v status %d %q, want 504 naming it", res.timeout, res.status, res.err)
	}
}
