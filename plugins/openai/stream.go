package openai

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ralf-gateway/ralf/core/llm"
	"github.com/ralf-gateway/ralf/core/sse"
)

// errClosed is what Recv returns after Close.
var errClosed = errors.New("stream closed")

const (
	// drainMax and drainWait bound the read after [DONE] that lets the connection
	// go back to the pool (an unread body makes the transport drop it). The read
	// runs in the background, so nobody waits for it: a slow end of body is worth
	// waiting for rather than a new connection (and TLS handshake).
	drainMax  = 4 << 10
	drainWait = 2 * time.Second
)

// stream is a streamed chat answer: a pull parser over the upstream SSE body.
//
// The Text and Reasoning slices of a returned Chunk alias the stream's buffers and
// are only valid until the next call to Recv or Close.
type stream struct {
	p      *Provider
	body   io.ReadCloser
	cancel context.CancelFunc
	rd     *sse.Reader
	sc     scanner

	finished bool   // a finish_reason was seen: a body end without [DONE] is still clean
	finish   string // the finish reason last returned, so repeats are not returned again
	pending  error  // returned by the next Recv (an error chunk's usage went first)
	err      error  // terminal: every later Recv returns it (only Recv writes it)

	// Close may come from another goroutine to unblock a Recv, so it only touches these.
	closed  atomic.Bool
	ended   atomic.Bool // Recv saw [DONE]: Close reads the rest of the body before releasing
	release func()      // cancels the request and closes the body, once
}

func newStream(p *Provider, body io.ReadCloser, cancel context.CancelFunc) *stream {
	s := &stream{p: p, body: body, cancel: cancel, rd: sse.NewReader(body, 0)}
	s.release = sync.OnceFunc(func() {
		cancel()
		_ = body.Close()
	})
	return s
}

// Recv returns the next chunk that carries something (text, reasoning, a finish
// reason or usage), io.EOF at the end of a complete answer, or an error:
// *llm.UpstreamError for an error the upstream reported in the stream, an error
// wrapping io.ErrUnexpectedEOF when the body ended before the answer did.
func (s *stream) Recv() (llm.Chunk, error) {
	if s.err != nil {
		return llm.Chunk{}, s.err
	}
	if s.closed.Load() {
		return llm.Chunk{}, s.fail(errClosed)
	}
	if s.pending != nil {
		return llm.Chunk{}, s.fail(s.pending)
	}
	for {
		ev, err := s.rd.Next()
		if err != nil {
			if s.closed.Load() {
				err = errClosed
			} else {
				err = s.endErr(err)
			}
			return llm.Chunk{}, s.fail(err)
		}
		if string(ev.Name) == "error" {
			// Groq: "event: error" + {"error":{"message",...,"status_code":400}}.
			v := ev.Data
			if f, err := s.sc.parse(ev.Data); err == nil && f.Error != nil {
				v = f.Error
			}
			return llm.Chunk{}, s.fail(s.p.streamError(v))
		}
		data := bytes.TrimSpace(ev.Data)
		if len(data) == 0 {
			continue
		}
		if string(data) == "[DONE]" {
			// The request stays open: Close drains what follows (the end of the
			// chunked body) once the caller has sent the answer on, so that the
			// connection goes back to the pool without delaying the client.
			s.err = io.EOF
			s.dropReader()
			s.ended.Store(true)
			return llm.Chunk{}, io.EOF
		}
		f, err := s.sc.parse(data)
		if err != nil {
			return llm.Chunk{}, s.fail(fmt.Errorf("%s: %w", s.p.name, err))
		}
		if f.Error != nil {
			// OpenRouter reports mid-stream failures as a chunk with a top-level
			// "error" (and may put the usage so far next to it: count it first).
			ue := s.p.streamError(f.Error)
			if u := usageOf(f); u != nil {
				s.pending = ue
				return llm.Chunk{Usage: u}, nil
			}
			return llm.Chunk{}, s.fail(ue)
		}
		var c llm.Chunk
		if len(f.Text) > 0 {
			c.Text = f.Text
		}
		if len(f.Reasoning) > 0 {
			c.Reasoning = f.Reasoning
		}
		if f.Finish != nil {
			s.finished = true
			if fr := finishString(f.Finish); fr != s.finish {
				s.finish, c.FinishReason = fr, fr
			}
		}
		c.Usage = usageOf(f)
		if c.Text == nil && c.Reasoning == nil && c.FinishReason == "" && c.Usage == nil {
			continue
		}
		return c, nil
	}
}

// endErr maps the reader's error at the end of input.
func (s *stream) endErr(err error) error {
	switch {
	case err == io.EOF && s.finished:
		// Some servers close after the finish chunk without [DONE]; the answer is whole.
		return io.EOF
	case err == io.EOF:
		return fmt.Errorf("%s: stream ended before its end marker: %w", s.p.name, io.ErrUnexpectedEOF)
	case errors.Is(err, sse.ErrEventTooLarge):
		return fmt.Errorf("%s: %w", s.p.name, err)
	}
	return fmt.Errorf("%s: read stream: %w", s.p.name, err)
}

// fail makes err terminal and releases the request.
func (s *stream) fail(err error) error {
	s.err = err
	s.pending = nil
	s.dropReader()
	s.release()
	return err
}

// dropReader gives the SSE reader back to its pool; only Recv calls it, once the
// stream is over, so no returned chunk is still in use.
func (s *stream) dropReader() {
	if s.rd != nil {
		s.rd.Release()
		s.rd = nil
	}
}

// drain reads what little may follow [DONE] so that the body reaches EOF and the
// connection is reused; an upstream that keeps sending is cut after drainWait.
func (s *stream) drain() {
	t := time.AfterFunc(drainWait, s.cancel)
	_, _ = io.CopyN(io.Discard, s.body, drainMax)
	t.Stop()
}

var _ llm.WaitNotifier = (*stream)(nil)

// SetBeforeWait implements llm.WaitNotifier.
func (s *stream) SetBeforeWait(fn func()) {
	if s.rd != nil {
		s.rd.SetBeforeWait(fn)
	}
}

// Close aborts the upstream request if it is still running; a Recv blocked in
// another goroutine then returns. It is safe to call more than once, and after the
// end of the stream.
func (s *stream) Close() error {
	s.closed.Store(true)
	if s.ended.CompareAndSwap(true, false) {
		// Recv has returned io.EOF for good, so the body is ours: what follows
		// [DONE] is read in the background, then the connection goes back to the
		// pool. The caller's answer does not wait for the upstream's last bytes.
		go func() {
			s.drain()
			s.release()
		}()
		return nil
	}
	s.release()
	return nil
}
