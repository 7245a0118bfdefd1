package auth

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/ralf-gateway/ralf/core/store"
)

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// errCounter counts OnStoreError calls by op.
type errCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (e *errCounter) hook(op string) {
	e.mu.Lock()
	if e.n == nil {
		e.n = map[string]int{}
	}
	e.n[op]++
	e.mu.Unlock()
}

func (e *errCounter) get(op string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.n[op]
}

func newTestKeys(t *testing.T, st store.Store, opts KeysOptions) (*Keys, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	if opts.FlushInterval == 0 {
		opts.FlushInterval = time.Hour // tests flush explicitly unless they test the ticker
	}
	k := NewKeys(st, zap.New(core), opts)
	t.Cleanup(func() { _ = k.Close() })
	return k, logs
}

func mustCreate(t *testing.T, k *Keys, name string) (string, store.Key) {
	t.Helper()
	secret, key, err := k.Create(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return secret, key
}

func TestKeysAuthenticateCaches(t *testing.T) {
	ctx := context.Background()
	st := newFakeStore(false)
	k, _ := newTestKeys(t, st, KeysOptions{})
	secret, key := mustCreate(t, k, "app")

	for i := 0; i < 5; i++ {
		c, err := k.Authenticate(ctx, secret)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if c.Name != "app" || c.KeyID != key.ID || c.Kind != KindManaged {
			t.Fatalf("client = %+v", c)
		}
	}
	if n := st.lookups.Load(); n != 1 {
		t.Errorf("store lookups = %d for 5 requests with one key, want 1 (cached)", n)
	}
	for i := 0; i < 3; i++ {
		if _, err := k.Authenticate(ctx, "sk_unknown"); !errors.Is(err, ErrInvalidKey) {
			t.Fatalf("unknown key: err = %v, want ErrInvalidKey", err)
		}
	}
	if n := st.lookups.Load(); n != 2 {
		t.Errorf("store lookups = %d, want 2 (unknown key cached as unknown)", n)
	}
}

func TestKeysRevokeIsImmediate(t *testing.T) {
	tests := []struct {
		name string
		by   func(secret string, key store.Key) string
	}{
		{"by id", func(_ string, key store.Key) string { return key.ID }},
		{"by secret", func(secret string, _ store.Key) string { return secret }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			k, _ := newTestKeys(t, newFakeStore(false), KeysOptions{TTL: time.Hour})
			secret, key := mustCreate(t, k, "app")
			other, _ := mustCreate(t, k, "other")
			for _, s := range []string{secret, other} {
				if _, err := k.Authenticate(ctx, s); err != nil {
					t.Fatal(err)
				}
			}
			if err := k.Revoke(ctx, tt.by(secret, key)); err != nil {
				t.Fatal(err)
			}
			if _, err := k.Authenticate(ctx, secret); !errors.Is(err, ErrInvalidKey) {
				t.Errorf("revoked key: err = %v, want ErrInvalidKey on the very next request", err)
			}
			if _, err := k.Authenticate(ctx, other); err != nil {
				t.Errorf("other key after a revoke: %v", err)
			}
			if err := k.Revoke(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("revoke unknown: err = %v, want ErrNotFound", err)
			}
		})
	}
}

func TestKeysInvalidation(t *testing.T) {
	tests := []struct {
		name string
		msg  func(key store.Key) string
	}{
		{"key id", func(key store.Key) string { return key.ID }},
		{"everything", func(store.Key) string { return "*" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			st := newFakeStore(true)
			k, _ := newTestKeys(t, st, KeysOptions{TTL: time.Hour})
			secret, key := mustCreate(t, k, "app")
			if _, err := k.Authenticate(ctx, secret); err != nil {
				t.Fatal(err)
			}
			// Another replica revokes it: this process still has it cached...
			if err := st.RevokeKey(ctx, key.ID); err != nil {
				t.Fatal(err)
			}
			if _, err := k.Authenticate(ctx, secret); err != nil {
				t.Fatalf("before the invalidation message the cache answers: %v", err)
			}
			// ...until the invalidation arrives.
			st.inv <- tt.msg(key)
			deadline := time.Now().Add(10 * time.Second)
			for {
				_, err := k.Authenticate(ctx, secret)
				if errors.Is(err, ErrInvalidKey) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("revoked key still accepted after the invalidation message: %v", err)
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
}

func TestKeysTTLBackstop(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	st := newFakeStore(false)
	k, _ := newTestKeys(t, st, KeysOptions{TTL: 30 * time.Second, NegativeTTL: 5 * time.Second, Now: clk.Now})
	secret, key := mustCreate(t, k, "app")
	if _, err := k.Authenticate(ctx, secret); err != nil {
		t.Fatal(err)
	}
	_ = st.RevokeKey(ctx, key.ID) // no invalidation channel: only the TTL ends the cache entry
	clk.Add(29 * time.Second)
	if _, err := k.Authenticate(ctx, secret); err != nil {
		t.Fatalf("within TTL: %v", err)
	}
	clk.Add(2 * time.Second)
	if _, err := k.Authenticate(ctx, secret); !errors.Is(err, ErrInvalidKey) {
		t.Fatalf("after TTL: err = %v, want ErrInvalidKey", err)
	}

	// Negative entries expire after NegativeTTL.
	before := st.lookups.Load()
	_, _ = k.Authenticate(ctx, "sk_x")
	_, _ = k.Authenticate(ctx, "sk_x")
	clk.Add(6 * time.Second)
	_, _ = k.Authenticate(ctx, "sk_x")
	if n := st.lookups.Load() - before; n != 2 {
		t.Errorf("lookups for an unknown key across its negative TTL = %d, want 2", n)
	}
}

func TestKeysStoreDown(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	st := newFakeStore(false)
	var errs errCounter
	k, logs := newTestKeys(t, st, KeysOptions{TTL: time.Second, Now: clk.Now, OnStoreError: errs.hook})
	known, _ := mustCreate(t, k, "known")
	if _, err := k.Authenticate(ctx, known); err != nil {
		t.Fatal(err)
	}
	st.down.Store(true)
	clk.Add(time.Minute / 2) // the cache entry has expired: only stale-if-error serves it

	for i := 0; i < 20; i++ {
		c, err := k.Authenticate(ctx, known)
		if err != nil || c.Name != "known" {
			t.Fatalf("known key with store down: %+v, %v; want served from cache", c, err)
		}
		if _, err := k.Authenticate(ctx, "sk_never_seen"); !errors.Is(err, ErrStoreUnavailable) {
			t.Fatalf("unknown key with store down: err = %v, want ErrStoreUnavailable", err)
		}
	}
	// The known key asks the failing store once, then is served for staleRetry
	// without asking; each unknown key asks every time.
	if n := errs.get("lookup_key"); n != 21 {
		t.Errorf("OnStoreError(lookup_key) = %d, want 21 (1 for the known key, 20 for unknown ones)", n)
	}
	clk.Add(staleRetry)
	if _, err := k.Authenticate(ctx, known); err != nil {
		t.Fatalf("known key after staleRetry with store down: %v", err)
	}
	if n := errs.get("lookup_key"); n != 22 {
		t.Errorf("OnStoreError(lookup_key) = %d after staleRetry, want 22 (store asked again)", n)
	}
	if n := logs.FilterMessageSnippet("key store unavailable").Len(); n != 1 {
		t.Errorf("store-down log lines = %d for one burst, want 1", n)
	}

	st.down.Store(false)
	clk.Add(staleRetry)
	if _, err := k.Authenticate(ctx, known); err != nil {
		t.Fatalf("store back: %v", err)
	}
	if n := logs.FilterMessageSnippet("answering again").Len(); n != 1 {
		t.Errorf("recovery log lines = %d, want 1", n)
	}
}

func TestKeysUsageFlushBatches(t *testing.T) {
	ctx := context.Background()
	st := newFakeStore(false)
	k, _ := newTestKeys(t, st, KeysOptions{})
	a, ka := mustCreate(t, k, "a")
	b, kb := mustCreate(t, k, "b")
	for i := 0; i < 30; i++ {
		if _, err := k.Authenticate(ctx, a); err != nil {
			t.Fatal(err)
		}
		if i%3 == 0 {
			if _, err := k.Authenticate(ctx, b); err != nil {
				t.Fatal(err)
			}
		}
	}
	if n := st.usageCalls.Load(); n != 0 {
		t.Fatalf("RecordUsage called %d times before a flush: want no write per request", n)
	}
	// List shows counts not flushed yet.
	list, err := k.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, key := range list {
		got[key.ID] = key.RequestCount
		if key.LastUsed == nil {
			t.Errorf("key %s: lastUsed nil after use", key.Name)
		}
	}
	if got[ka.ID] != 30 || got[kb.ID] != 10 {
		t.Errorf("listed counts = %v, want a:30 b:10", got)
	}

	if err := k.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if n := st.usageCalls.Load(); n != 1 {
		t.Fatalf("RecordUsage calls = %d, want 1 batch", n)
	}
	rec := map[string]int64{}
	for _, u := range st.recorded() {
		rec[u.KeyID] += u.Requests
	}
	if rec[ka.ID] != 30 || rec[kb.ID] != 10 {
		t.Errorf("recorded = %v, want a:30 b:10", rec)
	}
	// Nothing pending: no empty write.
	if err := k.Flush(ctx); err != nil || st.usageCalls.Load() != 1 {
		t.Errorf("empty flush wrote to the store (calls %d, err %v)", st.usageCalls.Load(), err)
	}
}

func TestKeysUsageKeptOnFlushError(t *testing.T) {
	ctx := context.Background()
	st := newFakeStore(false)
	k, _ := newTestKeys(t, st, KeysOptions{})
	a, ka := mustCreate(t, k, "a")
	for i := 0; i < 4; i++ {
		_, _ = k.Authenticate(ctx, a)
	}
	st.down.Store(true)
	if err := k.Flush(ctx); err == nil {
		t.Fatal("flush with store down: want an error")
	}
	_, _ = k.Authenticate(ctx, a) // served from cache
	st.down.Store(false)
	if err := k.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, u := range st.recorded() {
		if u.KeyID == ka.ID {
			total += u.Requests
		}
	}
	if total != 5 {
		t.Errorf("recorded requests = %d, want 5 (failed batch kept)", total)
	}
}

func TestKeysFlushTickerAndClose(t *testing.T) {
	ctx := context.Background()
	t.Run("ticker", func(t *testing.T) {
		st := newFakeStore(false)
		k, _ := newTestKeys(t, st, KeysOptions{FlushInterval: 10 * time.Millisecond})
		a, _ := mustCreate(t, k, "a")
		_, _ = k.Authenticate(ctx, a)
		deadline := time.Now().Add(10 * time.Second)
		for len(st.recorded()) == 0 {
			if time.Now().After(deadline) {
				t.Fatal("usage never flushed by the background ticker")
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
	t.Run("close flushes", func(t *testing.T) {
		st := newFakeStore(false)
		k := NewKeys(st, zap.NewNop(), KeysOptions{FlushInterval: time.Hour})
		a, _ := mustCreate(t, k, "a")
		_, _ = k.Authenticate(ctx, a)
		_, _ = k.Authenticate(ctx, a)
		if err := k.Close(); err != nil {
			t.Fatal(err)
		}
		if err := k.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		rec := st.recorded()
		if len(rec) != 1 || rec[0].Requests != 2 {
			t.Errorf("recorded on Close = %+v, want one entry with 2 requests", rec)
		}
	})
}

func TestKeysNegativeCacheBounded(t *testing.T) {
	ctx := context.Background()
	k, _ := newTestKeys(t, newFakeStore(false), KeysOptions{MaxNegative: 8, NegativeTTL: time.Hour})
	for i := 0; i < 100; i++ {
		_, _ = k.Authenticate(ctx, "sk_random_"+string(rune('a'+i%26))+string(rune('a'+i/26)))
	}
	k.mu.Lock()
	n := len(k.neg)
	k.mu.Unlock()
	if n > 8 {
		t.Errorf("negative cache holds %d entries, cap is 8", n)
	}
}

// blockingStore holds LookupKey until released.
type blockingStore struct {
	*fakeStore
	entered chan struct{}
	release chan struct{}
}

func (b *blockingStore) LookupKey(ctx context.Context, secret string) (store.Key, bool, error) {
	b.entered <- struct{}{}
	<-b.release
	return b.fakeStore.LookupKey(ctx, secret)
}

func TestKeysConcurrentLookupsShared(t *testing.T) {
	ctx := context.Background()
	fs := newFakeStore(false)
	bs := &blockingStore{fakeStore: fs, entered: make(chan struct{}, 1), release: make(chan struct{})}
	k, _ := newTestKeys(t, bs, KeysOptions{})
	secret, key := mustCreate(t, k, "popular")

	const n = 20
	errs := make(chan error, n)
	go func() {
		_, err := k.Authenticate(ctx, secret)
		errs <- err
	}()
	<-bs.entered // the first request is in the store
	for i := 1; i < n; i++ {
		go func() {
			_, err := k.Authenticate(ctx, secret)
			errs <- err
		}()
	}
	d := digest(secret)
	deadline := time.Now().Add(10 * time.Second)
	for {
		k.mu.Lock()
		w := k.flights[d].waiters
		k.mu.Unlock()
		if w == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d requests joined the lookup", w, n)
		}
		time.Sleep(time.Millisecond)
	}
	close(bs.release)
	for i := 0; i < n; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if got := fs.lookups.Load(); got != 1 {
		t.Errorf("store lookups = %d for %d concurrent requests, want 1", got, n)
	}
	k.umu.Lock()
	reqs := k.usage[key.ID].Requests
	k.umu.Unlock()
	if reqs != n {
		t.Errorf("usage = %d, want %d (each request counted)", reqs, n)
	}
}

func TestKeysServesKnownKeyWhileRefreshing(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	fs := newFakeStore(false)
	bs := &blockingStore{fakeStore: fs, entered: make(chan struct{}, 1), release: make(chan struct{})}
	k, _ := newTestKeys(t, bs, KeysOptions{TTL: time.Second, Now: clk.Now})
	secret, _ := mustCreate(t, k, "app")

	first := make(chan error, 1)
	go func() { _, err := k.Authenticate(ctx, secret); first <- err }()
	<-bs.entered
	close(bs.release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}

	clk.Add(2 * time.Second) // expired: the next request refreshes it
	bs.release = make(chan struct{})
	refresh := make(chan error, 1)
	go func() { _, err := k.Authenticate(ctx, secret); refresh <- err }()
	<-bs.entered
	// The store is stuck on the refresh: another request is answered from the entry.
	done := make(chan error, 1)
	go func() { _, err := k.Authenticate(ctx, secret); done <- err }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("request queued behind the refresh of a known key")
	}
	close(bs.release)
	if err := <-refresh; err != nil {
		t.Fatal(err)
	}
}

func TestKeysWithoutStore(t *testing.T) {
	ctx := context.Background()
	k := NewKeys(nil, nil, KeysOptions{})
	defer k.Close()
	if _, err := k.Authenticate(ctx, "sk_x"); !errors.Is(err, ErrInvalidKey) {
		t.Errorf("Authenticate: %v, want ErrInvalidKey", err)
	}
	if _, _, err := k.Create(ctx, "x"); err == nil {
		t.Error("Create without a store: want an error")
	}
	if _, err := k.List(ctx); err == nil {
		t.Error("List without a store: want an error")
	}
	if err := k.Revoke(ctx, "x"); err == nil {
		t.Error("Revoke without a store: want an error")
	}
}
