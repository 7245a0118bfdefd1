package ring

import (
	"math"
	"sync"
	"testing"
	"time"
)

func members(weights ...int) []Member {
	names := []string{"a", "b", "c", "d", "e"}
	out := make([]Member, len(weights))
	for i, w := range weights {
		out[i] = Member{Name: names[i], Weight: w, Health: &Health{}}
	}
	return out
}

func firsts(r *Ring, n int, now time.Time) map[string]int {
	got := map[string]int{}
	for i := 0; i < n; i++ {
		o := r.Order(nil, now)
		if len(o) == 0 {
			got[""]++
			continue
		}
		got[r.Members()[o[0]].Name]++
	}
	return got
}

func TestRoundRobinSpreadsEvenly(t *testing.T) {
	var pos Position
	r := New(members(1, 1, 1), false, &pos)
	got := firsts(r, 300, time.Now())
	for _, n := range []string{"a", "b", "c"} {
		if got[n] != 100 {
			t.Fatalf("round robin: %v, want 100 each", got)
		}
	}
}

func TestOrderListsEveryAvailableMemberOnce(t *testing.T) {
	var pos Position
	r := New(members(1, 1, 1), false, &pos)
	now := time.Now()
	o := r.Order(nil, now)
	if len(o) != 3 || o[0] == o[1] || o[1] == o[2] || o[0] == o[2] {
		t.Fatalf("order %v: want 3 distinct members", o)
	}
	r.Members()[1].Health.Failure(now, 1, time.Minute, 0)
	for i := 0; i < 6; i++ {
		o := r.Order(nil, now)
		if len(o) != 2 {
			t.Fatalf("order %v: cooling member b must be skipped", o)
		}
		for _, j := range o {
			if j == 1 {
				t.Fatalf("order %v contains the cooling member", o)
			}
		}
	}
}

func TestCooldownAfterThresholdAndBack(t *testing.T) {
	h := &Health{}
	now := time.Now()
	if h.Failure(now, 3, 30*time.Second, 0) || h.Failure(now, 3, 30*time.Second, 0) {
		t.Fatal("tripped before the threshold")
	}
	h.Success() // a success in between resets the count
	h.Failure(now, 3, 30*time.Second, 0)
	h.Failure(now, 3, 30*time.Second, 0)
	if !h.Available(now) {
		t.Fatal("cooling after 2 failures since the last success")
	}
	if !h.Failure(now, 3, 30*time.Second, 0) {
		t.Fatal("third consecutive failure did not trip")
	}
	if h.Available(now.Add(29 * time.Second)) {
		t.Fatal("available during cooldown")
	}
	if !h.Available(now.Add(30 * time.Second)) {
		t.Fatal("not back after the cooldown")
	}
}

func TestRetryAfterTripsAtOnceWithItsDuration(t *testing.T) {
	h := &Health{}
	now := time.Now()
	if !h.Failure(now, 3, 30*time.Second, 5*time.Second) {
		t.Fatal("a 429 with Retry-After must cool the provider at once")
	}
	until, cooling := h.CooldownUntil(now)
	if !cooling || until.Sub(now) != 5*time.Second {
		t.Fatalf("cooldown until %v (cooling %v), want now+5s", until, cooling)
	}
}

func TestAllCoolingGivesEmptyOrderAndNextAvailable(t *testing.T) {
	var pos Position
	ms := members(1, 1)
	r := New(ms, false, &pos)
	now := time.Now()
	ms[0].Health.Failure(now, 1, 10*time.Second, 0)
	ms[1].Health.Failure(now, 1, 20*time.Second, 0)
	if o := r.Order(nil, now); len(o) != 0 {
		t.Fatalf("order %v, want empty", o)
	}
	if got := r.NextAvailable(now); got.Sub(now) != 10*time.Second {
		t.Fatalf("next available in %v, want 10s", got.Sub(now))
	}
}

func TestPositionCarriesAcrossRings(t *testing.T) {
	var pos Position
	r1 := New(members(1, 1, 1), false, &pos)
	now := time.Now()
	first := r1.Members()[r1.Order(nil, now)[0]].Name
	r2 := New(members(1, 1, 1), false, &pos) // a reload with the same providers
	second := r2.Members()[r2.Order(nil, now)[0]].Name
	if first != "a" || second != "b" {
		t.Fatalf("after a reload the ring restarted: %s then %s, want a then b", first, second)
	}
}

func TestSmoothWeightedShares(t *testing.T) {
	cases := []struct {
		name    string
		weights []int
	}{
		{"5-1-1", []int{5, 1, 1}},
		{"3-2", []int{3, 2}},
		{"1-1-1-1", []int{1, 1, 1, 1}},
		{"10-3-7", []int{10, 3, 7}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var pos Position
			r := New(members(tc.weights...), true, &pos)
			got := firsts(r, 1000, time.Now())
			total := 0
			for _, w := range tc.weights {
				total += w
			}
			for i, w := range tc.weights {
				name := r.Members()[i].Name
				share := float64(got[name]) / 1000
				want := float64(w) / float64(total)
				if math.Abs(share-want) > 0.01 {
					t.Errorf("%s: share %.3f, want %.3f ±0.01 (%v)", name, share, want, got)
				}
			}
		})
	}
}

func TestSmoothWeightedInterleaves(t *testing.T) {
	var pos Position
	r := New(members(5, 1, 1), true, &pos)
	var seq []string
	for i := 0; i < 7; i++ {
		seq = append(seq, r.Members()[r.Order(nil, time.Now())[0]].Name)
	}
	// nginx's smooth WRR for 5,1,1 gives a a b a c a a: never 5 a's in a row.
	want := []string{"a", "a", "b", "a", "c", "a", "a"}
	for i := range want {
		if seq[i] != want[i] {
			t.Fatalf("sequence %v, want %v", seq, want)
		}
	}
}

func TestConcurrentOrderIsRaceFree(t *testing.T) {
	var pos Position
	r := New(members(2, 1), true, &pos)
	rr := New(members(1, 1), false, &pos)
	var wg sync.WaitGroup
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 200; j++ {
				r.Order(nil, time.Now())
				rr.Order(nil, time.Now())
				r.Members()[0].Health.Failure(time.Now(), 1000, time.Second, 0)
			}
		}()
	}
	wg.Wait()
}

// TestCoolingShareIsSpreadEvenly: while one of four members cools, the other three
// get a third each; the cooling member's turn does not all go to its neighbour.
func TestCoolingShareIsSpreadEvenly(t *testing.T) {
	var pos Position
	r := New(members(1, 1, 1, 1), false, &pos)
	now := time.Now()
	r.Members()[1].Health.Failure(now, 1, time.Minute, 0)
	got := firsts(r, 300, now)
	for _, n := range []string{"a", "c", "d"} {
		if got[n] != 100 {
			t.Fatalf("with b cooling: %v, want 100 each for a, c and d", got)
		}
	}
	// Each order still lists every available member once, in ring order after the first.
	for i := 0; i < 3; i++ {
		o := r.Order(nil, now)
		if len(o) != 3 || (o[1]-o[0]+4)%4 == 0 || !(o[0] < o[1] && o[1] < o[2] || o[1] < o[2] && o[2] < o[0] || o[2] < o[0] && o[0] < o[1]) {
			t.Fatalf("order %v: want a, c, d once each, in ring order from the first", o)
		}
	}
}
