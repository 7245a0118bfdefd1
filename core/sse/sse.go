// Package sse reads Server-Sent Events as upstreams send them: "\n", "\r\n" or "\r"
// line endings, ":" comment lines, "event:" names and multi-line "data:".
package sse

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"sync"
)

// ErrEventTooLarge is returned when one event exceeds the reader's limit.
var ErrEventTooLarge = errors.New("sse: event too large")

// Event is one dispatched event. Its slices are valid until the next call to Next.
type Event struct {
	Name []byte // "event:" field, nil when absent
	Data []byte // "data:" lines joined by "\n"
}

// Reader is a pull parser over an SSE body. It allocates only while its buffers grow.
type Reader struct {
	br      *bufio.Reader
	max     int
	name    []byte
	data    []byte
	hasData bool
	skipLF  bool // the previous line ended with a lone '\r': a following '\n' belongs to it
	line    []byte
	wait    func()
}

// SetBeforeWait registers fn to run each time the reader has nothing buffered and is
// about to wait for the network. A gateway uses it to flush what it has written so
// far exactly when no more upstream data is at hand: several events that arrived
// together then leave in one write, and nothing waits behind a blocked read.
func (r *Reader) SetBeforeWait(fn func()) { r.wait = fn }

// NewReader reads events from r; maxEvent bounds the size of one event (0 = 1 MiB).
func NewReader(r io.Reader, maxEvent int) *Reader {
	if maxEvent <= 0 {
		maxEvent = 1 << 20
	}
	rd, _ := readers.Get().(*Reader)
	if rd == nil {
		// Never bufio.NewReaderSize(r, ...): it returns r itself when r is already a
		// large enough *bufio.Reader, and Release would then pool the caller's reader.
		rd = &Reader{br: bufio.NewReaderSize(nil, bufSize)}
	}
	rd.br.Reset(r)
	rd.max = maxEvent
	return rd
}

// bufSize is the read buffer: a burst of upstream events is usually far smaller.
const bufSize = 16 << 10

// maxPooled bounds the line and data buffers a released reader may keep: one huge
// event must not pin its memory in the pool.
const maxPooled = 64 << 10

// readers recycles Readers: a stream per request would otherwise allocate its 16 KiB
// buffer each time, most of a gateway's garbage.
var readers sync.Pool

// Release returns r to a pool for a later NewReader. The caller must not use r, nor
// any slice it returned, afterwards, and must call it at most once, from the
// goroutine that calls Next. Not calling it is fine.
func (r *Reader) Release() {
	if cap(r.line) > maxPooled || cap(r.data) > maxPooled || cap(r.name) > maxPooled {
		return
	}
	r.br.Reset(nil)
	*r = Reader{br: r.br, line: r.line[:0], data: r.data[:0], name: r.name[:0]}
	readers.Put(r)
}

// Next returns the next event with data. Events with no data line are skipped, as
// the SSE spec says. At the end of input it returns io.EOF; a last event that was
// not terminated by a blank line is still returned first.
func (r *Reader) Next() (Event, error) {
	r.name = r.name[:0]
	r.data = r.data[:0]
	r.hasData = false
	hasName := false
	for {
		line, err := r.readLine()
		if err != nil {
			if err == io.EOF && r.hasData {
				return r.event(hasName), nil
			}
			return Event{}, err
		}
		if len(line) == 0 {
			if r.hasData {
				return r.event(hasName), nil
			}
			r.name = r.name[:0]
			hasName = false
			continue
		}
		if line[0] == ':' {
			continue
		}
		field, value := line, []byte(nil)
		if i := bytes.IndexByte(line, ':'); i >= 0 {
			field, value = line[:i], line[i+1:]
			if len(value) > 0 && value[0] == ' ' {
				value = value[1:]
			}
		}
		switch string(field) {
		case "data":
			if r.hasData {
				r.data = append(r.data, '\n')
			}
			r.data = append(r.data, value...)
			r.hasData = true
			if len(r.data) > r.max {
				return Event{}, ErrEventTooLarge
			}
		case "event":
			r.name = append(r.name[:0], value...)
			hasName = true
		}
	}
}

func (r *Reader) event(hasName bool) Event {
	ev := Event{Data: r.data}
	if hasName {
		ev.Name = r.name
	}
	return ev
}

// readLine returns one line without its terminator. The slice is valid until the next call.
// It scans whole buffered runs at a time rather than byte by byte.
func (r *Reader) readLine() ([]byte, error) {
	r.line = r.line[:0]
	for {
		if r.br.Buffered() == 0 {
			if r.wait != nil {
				r.wait()
			}
			if _, err := r.br.Peek(1); err != nil {
				if err == io.EOF && len(r.line) > 0 {
					return r.line, nil
				}
				return nil, err
			}
		}
		buf, _ := r.br.Peek(r.br.Buffered())
		if r.skipLF {
			r.skipLF = false
			if buf[0] == '\n' {
				_, _ = r.br.Discard(1)
				continue
			}
		}
		i := 0
		for i < len(buf) && buf[i] != '\n' && buf[i] != '\r' {
			i++
		}
		if len(r.line)+i > r.max {
			return nil, ErrEventTooLarge
		}
		r.line = append(r.line, buf[:i]...)
		if i == len(buf) {
			_, _ = r.br.Discard(i)
			continue
		}
		r.skipLF = buf[i] == '\r'
		_, _ = r.br.Discard(i + 1)
		return r.line, nil
	}
}
