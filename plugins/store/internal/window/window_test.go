package window

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

func (c *clock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func TestSlidingWindow(t *testing.T) {
	c := &clock{t: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	l := NewWithClock(c.now)
	start := c.now()
	step := func(at time.Duration, wantAllowed bool, wantRemaining int, wantReset time.Duration) {
		t.Helper()
		c.t = start.Add(at)
		d, err := l.Allow("b", 3, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if d.Allowed != wantAllowed || d.Remaining != wantRemaining || !d.ResetAt.Equal(start.Add(wantReset)) {
			t.Fatalf("at %v: %+v; want allowed %v remaining %d reset +%v", at, d, wantAllowed, wantRemaining, wantReset)
		}
		if !d.Allowed && d.RetryAfter != wantReset-at {
			t.Fatalf("at %v: retryAfter %v, want %v", at, d.RetryAfter, wantReset-at)
		}
	}
	step(0, true, 2, 10*time.Second)
	step(1*time.Second, true, 1, 10*time.Second)
	step(5*time.Second, true, 0, 10*time.Second)
	step(6*time.Second, false, 0, 10*time.Second)
	step(9999*time.Millisecond, false, 0, 10*time.Second)
	// At exactly 10s the first request leaves: one slot, then the 1s one decides.
	step(10*time.Second, true, 0, 11*time.Second)
	step(10500*time.Millisecond, false, 0, 11*time.Second)
	step(11*time.Second, true, 0, 15*time.Second)
	// Long idle: everything has left, the full limit is back.
	step(60*time.Second, true, 2, 70*time.Second)
}

func TestExactUnderConcurrency(t *testing.T) {
	l := New()
	var wg sync.WaitGroup
	var mu sync.Mutex
	allowed := map[string]int{}
	for i := range 400 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := fmt.Sprintf("b%d", i%2)
			d, err := l.Allow(b, 10, time.Minute)
			if err != nil {
				t.Error(err)
				return
			}
			if d.Allowed {
				mu.Lock()
				allowed[b]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if allowed["b0"] != 10 || allowed["b1"] != 10 {
		t.Fatalf("allowed per bucket = %v, want exactly 10 each", allowed)
	}
}

func TestIdleBucketsDropped(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	l := NewWithClock(c.now)
	for i := range 1000 {
		if _, err := l.Allow(fmt.Sprintf("ip:%d", i), 5, time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if n := l.Len(); n != 1000 {
		t.Fatalf("%d buckets, want 1000", n)
	}
	// A long window keeps its bucket; short ones go once their window passed.
	if _, err := l.Allow("long", 5, time.Hour); err != nil {
		t.Fatal(err)
	}
	c.add(2 * sweepEvery)
	// Allow sweeps each shard it touches as it goes; Sweep does all of them.
	l.Sweep()
	if n := l.Len(); n != 1 {
		t.Fatalf("%d buckets after their windows passed, want 1 (the hour-long one)", n)
	}
	if d, _ := l.Allow("long", 5, time.Hour); d.Remaining != 3 {
		t.Fatalf("long bucket lost its count: remaining %d, want 3", d.Remaining)
	}
}

func TestLogStaysBounded(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	l := NewWithClock(c.now)
	for range 100000 {
		c.add(time.Millisecond)
		if _, err := l.Allow("busy", 10, 50*time.Millisecond); err != nil {
			t.Fatal(err)
		}
	}
	sh := &l.shard[0]
	for i := range l.shard {
		if l.shard[i].buckets["busy"] != nil {
			sh = &l.shard[i]
		}
	}
	if b := sh.buckets["busy"]; cap(b.log) > 64 {
		t.Fatalf("log capacity %d for a limit of 10: compaction does not work", cap(b.log))
	}
}

func TestInvalid(t *testing.T) {
	l := New()
	for _, tc := range []struct {
		limit  int
		window time.Duration
	}{{0, time.Second}, {-3, time.Second}, {1, 0}, {1, -time.Second}} {
		if _, err := l.Allow("x", tc.limit, tc.window); err == nil {
			t.Errorf("Allow(%d, %v) accepted", tc.limit, tc.window)
		}
	}
}

// TestLoweredLimitRetryAfter: after a reload lowers the limit under the count, the
// refused request is told when a slot really frees, not when the oldest entry leaves.
func TestLoweredLimitRetryAfter(t *testing.T) {
	c := &clock{t: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	l := NewWithClock(c.now)
	start := c.now()
	for _, at := range []time.Duration{0, time.Second, 2 * time.Second} {
		c.t = start.Add(at)
		if d, _ := l.Allow("b", 3, 10*time.Second); !d.Allowed {
			t.Fatalf("at %v: refused", at)
		}
	}
	c.t = start.Add(3 * time.Second)
	d, _ := l.Allow("b", 1, 10*time.Second) // the limit is now 1: all three must leave
	if d.Allowed || d.RetryAfter != 9*time.Second || !d.ResetAt.Equal(start.Add(12*time.Second)) {
		t.Fatalf("%+v; want refused, retry after 9s (when the newest entry leaves)", d)
	}
}
