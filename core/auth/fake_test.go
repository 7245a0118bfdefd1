package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ralf-gateway/ralf/core/store"
)

var errDown = errors.New("store down")

// fakeStore is an in-memory store.Store with failure injection and call counters.
type fakeStore struct {
	mu      sync.Mutex
	keys    map[string]*fakeKey // by id
	windows map[string][]time.Time
	inv     chan string
	now     func() time.Time

	down        atomic.Bool
	echo        atomic.Bool // errors quote their input, like a careless backend might
	lookups     atomic.Int64
	usageCalls  atomic.Int64
	usageRecord []store.Usage
}

type fakeKey struct {
	k    store.Key
	hash [32]byte
}

func newFakeStore(shared bool) *fakeStore {
	f := &fakeStore{keys: map[string]*fakeKey{}, windows: map[string][]time.Time{}, now: time.Now}
	if shared {
		f.inv = make(chan string, 16)
	}
	return f
}

func (f *fakeStore) CreateKey(_ context.Context, name string) (string, store.Key, error) {
	if f.down.Load() {
		return "", store.Key{}, errDown
	}
	var b [24]byte
	_, _ = rand.Read(b[:])
	secret := "sk_" + hex.EncodeToString(b[:])
	var idb [8]byte
	_, _ = rand.Read(idb[:])
	k := store.Key{ID: hex.EncodeToString(idb[:]), Name: name, Prefix: secret[:7] + "…", CreatedAt: time.Now().UTC(), Enabled: true}
	f.mu.Lock()
	f.keys[k.ID] = &fakeKey{k: k, hash: sha256.Sum256([]byte(secret))}
	f.mu.Unlock()
	return secret, k, nil
}

func (f *fakeStore) ListKeys(context.Context) ([]store.Key, error) {
	if f.down.Load() {
		return nil, errDown
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]store.Key, 0, len(f.keys))
	for _, k := range f.keys {
		out = append(out, k.k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	return out, nil
}

func (f *fakeStore) RevokeKey(_ context.Context, idOrSecret string) error {
	if f.down.Load() {
		if f.echo.Load() {
			return fmt.Errorf("revoke %q: %w", idOrSecret, errDown)
		}
		return errDown
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	h := sha256.Sum256([]byte(idOrSecret))
	for id, k := range f.keys {
		if id == idOrSecret || k.hash == h {
			k.k.Enabled = false
			return nil
		}
	}
	return store.ErrNotFound
}

func (f *fakeStore) LookupKey(_ context.Context, secret string) (store.Key, bool, error) {
	f.lookups.Add(1)
	if f.down.Load() {
		if f.echo.Load() {
			return store.Key{}, false, fmt.Errorf("lookup %q: %w", secret, errDown)
		}
		return store.Key{}, false, errDown
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	h := sha256.Sum256([]byte(secret))
	for _, k := range f.keys {
		if k.hash == h && k.k.Enabled {
			return k.k, true, nil
		}
	}
	return store.Key{}, false, nil
}

func (f *fakeStore) RecordUsage(_ context.Context, batch []store.Usage) error {
	f.usageCalls.Add(1)
	if f.down.Load() {
		return errDown
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.usageRecord = append(f.usageRecord, batch...)
	for _, u := range batch {
		if k := f.keys[u.KeyID]; k != nil {
			k.k.RequestCount += u.Requests
			t := u.LastUsed
			k.k.LastUsed = &t
		}
	}
	return nil
}

func (f *fakeStore) Allow(_ context.Context, bucket string, limit int, window time.Duration) (store.Decision, error) {
	if f.down.Load() {
		return store.Decision{}, errDown
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.now()
	w := f.windows[bucket][:0:0]
	for _, t := range f.windows[bucket] {
		if now.Sub(t) < window {
			w = append(w, t)
		}
	}
	d := store.Decision{Limit: limit}
	if len(w) < limit {
		w = append(w, now)
		d.Allowed = true
	}
	f.windows[bucket] = w
	d.Remaining = limit - len(w)
	d.ResetAt = w[0].Add(window)
	if !d.Allowed {
		d.RetryAfter = d.ResetAt.Sub(now)
	}
	return d, nil
}

func (f *fakeStore) Invalidations() <-chan string {
	if f.inv == nil {
		return nil
	}
	return f.inv
}

func (f *fakeStore) Close() error { return nil }

func (f *fakeStore) buckets() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for b := range f.windows {
		out = append(out, b)
	}
	return out
}

func (f *fakeStore) recorded() []store.Usage {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]store.Usage(nil), f.usageRecord...)
}
