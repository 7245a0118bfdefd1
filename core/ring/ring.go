// Package ring picks providers: round robin (or smooth weighted round robin) over
// the enabled members, skipping members in cooldown, with passive health per member.
package ring

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Health is the passive health of one provider. It lives outside config generations
// (keyed by the provider's settings), so a reload keeps it for unchanged providers.
type Health struct {
	mu            sync.Mutex
	consecutive   int
	cooldownUntil atomic.Int64 // unix nanoseconds; 0 = up
	swrrCurrent   int64        // smooth weighted round robin state, guarded by the ring's mutex
}

// Success resets the consecutive failure count.
func (h *Health) Success() {
	h.mu.Lock()
	h.consecutive = 0
	h.mu.Unlock()
}

// Failure counts one failed attempt. After threshold consecutive failures, or at once
// when the upstream said how long to wait (retryAfter > 0, a 429 with Retry-After),
// the member cools down for cooldown (or retryAfter). It reports whether it tripped.
func (h *Health) Failure(now time.Time, threshold int, cooldown, retryAfter time.Duration) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.consecutive++
	if retryAfter <= 0 && h.consecutive < threshold {
		return false
	}
	d := cooldown
	if retryAfter > 0 {
		d = retryAfter
	}
	h.consecutive = 0
	h.cooldownUntil.Store(now.Add(d).UnixNano())
	return true
}

// CooldownUntil returns the end of the cooldown, and whether the member is cooling at now.
func (h *Health) CooldownUntil(now time.Time) (time.Time, bool) {
	u := h.cooldownUntil.Load()
	if u == 0 || now.UnixNano() >= u {
		return time.Time{}, false
	}
	return time.Unix(0, u), true
}

// Available reports whether the member may be picked at now.
func (h *Health) Available(now time.Time) bool {
	u := h.cooldownUntil.Load()
	return u == 0 || now.UnixNano() >= u
}

// Member is one provider in the ring.
type Member struct {
	Name   string
	Weight int
	Health *Health
}

// Ring is an immutable set of members built for one config generation; its position
// counter is shared across generations so round robin carries on after a reload.
type Ring struct {
	members  []Member
	weighted bool
	counter  *atomic.Uint64
	mu       *sync.Mutex // smooth weighted state; shared across generations like counter
	total    int64
}

// Position is the shared state that makes consecutive rings continue where the
// previous one stopped.
type Position struct {
	counter atomic.Uint64
	mu      sync.Mutex
}

// New builds a ring. pos is shared across reloads; weighted selects smooth weighted
// round robin by Member.Weight (weights < 1 count as 1).
func New(members []Member, weighted bool, pos *Position) *Ring {
	r := &Ring{members: members, weighted: weighted, counter: &pos.counter, mu: &pos.mu}
	for i := range r.members {
		if r.members[i].Weight < 1 {
			r.members[i].Weight = 1
		}
		r.total += int64(r.members[i].Weight)
	}
	return r
}

// Len is the number of members.
func (r *Ring) Len() int { return len(r.members) }

// Members returns the members in config order. Do not modify.
func (r *Ring) Members() []Member { return r.members }

// Order appends to dst the indexes of members to try for one request, best first:
// the next member in round-robin (or smooth weighted) order, then the others in ring
// order, skipping members in cooldown. An empty result means every member is cooling.
func (r *Ring) Order(dst []int, now time.Time) []int {
	base := len(dst)
	for j := range r.members {
		if r.members[j].Health.Available(now) {
			dst = append(dst, j)
		}
	}
	avail := dst[base:]
	if len(avail) == 0 {
		return dst
	}
	first := 0
	if r.weighted {
		start := r.pickWeighted(now)
		if start < 0 {
			return dst[:base]
		}
		for first < len(avail)-1 && avail[first] != start {
			first++
		}
	} else {
		// The counter moves once per request over the available members, so a cooling
		// member's share is spread evenly over the others, not given to its neighbour.
		c := r.counter.Add(1) - 1
		first = int(c % uint64(len(avail)))
	}
	rotate(avail, first)
	return dst
}

// rotate moves s[k] to the front, keeping the ring order: s[k:] then s[:k].
func rotate(s []int, k int) {
	slices.Reverse(s[:k])
	slices.Reverse(s[k:])
	slices.Reverse(s)
}

// pickWeighted is nginx's smooth weighted round robin over available members.
func (r *Ring) pickWeighted(now time.Time) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	best, total := -1, int64(0)
	for i := range r.members {
		m := &r.members[i]
		if !m.Health.Available(now) {
			continue
		}
		w := int64(m.Weight)
		m.Health.swrrCurrent += w
		total += w
		if best < 0 || m.Health.swrrCurrent > r.members[best].Health.swrrCurrent {
			best = i
		}
	}
	if best >= 0 {
		r.members[best].Health.swrrCurrent -= total
	}
	return best
}

// NextAvailable returns the earliest time a cooling member comes back (for Retry-After).
func (r *Ring) NextAvailable(now time.Time) time.Time {
	var earliest time.Time
	for i := range r.members {
		if u, cooling := r.members[i].Health.CooldownUntil(now); cooling && (earliest.IsZero() || u.Before(earliest)) {
			earliest = u
		}
	}
	return earliest
}

// Index returns the index of the member with this name, or -1.
func (r *Ring) Index(name string) int {
	for i := range r.members {
		if r.members[i].Name == name {
			return i
		}
	}
	return -1
}
