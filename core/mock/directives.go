package mock

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// maxChunks bounds chunks=N so a typo cannot make one answer megabytes long.
const maxChunks = 100000

// plan is what one request asked the mock to do. Positions (cut, hangAfter,
// errorEvent, errorChunk) count content chunks already sent; -1 means off.
type plan struct {
	chunks     int
	delay      time.Duration
	slow       time.Duration
	status     int
	retryAfter string
	hang       bool
	hangAfter  int
	cut        int
	malformed  bool
	errorEvent int
	errorChunk int
	fixture    string
	reasoning  bool
}

// parsePlan reads the directives of one request: from the model name
// ("mock+status=503+retry_after=2") and then from the X-Mock header
// ("status=503, retry_after=2" or with ';'), so the header wins on the same key.
func parsePlan(model, header string, defChunks int) (plan, error) {
	p := plan{chunks: defChunks, hangAfter: -1, cut: -1, errorEvent: -1, errorChunk: -1}
	if i := strings.IndexByte(model, '+'); i >= 0 {
		for _, it := range strings.Split(model[i+1:], "+") {
			if err := p.set(it); err != nil {
				return p, err
			}
		}
	}
	if header != "" {
		for _, it := range strings.FieldsFunc(header, func(r rune) bool { return r == ',' || r == ';' }) {
			if err := p.set(it); err != nil {
				return p, err
			}
		}
	}
	return p, p.check()
}

// set applies one key=value (or bare flag) directive.
func (p *plan) set(item string) error {
	item = strings.TrimSpace(item)
	if item == "" {
		return nil
	}
	k, v, hasValue := strings.Cut(item, "=")
	k, v = strings.TrimSpace(k), strings.TrimSpace(v)
	num := func(max int) (int, error) {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > max {
			return 0, fmt.Errorf("mock directive %s=%q: want a whole number from 0 to %d", k, v, max)
		}
		return n, nil
	}
	dur := func() (time.Duration, error) {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return 0, fmt.Errorf("mock directive %s=%q: want a duration such as 250ms or 2s", k, v)
		}
		return d, nil
	}
	flag := func(f *bool) error {
		if hasValue {
			return fmt.Errorf("mock directive %s takes no value (got %q)", k, item)
		}
		*f = true
		return nil
	}
	var err error
	switch k {
	case "chunks":
		p.chunks, err = num(maxChunks)
	case "delay":
		p.delay, err = dur()
	case "slow":
		p.slow, err = dur()
	case "status":
		p.status, err = num(599)
		if err == nil && p.status < 200 {
			err = fmt.Errorf("mock directive status=%s: want an HTTP status from 200 to 599", v)
		}
	case "retry_after":
		if _, err = num(1 << 30); err == nil {
			p.retryAfter = v
		}
	case "hang":
		err = flag(&p.hang)
	case "hang_after":
		p.hangAfter, err = num(maxChunks)
	case "cut":
		p.cut, err = num(maxChunks)
	case "malformed":
		err = flag(&p.malformed)
	case "error_event":
		p.errorEvent, err = num(maxChunks)
	case "error_chunk":
		p.errorChunk, err = num(maxChunks)
	case "fixture":
		// A plain file name only: the directive comes from a request, and must not
		// reach files outside the fixture directory.
		if v == "" || v != filepath.Base(v) || strings.ContainsAny(v, `/\`) || strings.HasPrefix(v, ".") {
			err = fmt.Errorf("mock directive fixture=%q: want a file name in the fixture directory", v)
		}
		p.fixture = v
	case "reasoning":
		err = flag(&p.reasoning)
	default:
		err = fmt.Errorf("unknown mock directive %q (known: chunks delay slow status retry_after hang hang_after cut malformed error_event error_chunk fixture reasoning)", k)
	}
	return err
}

// check rejects combinations that cannot mean what the user wrote.
func (p *plan) check() error {
	if p.retryAfter != "" && p.status < 400 {
		return errors.New("mock directive retry_after needs status=4xx or 5xx")
	}
	if p.fixture != "" {
		if p.malformed || p.reasoning || p.errorEvent >= 0 || p.errorChunk >= 0 {
			return errors.New("mock directive fixture replays a file: malformed, reasoning, error_event and error_chunk do not apply")
		}
		return nil
	}
	if p.status != 0 && p.status < 400 {
		return fmt.Errorf("mock directive status=%d: want 400-599 (other statuses only with fixture=)", p.status)
	}
	return nil
}

// clamp moves a fault position past the end of the answer to its end, so cut=50
// on a 20-chunk answer still cuts (after the last chunk, before the finish).
func clamp(pos, n int) int {
	if pos > n {
		return n
	}
	return pos
}
