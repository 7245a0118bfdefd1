package sse

import (
	"bufio"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

type ev struct{ name, data string }

func readAll(t *testing.T, r io.Reader, max int) ([]ev, error) {
	t.Helper()
	sr := NewReader(r, max)
	var out []ev
	for {
		e, err := sr.Next()
		if err != nil {
			if err == io.EOF {
				return out, nil
			}
			return out, err
		}
		out = append(out, ev{string(e.Name), string(e.Data)})
	}
}

func TestReader(t *testing.T) {
	cases := []struct {
		name string
		in   string
		want []ev
	}{
		{"lf", "data: a\n\ndata: b\n\n", []ev{{"", "a"}, {"", "b"}}},
		{"crlf (gemini)", "data: a\r\n\r\ndata: b\r\n\r\n", []ev{{"", "a"}, {"", "b"}}},
		{"cr only", "data: a\r\rdata: b\r\r", []ev{{"", "a"}, {"", "b"}}},
		{"comments skipped (openrouter)", ": OPENROUTER PROCESSING\n\ndata: x\n\n", []ev{{"", "x"}}},
		{"event name (groq error)", "event: error\ndata: {\"e\":1}\n\n", []ev{{"error", "{\"e\":1}"}}},
		{"multi-line data", "data: a\ndata: b\n\n", []ev{{"", "a\nb"}}},
		{"no space after colon", "data:x\n\n", []ev{{"", "x"}}},
		{"only first space stripped", "data:  x\n\n", []ev{{"", " x"}}},
		{"unterminated last event", "data: a\n\ndata: b", []ev{{"", "a"}, {"", "b"}}},
		{"event without data skipped", "event: ping\n\ndata: a\n\n", []ev{{"", "a"}}},
		{"name does not leak to the next event", "event: x\ndata: 1\n\ndata: 2\n\n", []ev{{"x", "1"}, {"", "2"}}},
		{"unknown fields ignored", "id: 7\nretry: 10\ndata: a\n\n", []ev{{"", "a"}}},
		{"empty", "", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, r := range []io.Reader{strings.NewReader(tc.in), iotest.OneByteReader(strings.NewReader(tc.in))} {
				got, err := readAll(t, r, 0)
				if err != nil {
					t.Fatal(err)
				}
				if len(got) != len(tc.want) {
					t.Fatalf("got %q, want %q", got, tc.want)
				}
				for i := range got {
					if got[i] != tc.want[i] {
						t.Fatalf("event %d: got %q, want %q", i, got[i], tc.want[i])
					}
				}
			}
		})
	}
}

func TestReaderLimitsEventSize(t *testing.T) {
	in := "data: " + strings.Repeat("x", 100) + "\n\n"
	if _, err := readAll(t, strings.NewReader(in), 50); !errors.Is(err, ErrEventTooLarge) {
		t.Fatalf("err %v, want ErrEventTooLarge", err)
	}
	in = strings.Repeat("data: 0123456789\n", 10) + "\n"
	if _, err := readAll(t, strings.NewReader(in), 50); !errors.Is(err, ErrEventTooLarge) {
		t.Fatalf("multi-line: err %v, want ErrEventTooLarge", err)
	}
}

func TestReaderPassesReadErrors(t *testing.T) {
	boom := errors.New("boom")
	r := io.MultiReader(strings.NewReader("data: a\n\n"), iotest.ErrReader(boom))
	got, err := readAll(t, r, 0)
	if len(got) != 1 || !errors.Is(err, boom) {
		t.Fatalf("got %v, %v; want one event then boom", got, err)
	}
}

func FuzzReader(f *testing.F) {
	f.Add("data: a\r\n\r\ndata: b\n\n: c\n\nevent: error\ndata: {}\n\n")
	f.Fuzz(func(t *testing.T, in string) {
		sr := NewReader(strings.NewReader(in), 1024)
		for i := 0; i <= len(in)+1; i++ {
			e, err := sr.Next()
			if err != nil {
				return
			}
			if len(e.Data) > 1024 {
				t.Fatalf("event of %d bytes exceeds the limit", len(e.Data))
			}
		}
		t.Fatal("reader did not terminate")
	})
}

// TestBeforeWaitRunsOnlyWhenNothingIsBuffered: events that arrived together are read
// without the hook; it runs right before the reader would block.
func TestBeforeWaitRunsOnlyWhenNothingIsBuffered(t *testing.T) {
	pr, pw := io.Pipe()
	r := NewReader(pr, 0)
	waits := 0
	r.SetBeforeWait(func() { waits++ })
	go func() {
		pw.Write([]byte("data: a\n\ndata: b\n\n"))
		pw.Write([]byte("data: c\n\n"))
		pw.Close()
	}()
	var got []string
	var waitsAt []int
	for {
		e, err := r.Next()
		if err != nil {
			break
		}
		got = append(got, string(e.Data))
		waitsAt = append(waitsAt, waits)
	}
	if strings.Join(got, ",") != "a,b,c" {
		t.Fatalf("events %v", got)
	}
	// a: one wait (empty buffer at start); b: none more (already buffered); c: one more.
	if waitsAt[0] != 1 || waitsAt[1] != 1 || waitsAt[2] != 2 {
		t.Fatalf("hook counts at each event %v, want [1 1 2]", waitsAt)
	}
}

// TestReleaseKeepsTheCallersReader: a reader given to NewReader is never recycled
// with the pooled one, even a *bufio.Reader that bufio would not wrap again.
func TestReleaseKeepsTheCallersReader(t *testing.T) {
	// One byte per read: the SSE reader takes exactly the first event from src.
	src := bufio.NewReaderSize(iotest.OneByteReader(strings.NewReader("data: a\n\ndata: b\n\n")), 64<<10)
	rd := NewReader(src, 0)
	ev, err := rd.Next()
	if err != nil || string(ev.Data) != "a" {
		t.Fatalf("first event %q, %v", ev.Data, err)
	}
	rd.Release()
	other := NewReader(strings.NewReader("data: z\n\n"), 0) // may reuse the released one
	if ev, err := other.Next(); err != nil || string(ev.Data) != "z" {
		t.Fatalf("reused reader: %q, %v", ev.Data, err)
	}
	if rest, err := io.ReadAll(src); err != nil || string(rest) != "data: b\n\n" {
		t.Fatalf("the caller's reader holds %q (%v) after Release, want the second event", rest, err)
	}
}

// TestPooledReaderStartsClean: a reader from the pool carries nothing over from its
// last stream: no buffered bytes and no flush callback.
func TestPooledReaderStartsClean(t *testing.T) {
	for i := 0; i < 3; i++ {
		waited := 0
		rd := NewReader(strings.NewReader("data: x\n\ndata: left over\n\n"), 0)
		rd.SetBeforeWait(func() { waited++ })
		if ev, err := rd.Next(); err != nil || string(ev.Data) != "x" {
			t.Fatalf("round %d: %q, %v", i, ev.Data, err)
		}
		rd.Release() // with an event still buffered
		before := waited
		rd = NewReader(strings.NewReader("data: y\n\n"), 0)
		if ev, err := rd.Next(); err != nil || string(ev.Data) != "y" {
			t.Fatalf("round %d, next stream: %q, %v", i, ev.Data, err)
		}
		if _, err := rd.Next(); err != io.EOF {
			t.Fatalf("round %d, next stream: %v after its only event, want EOF", i, err)
		}
		if waited != before {
			t.Fatalf("round %d: the previous stream's wait callback ran", i)
		}
		rd.Release()
	}
}
