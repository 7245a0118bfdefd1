// Package window is an exact in-process sliding-window-log rate limiter,
// shared by the memory and sqlite stores.
package window

import (
	"errors"
	"hash/maphash"
	"sync"
	"time"

	"github.com/ralf-gateway/ralf/core/store"
)

// ErrInvalid is returned for a limit or window that is not positive.
var ErrInvalid = errors.New("rate limit: limit and window must be positive")

const (
	shards = 32
	// sweepEvery bounds how long an idle bucket can outlive its window.
	sweepEvery = 10 * time.Second
)

// Limiter counts requests per bucket. It is safe for concurrent use; buckets
// are spread over shards so unrelated clients do not contend on one mutex.
type Limiter struct {
	base  time.Time // monotonic origin: entries are offsets from it (8 bytes each, immune to wall-clock jumps)
	now   func() time.Time
	seed  maphash.Seed
	shard [shards]shard
}

type shard struct {
	mu        sync.Mutex
	buckets   map[string]*bucket
	lastSweep time.Duration
}

// bucket is the log of accepted requests still inside the window, oldest
// first, as offsets from Limiter.base. It holds at most limit entries (more for a while after the limit was lowered).
type bucket struct {
	log    []time.Duration
	head   int
	window time.Duration
}

// New makes a Limiter on the real clock.
func New() *Limiter { return NewWithClock(time.Now) }

// NewWithClock makes a Limiter reading time from now (tests).
func NewWithClock(now func() time.Time) *Limiter {
	l := &Limiter{base: now(), now: now, seed: maphash.MakeSeed()}
	for i := range l.shard {
		l.shard[i].buckets = map[string]*bucket{}
	}
	return l
}

// Allow counts one request for bucket if fewer than limit were accepted in the
// last window. A request accepted at t counts while now-t < window.
func (l *Limiter) Allow(key string, limit int, window time.Duration) (store.Decision, error) {
	if limit <= 0 || window <= 0 {
		return store.Decision{}, ErrInvalid
	}
	sh := &l.shard[maphash.String(l.seed, key)%shards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	now := l.now().Sub(l.base)
	if now-sh.lastSweep >= sweepEvery {
		sh.sweep(now)
	}
	b := sh.buckets[key]
	if b == nil {
		b = &bucket{}
		sh.buckets[key] = b
	}
	b.window = window
	b.expire(now)
	d := store.Decision{Limit: limit}
	n := b.len()
	if n < limit {
		b.push(now)
		n++
		d.Allowed = true
	}
	d.Remaining = max(limit-n, 0)
	reset := b.oldest() + window
	if !d.Allowed {
		// A slot frees when the entry that brings the count under the limit leaves:
		// past the oldest one when a reload has lowered the limit under the count.
		reset = b.log[b.head+n-limit] + window
		d.RetryAfter = max(reset-now, time.Millisecond)
	}
	d.ResetAt = l.base.Add(reset)
	return d, nil
}

// Len is the number of buckets held (tests check that idle ones are dropped).
func (l *Limiter) Len() int {
	n := 0
	for i := range l.shard {
		sh := &l.shard[i]
		sh.mu.Lock()
		n += len(sh.buckets)
		sh.mu.Unlock()
	}
	return n
}

// Sweep drops every bucket whose requests have all left their window.
func (l *Limiter) Sweep() {
	now := l.now().Sub(l.base)
	for i := range l.shard {
		sh := &l.shard[i]
		sh.mu.Lock()
		sh.sweep(now)
		sh.mu.Unlock()
	}
}

func (sh *shard) sweep(now time.Duration) {
	sh.lastSweep = now
	for k, b := range sh.buckets {
		if b.len() == 0 || now-b.newest() >= b.window {
			delete(sh.buckets, k)
		}
	}
}

func (b *bucket) len() int { return len(b.log) - b.head }

func (b *bucket) oldest() time.Duration { return b.log[b.head] }

func (b *bucket) newest() time.Duration { return b.log[len(b.log)-1] }

func (b *bucket) expire(now time.Duration) {
	for b.head < len(b.log) && now-b.log[b.head] >= b.window {
		b.head++
	}
	// Compact once the dead prefix dominates, so the log never grows past
	// about twice the limit.
	if b.head > 0 && b.head >= len(b.log)/2 {
		n := copy(b.log, b.log[b.head:])
		b.log = b.log[:n]
		b.head = 0
	}
}

func (b *bucket) push(t time.Duration) { b.log = append(b.log, t) }
