package redis

import "testing"

// TestEmitCollapsesWhenReaderIsBehind: a slow reader never blocks the
// subscription and never silently misses an invalidation: what it had not
// read yet becomes one "*".
func TestEmitCollapsesWhenReaderIsBehind(t *testing.T) {
	s := &Store{inv: make(chan string, 3)}
	for _, id := range []string{"a", "b", "c"} {
		s.emit(id)
	}
	s.emit("d") // full: collapse
	if got := <-s.inv; got != "*" {
		t.Fatalf("first after overflow = %q, want *", got)
	}
	select {
	case got := <-s.inv:
		t.Fatalf("left over %q after collapse", got)
	default:
	}
	s.emit("e")
	if got := <-s.inv; got != "e" {
		t.Fatalf("after collapse = %q, want e", got)
	}
}
