package gateway

import (
	"strings"
	"testing"

	"github.com/ralf-gateway/ralf/core/llm"
	"github.com/ralf-gateway/ralf/core/sse"
)

// TestChatSSELineBreaks: a delta's lines become data lines whatever ends them; a lone
// "\r" left inside a data line would end it for an SSE reader and lose the rest.
func TestChatSSELineBreaks(t *testing.T) {
	got := string(chatSSE{}.delta(nil, &llm.Chunk{Text: []byte("a\rb\r\nc\nd\r")}))
	want := "data: a\ndata: b\ndata: c\ndata: d\ndata: \n\n"
	if got != want {
		t.Fatalf("framed %q, want %q", got, want)
	}
	ev, err := sse.NewReader(strings.NewReader(got), 0).Next()
	if err != nil || string(ev.Data) != "a\nb\nc\nd\n" {
		t.Fatalf("an SSE reader gets %q (%v): text lost", ev.Data, err)
	}
}
