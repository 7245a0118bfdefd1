// Package storetest is the conformance suite every store.Store backend passes.
package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ralf-gateway/ralf/core/store"
	"github.com/ralf-gateway/ralf/plugins/store/internal/keygen"
)

// Option changes what Run expects of a backend.
type Option func(*config)

type config struct {
	ephemeral bool
}

// Ephemeral says the backend keeps nothing across Close (memory://): the
// reopen test then checks that a new store starts empty instead.
func Ephemeral() Option { return func(c *config) { c.ephemeral = true } }

// Run runs the suite. open returns a store for t; calling it again with the
// same t must open the same data (same file, same redis db and prefix), and
// each distinct t must start empty. open should register t.Cleanup to close
// what it opened; Close must be safe to call twice.
func Run(t *testing.T, open func(t *testing.T) store.Store, opts ...Option) {
	var cfg config
	for _, o := range opts {
		o(&cfg)
	}
	tests := []struct {
		name string
		fn   func(t *testing.T, open func(t *testing.T) store.Store, cfg config)
	}{
		{"CreateKey", testCreate},
		{"ListKeysOldestFirstWithoutSecrets", testList},
		{"LookupKey", testLookup},
		{"RevokeKey", testRevoke},
		{"RecordUsage", testUsage},
		{"Reopen", testReopen},
		{"ConcurrentKeys", testConcurrentKeys},
		{"AllowExactUnderConcurrency", testAllowConcurrent},
		{"AllowDecisionFields", testAllowFields},
		{"AllowWindowSlides", testAllowSlides},
		{"AllowLoweredLimitRetryAfter", testAllowLoweredLimit},
		{"AllowBucketsIndependent", testAllowBuckets},
		{"AllowInvalidArguments", testAllowInvalid},
		{"CanceledContext", testCanceled},
		{"ClosedStore", testClosed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, open, cfg) })
	}
}

var secretRE = regexp.MustCompile(`^sk_[0-9a-f]{48}$`)

func ctxT(t *testing.T) context.Context {
	// A deadlock guard, not a speed assertion.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func mustCreate(t *testing.T, ctx context.Context, s store.Store, name string) (string, store.Key) {
	t.Helper()
	secret, k, err := s.CreateKey(ctx, name)
	if err != nil {
		t.Fatalf("CreateKey(%q): %v", name, err)
	}
	return secret, k
}

func findKey(t *testing.T, ctx context.Context, s store.Store, id string) store.Key {
	t.Helper()
	list, err := s.ListKeys(ctx)
	if err != nil {
		t.Fatalf("ListKeys: %v", err)
	}
	for _, k := range list {
		if k.ID == id {
			return k
		}
	}
	t.Fatalf("key %s not in ListKeys (%d keys)", id, len(list))
	return store.Key{}
}

func testCreate(t *testing.T, open func(*testing.T) store.Store, _ config) {
	ctx := ctxT(t)
	s := open(t)
	before := time.Now().Add(-time.Second)
	secret, k := mustCreate(t, ctx, s, "app one")
	after := time.Now().Add(time.Second)

	if !secretRE.MatchString(secret) {
		t.Errorf("secret %q does not match %s", secret, secretRE)
	}
	if !strings.HasPrefix(k.ID, "key_") || len(k.ID) != len("key_")+12 {
		t.Errorf("id %q: want key_ and 12 hex", k.ID)
	}
	if want := secret[:8] + "…"; k.Prefix != want {
		t.Errorf("prefix %q, want %q", k.Prefix, want)
	}
	if k.Name != "app one" || !k.Enabled || k.RequestCount != 0 || k.LastUsed != nil {
		t.Errorf("new key = %+v", k)
	}
	if k.CreatedAt.Before(before) || k.CreatedAt.After(after) {
		t.Errorf("createdAt %v not between %v and %v", k.CreatedAt, before, after)
	}
	secret2, k2 := mustCreate(t, ctx, s, "app one")
	if secret2 == secret || k2.ID == k.ID {
		t.Errorf("two keys share a secret or an id: %s %s", k.ID, k2.ID)
	}
}

func testList(t *testing.T, open func(*testing.T) store.Store, _ config) {
	ctx := ctxT(t)
	s := open(t)
	list, err := s.ListKeys(ctx)
	if err != nil || len(list) != 0 {
		t.Fatalf("ListKeys on an empty store = %v, %v; want none", list, err)
	}
	var secrets []string
	var ids []string
	for i := range 5 {
		sec, k := mustCreate(t, ctx, s, fmt.Sprintf("k%d", i))
		secrets = append(secrets, sec)
		ids = append(ids, k.ID)
	}
	if err := s.RevokeKey(ctx, ids[1]); err != nil {
		t.Fatal(err)
	}
	list, err = s.ListKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != len(ids) {
		t.Fatalf("ListKeys has %d keys, want %d", len(list), len(ids))
	}
	for i, k := range list {
		if k.ID != ids[i] || k.Name != fmt.Sprintf("k%d", i) {
			t.Errorf("list[%d] = %s %q, want %s k%d (oldest first)", i, k.ID, k.Name, ids[i], i)
		}
		if want := i != 1; k.Enabled != want {
			t.Errorf("list[%d].Enabled = %v, want %v", i, k.Enabled, want)
		}
		if i > 0 && k.CreatedAt.Before(list[i-1].CreatedAt) {
			t.Errorf("list[%d] created before list[%d]", i, i-1)
		}
	}
	out, err := json.Marshal(list)
	if err != nil {
		t.Fatal(err)
	}
	for _, sec := range secrets {
		if strings.Contains(string(out), sec[3:20]) || strings.Contains(string(out), keygen.Hash(sec)[:16]) {
			t.Fatalf("ListKeys output contains a secret or its hash: %s", out)
		}
	}
}

func testLookup(t *testing.T, open func(*testing.T) store.Store, _ config) {
	ctx := ctxT(t)
	s := open(t)
	secret, k := mustCreate(t, ctx, s, "looked up")
	other, _ := mustCreate(t, ctx, s, "other")

	got, ok, err := s.LookupKey(ctx, secret)
	if err != nil || !ok {
		t.Fatalf("LookupKey(secret) = %v, %v", ok, err)
	}
	if got.ID != k.ID || got.Name != "looked up" || !got.Enabled || got.Prefix != k.Prefix {
		t.Errorf("LookupKey = %+v, want %+v", got, k)
	}
	if !got.CreatedAt.Equal(k.CreatedAt) {
		t.Errorf("createdAt %v after lookup, %v at creation", got.CreatedAt, k.CreatedAt)
	}
	for name, probe := range map[string]string{
		"unknown secret": "sk_" + strings.Repeat("0", 48),
		"empty":          "",
		"id":             k.ID,
		"display prefix": k.Prefix,
		"hash":           keygen.Hash(secret),
		"secret+suffix":  secret + "x",
		"truncated":      secret[:len(secret)-1],
		"upper case":     strings.ToUpper(secret),
	} {
		t.Run(name, func(t *testing.T) {
			if got, ok, err := s.LookupKey(ctx, probe); err != nil || ok {
				t.Errorf("LookupKey(%s) = %v, %v, %v; want not found, no error", name, got.ID, ok, err)
			}
		})
	}
	if got, ok, _ := s.LookupKey(ctx, other); !ok || got.Name != "other" {
		t.Errorf("LookupKey(other) = %+v, %v", got, ok)
	}
}

func testRevoke(t *testing.T, open func(*testing.T) store.Store, _ config) {
	ctx := ctxT(t)
	s := open(t)
	tests := []struct {
		name  string
		by    func(secret string, k store.Key) string
		wantE error
	}{
		{"by id", func(_ string, k store.Key) string { return k.ID }, nil},
		{"by secret", func(secret string, _ store.Key) string { return secret }, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			secret, k := mustCreate(t, ctx, s, tc.name)
			keep, _ := mustCreate(t, ctx, s, "kept")
			if err := s.RevokeKey(ctx, tc.by(secret, k)); err != nil {
				t.Fatalf("RevokeKey: %v", err)
			}
			if _, ok, err := s.LookupKey(ctx, secret); err != nil || ok {
				t.Errorf("revoked key still found: %v, %v", ok, err)
			}
			if got := findKey(t, ctx, s, k.ID); got.Enabled {
				t.Errorf("revoked key listed as enabled")
			}
			if _, ok, _ := s.LookupKey(ctx, keep); !ok {
				t.Errorf("revoking one key disabled another")
			}
			if err := s.RevokeKey(ctx, tc.by(secret, k)); err != nil {
				t.Errorf("revoking twice: %v, want nil (the key exists)", err)
			}
		})
	}
	for name, probe := range map[string]string{
		"unknown id":     "key_000000000000",
		"unknown secret": "sk_" + strings.Repeat("1", 48),
		"empty":          "",
	} {
		t.Run(name, func(t *testing.T) {
			err := s.RevokeKey(ctx, probe)
			if !errors.Is(err, store.ErrNotFound) {
				t.Errorf("RevokeKey(%s) = %v, want ErrNotFound", name, err)
			}
		})
	}
}

func testUsage(t *testing.T, open func(*testing.T) store.Store, _ config) {
	ctx := ctxT(t)
	s := open(t)
	secA, a := mustCreate(t, ctx, s, "a")
	_, b := mustCreate(t, ctx, s, "b")
	_, c := mustCreate(t, ctx, s, "c")
	t1 := time.Now().Add(-time.Minute).UTC().Truncate(time.Millisecond)
	t2 := t1.Add(30 * time.Second)

	if err := s.RecordUsage(ctx, nil); err != nil {
		t.Fatalf("empty batch: %v", err)
	}
	batches := [][]store.Usage{
		{{KeyID: a.ID, Requests: 3, LastUsed: t1}, {KeyID: b.ID, Requests: 1, LastUsed: t1}, {KeyID: "key_unknown0000", Requests: 9, LastUsed: t2}},
		{{KeyID: a.ID, Requests: 2, LastUsed: t2}},
		// An older batch arriving late (another replica) adds its count but never moves lastUsed back.
		{{KeyID: a.ID, Requests: 5, LastUsed: t1}, {KeyID: b.ID, Requests: 1, LastUsed: t1}},
	}
	for i, batch := range batches {
		if err := s.RecordUsage(ctx, batch); err != nil {
			t.Fatalf("batch %d: %v", i, err)
		}
	}
	tests := []struct {
		id       string
		count    int64
		lastUsed time.Time
	}{
		{a.ID, 10, t2},
		{b.ID, 2, t1},
		{c.ID, 0, time.Time{}},
	}
	for _, tc := range tests {
		t.Run(tc.id, func(t *testing.T) {
			k := findKey(t, ctx, s, tc.id)
			if k.RequestCount != tc.count {
				t.Errorf("requestCount = %d, want %d", k.RequestCount, tc.count)
			}
			switch {
			case tc.lastUsed.IsZero() && k.LastUsed != nil:
				t.Errorf("lastUsed = %v, want none", *k.LastUsed)
			case !tc.lastUsed.IsZero() && (k.LastUsed == nil || !k.LastUsed.Equal(tc.lastUsed)):
				t.Errorf("lastUsed = %v, want %v", k.LastUsed, tc.lastUsed)
			}
		})
	}
	if k, ok, err := s.LookupKey(ctx, secA); err != nil || !ok || k.RequestCount != 10 {
		t.Errorf("LookupKey after usage = %d, %v, %v; want count 10", k.RequestCount, ok, err)
	}
	if list, _ := s.ListKeys(ctx); len(list) != 3 {
		t.Errorf("usage of an unknown id created a key: %d keys", len(list))
	}
}

func testReopen(t *testing.T, open func(*testing.T) store.Store, cfg config) {
	ctx := ctxT(t)
	s := open(t)
	secret, k := mustCreate(t, ctx, s, "survivor")
	revSecret, rev := mustCreate(t, ctx, s, "revoked")
	if err := s.RevokeKey(ctx, rev.ID); err != nil {
		t.Fatal(err)
	}
	used := time.Now().UTC().Truncate(time.Millisecond)
	if err := s.RecordUsage(ctx, []store.Usage{{KeyID: k.ID, Requests: 7, LastUsed: used}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s2 := open(t)
	list, err := s2.ListKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ephemeral {
		if len(list) != 0 {
			t.Fatalf("ephemeral store kept %d keys across reopen", len(list))
		}
		return
	}
	if len(list) != 2 {
		t.Fatalf("after reopen: %d keys, want 2", len(list))
	}
	got, ok, err := s2.LookupKey(ctx, secret)
	if err != nil || !ok {
		t.Fatalf("key lost on reopen: %v, %v", ok, err)
	}
	if got.ID != k.ID || got.Name != "survivor" || got.Prefix != k.Prefix || !got.CreatedAt.Equal(k.CreatedAt) {
		t.Errorf("after reopen %+v, want %+v", got, k)
	}
	if got.RequestCount != 7 || got.LastUsed == nil || !got.LastUsed.Equal(used) {
		t.Errorf("usage after reopen = %d, %v; want 7, %v", got.RequestCount, got.LastUsed, used)
	}
	if _, ok, _ := s2.LookupKey(ctx, revSecret); ok {
		t.Errorf("revoked key enabled again after reopen")
	}
}

func testConcurrentKeys(t *testing.T, open func(*testing.T) store.Store, _ config) {
	ctx := ctxT(t)
	s := open(t)
	const n = 20
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			secret, k, err := s.CreateKey(ctx, fmt.Sprintf("c%d", i))
			if err != nil {
				errs <- err
				return
			}
			if err := s.RecordUsage(ctx, []store.Usage{{KeyID: k.ID, Requests: 1, LastUsed: time.Now()}}); err != nil {
				errs <- err
				return
			}
			got, ok, err := s.LookupKey(ctx, secret)
			if err != nil || !ok || got.ID != k.ID {
				errs <- fmt.Errorf("lookup of a fresh key: %v, %v, %v", got.ID, ok, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	list, err := s.ListKeys(ctx)
	if err != nil || len(list) != n {
		t.Fatalf("ListKeys = %d keys, %v; want %d", len(list), err, n)
	}
}

func testAllowConcurrent(t *testing.T, open func(*testing.T) store.Store, _ config) {
	ctx := ctxT(t)
	s := open(t)
	const limit, callers = 10, 200
	res := Hammer(ctx, []store.Store{s}, "concurrent", limit, time.Minute, callers)
	if res.Err != nil {
		t.Fatalf("Allow: %v", res.Err)
	}
	if res.Allowed != limit {
		t.Fatalf("%d of %d concurrent requests allowed, want exactly %d", res.Allowed, callers, limit)
	}
	// Each allowed request saw a different remaining count: 9, 8, ... 0.
	for r := range limit {
		if res.Remaining[r] != 1 {
			t.Errorf("remaining %d reported %d times among allowed requests, want once", r, res.Remaining[r])
		}
	}
}

// Result is what Hammer saw.
type Result struct {
	Allowed   int
	Denied    int
	Remaining map[int]int // remaining count → how many allowed decisions reported it
	Err       error
}

// Hammer calls Allow on bucket from callers goroutines spread over stores
// (several stores on one shared backend model several replicas) and counts
// the decisions. It starts them together to maximise contention.
func Hammer(ctx context.Context, stores []store.Store, bucket string, limit int, window time.Duration, callers int) Result {
	var (
		mu    sync.Mutex
		res   = Result{Remaining: map[int]int{}}
		wg    sync.WaitGroup
		start = make(chan struct{})
	)
	for i := range callers {
		s := stores[i%len(stores)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			d, err := s.Allow(ctx, bucket, limit, window)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				if res.Err == nil {
					res.Err = err
				}
			case d.Allowed:
				res.Allowed++
				res.Remaining[d.Remaining]++
			default:
				res.Denied++
			}
		}()
	}
	close(start)
	wg.Wait()
	return res
}

func testAllowFields(t *testing.T, open func(*testing.T) store.Store, _ config) {
	ctx := ctxT(t)
	s := open(t)
	const limit = 3
	const window = time.Minute
	before := time.Now()
	var first store.Decision
	for i := range limit {
		d, err := s.Allow(ctx, "fields", limit, window)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = d
		}
		if !d.Allowed || d.Limit != limit || d.Remaining != limit-1-i || d.RetryAfter != 0 {
			t.Errorf("request %d: %+v; want allowed, limit %d, remaining %d, no retry", i, d, limit, limit-1-i)
		}
	}
	after := time.Now()
	// The oldest counted request (the first) decides when a slot frees.
	slack := 2 * time.Second // clock granularity and a redis server clock read in another process
	if first.ResetAt.Before(before.Add(window-slack)) || first.ResetAt.After(after.Add(window+slack)) {
		t.Errorf("first resetAt %v, want about %v", first.ResetAt, before.Add(window))
	}
	d, err := s.Allow(ctx, "fields", limit, window)
	if err != nil {
		t.Fatal(err)
	}
	if d.Allowed || d.Remaining != 0 || d.Limit != limit {
		t.Fatalf("request over the limit: %+v", d)
	}
	if d.RetryAfter <= 0 || d.RetryAfter > window+slack {
		t.Errorf("retryAfter %v, want in (0, %v]", d.RetryAfter, window)
	}
	if diff := d.ResetAt.Sub(first.ResetAt); diff < -slack || diff > slack {
		t.Errorf("denied resetAt %v, want the first request's %v", d.ResetAt, first.ResetAt)
	}
	if got := time.Until(d.ResetAt); got-d.RetryAfter > slack || d.RetryAfter-got > slack {
		t.Errorf("retryAfter %v disagrees with resetAt in %v", d.RetryAfter, got)
	}
}

// testAllowLoweredLimit: after a reload lowers the limit under the count, a refused
// request is told when a slot really frees (its Retry-After would otherwise bring
// another 429): with three entries 1s apart and the limit now 2, when the middle one
// leaves, not the oldest nor the newest.
func testAllowLoweredLimit(t *testing.T, open func(*testing.T) store.Store, _ config) {
	ctx := ctxT(t)
	s := open(t)
	const window = 20 * time.Second
	for i := range 3 {
		if i > 0 {
			time.Sleep(time.Second)
		}
		if d, err := s.Allow(ctx, "lowered", 3, window); err != nil || !d.Allowed {
			t.Fatalf("request %d: %+v %v", i, d, err)
		}
	}
	d, err := s.Allow(ctx, "lowered", 2, window)
	if err != nil || d.Allowed {
		t.Fatalf("over the lowered limit: %+v %v", d, err)
	}
	// From now, the oldest entry leaves in about 18s, the middle one in about 19s,
	// the newest in about 20s.
	if d.RetryAfter < window-1500*time.Millisecond || d.RetryAfter > window-500*time.Millisecond {
		t.Errorf("retryAfter %v, want about %v (when the middle entry leaves)", d.RetryAfter, window-time.Second)
	}
}

func testAllowSlides(t *testing.T, open func(*testing.T) store.Store, _ config) {
	ctx := ctxT(t)
	s := open(t)
	// A sliding window frees a slot when the oldest request ages out, not all
	// slots at a fixed boundary. Two requests at t0, one at t1 = t0+window/2:
	// just after t0+window exactly two slots are free, the third stays taken.
	// A machine stall longer than window/2 would also free the third, so such
	// an attempt is retried on a new bucket rather than failed.
	const limit = 3
	const window = 1200 * time.Millisecond
	for attempt := range 4 {
		bucket := fmt.Sprintf("slide-%d", attempt)
		allow := func() store.Decision {
			d, err := s.Allow(ctx, bucket, limit, window)
			if err != nil {
				t.Fatal(err)
			}
			return d
		}
		t0 := time.Now()
		allow()
		allow()
		time.Sleep(window / 2)
		t1 := time.Now()
		if d := allow(); !d.Allowed {
			t.Fatalf("third request denied: %+v", d)
		}
		denied := allow()
		if denied.Allowed {
			t.Fatalf("fourth request allowed within the window")
		}
		time.Sleep(time.Until(denied.ResetAt) + 100*time.Millisecond)
		n := 0
		for range limit {
			if allow().Allowed {
				n++
			}
		}
		if time.Since(t1) >= window-100*time.Millisecond {
			t.Logf("attempt %d: stalled (%v since the third request), retrying", attempt, time.Since(t1))
			continue
		}
		if time.Since(t0) < window {
			t.Fatalf("denied resetAt %v came before the first requests left the window", denied.ResetAt)
		}
		if n != 2 {
			t.Fatalf("after the first two requests left the window, %d of %d allowed; want 2", n, limit)
		}
		return
	}
	t.Fatal("machine too stalled to observe a sliding window in 4 attempts")
}

func testAllowBuckets(t *testing.T, open func(*testing.T) store.Store, _ config) {
	ctx := ctxT(t)
	s := open(t)
	for range 2 {
		if d, err := s.Allow(ctx, "key:a", 2, time.Minute); err != nil || !d.Allowed {
			t.Fatalf("Allow(a) = %+v, %v", d, err)
		}
	}
	if d, _ := s.Allow(ctx, "key:a", 2, time.Minute); d.Allowed {
		t.Fatal("bucket a over its limit was allowed")
	}
	if d, err := s.Allow(ctx, "key:b", 2, time.Minute); err != nil || !d.Allowed || d.Remaining != 1 {
		t.Fatalf("bucket b affected by bucket a: %+v, %v", d, err)
	}
}

func testAllowInvalid(t *testing.T, open func(*testing.T) store.Store, _ config) {
	ctx := ctxT(t)
	s := open(t)
	tests := []struct {
		name   string
		limit  int
		window time.Duration
	}{
		{"zero limit", 0, time.Second},
		{"negative limit", -1, time.Second},
		{"zero window", 1, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if d, err := s.Allow(ctx, "invalid", tc.limit, tc.window); err == nil {
				t.Errorf("Allow(%d, %v) = %+v, want an error", tc.limit, tc.window, d)
			}
		})
	}
}

func testCanceled(t *testing.T, open func(*testing.T) store.Store, _ config) {
	s := open(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := s.CreateKey(ctx, "x"); err == nil {
		t.Error("CreateKey with a canceled context succeeded")
	}
	if _, err := s.Allow(ctx, "canceled", 5, time.Second); err == nil {
		t.Error("Allow with a canceled context succeeded")
	}
}

func testClosed(t *testing.T, open func(*testing.T) store.Store, _ config) {
	ctx := ctxT(t)
	s := open(t)
	secret, _ := mustCreate(t, ctx, s, "x")
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, _, err := s.LookupKey(ctx, secret); err == nil {
		t.Error("LookupKey after Close succeeded")
	}
	if _, err := s.Allow(ctx, "closed", 5, time.Second); err == nil {
		t.Error("Allow after Close succeeded")
	}
	if _, err := s.ListKeys(ctx); err == nil {
		t.Error("ListKeys after Close succeeded")
	}
	if ch := s.Invalidations(); ch != nil {
		select {
		case _, ok := <-ch:
			for ok {
				_, ok = <-ch
			}
		case <-time.After(5 * time.Second):
			t.Error("Invalidations channel not closed by Close")
		}
	}
}
