package gateway

import (
	"testing"
	"time"

	"github.com/ralf-gateway/ralf/core/llm"
)

// BenchmarkFrame measures the per-chunk framing of each client API: it must not allocate.
//
//	go test -run '^$' -bench Frame -benchmem ./core/gateway/
func BenchmarkFrame(b *testing.B) {
	chunk := llm.Chunk{Text: []byte(" the quick brown fox jumps over the \"lazy\" dog\n")}
	o := &openAIChunks{id: "chatcmpl-0123456789abcdef", created: time.Unix(1700000000, 0)}
	o.setModel("moonshotai/kimi-k2-instruct-0905")
	for _, fr := range []struct {
		name string
		f    framer
	}{{"chat-sse", chatSSE{}}, {"chat-text", chatText{}}, {"v1-openai", o}} {
		b.Run(fr.name, func(b *testing.B) {
			buf := make([]byte, 0, 4096)
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				buf = fr.f.delta(buf[:0], &chunk)
			}
			b.SetBytes(int64(len(buf)))
		})
	}
}

func TestFramingDoesNotAllocate(t *testing.T) {
	chunk := llm.Chunk{Text: []byte("héllo\n\"world\"\t"), Reasoning: []byte("hmm")}
	o := &openAIChunks{id: "x", created: time.Unix(1, 0)}
	o.setModel("m")
	buf := make([]byte, 0, 4096)
	for _, f := range []framer{chatSSE{}, chatText{}, o} {
		if n := testing.AllocsPerRun(100, func() { buf = f.delta(buf[:0], &chunk) }); n != 0 {
			t.Fatalf("%T: %.1f allocations per chunk, want 0", f, n)
		}
	}
}
