// Package memory is the memory:// store: keys and rate limits held in this
// process only, lost on exit. For tests, demos and gateways without managed keys.
package memory

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/ralf-gateway/ralf/core/store"
	"github.com/ralf-gateway/ralf/plugins/store/internal/keygen"
	"github.com/ralf-gateway/ralf/plugins/store/internal/window"
)

func init() {
	store.Register("memory", func(_ *url.URL, _ *zap.Logger) (store.Store, error) { return New(), nil })
}

// ErrClosed is returned by every method after Close.
var ErrClosed = errors.New("memory store: closed")

// Store is the memory store.
type Store struct {
	mu     sync.RWMutex
	keys   []*entry          // creation order: ListKeys is oldest first
	byID   map[string]*entry // id → key
	byHash map[string]*entry // hex sha256 of the secret → key
	closed bool
	lim    *window.Limiter
}

type entry struct {
	key  store.Key
	hash string
}

var _ store.Store = (*Store)(nil)

// New makes an empty memory store.
func New() *Store {
	return &Store{byID: map[string]*entry{}, byHash: map[string]*entry{}, lim: window.New()}
}

func (s *Store) check(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.closed {
		return ErrClosed
	}
	return nil
}

// CreateKey implements store.Store.
func (s *Store) CreateKey(ctx context.Context, name string) (string, store.Key, error) {
	g, err := keygen.Generate()
	if err != nil {
		return "", store.Key{}, err
	}
	k := store.Key{ID: g.ID, Name: name, Prefix: g.Prefix, CreatedAt: time.Now().UTC(), Enabled: true}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(ctx); err != nil {
		return "", store.Key{}, fmt.Errorf("create key: %w", err)
	}
	e := &entry{key: k, hash: g.Hash}
	s.keys = append(s.keys, e)
	s.byID[k.ID] = e
	s.byHash[g.Hash] = e
	return g.Secret, k, nil
}

// ListKeys implements store.Store.
func (s *Store) ListKeys(ctx context.Context) ([]store.Key, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if err := s.check(ctx); err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	out := make([]store.Key, 0, len(s.keys))
	for _, e := range s.keys {
		out = append(out, e.snapshot())
	}
	return out, nil
}

// RevokeKey implements store.Store.
func (s *Store) RevokeKey(ctx context.Context, idOrSecret string) error {
	h := keygen.Hash(idOrSecret)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(ctx); err != nil {
		return fmt.Errorf("revoke key: %w", err)
	}
	e := s.byID[idOrSecret]
	if e == nil {
		e = s.byHash[h]
	}
	if e == nil {
		return store.ErrNotFound
	}
	e.key.Enabled = false
	return nil
}

// LookupKey implements store.Store.
func (s *Store) LookupKey(ctx context.Context, secret string) (store.Key, bool, error) {
	h := keygen.Hash(secret)
	s.mu.RLock()
	defer s.mu.RUnlock()
	if err := s.check(ctx); err != nil {
		return store.Key{}, false, fmt.Errorf("lookup key: %w", err)
	}
	e := s.byHash[h]
	if e == nil || !keygen.Equal(e.hash, h) || !e.key.Enabled {
		return store.Key{}, false, nil
	}
	return e.snapshot(), true, nil
}

// RecordUsage implements store.Store. Unknown ids are skipped: the key may
// have been created by a store that has since been replaced.
func (s *Store) RecordUsage(ctx context.Context, batch []store.Usage) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(ctx); err != nil {
		return fmt.Errorf("record usage: %w", err)
	}
	for _, u := range batch {
		e := s.byID[u.KeyID]
		if e == nil {
			continue
		}
		e.key.RequestCount += u.Requests
		if !u.LastUsed.IsZero() && (e.key.LastUsed == nil || u.LastUsed.After(*e.key.LastUsed)) {
			t := u.LastUsed.UTC()
			e.key.LastUsed = &t
		}
	}
	return nil
}

// Allow implements store.Store with an exact in-process sliding window log.
func (s *Store) Allow(ctx context.Context, bucket string, limit int, window time.Duration) (store.Decision, error) {
	s.mu.RLock()
	err := s.check(ctx)
	s.mu.RUnlock()
	if err != nil {
		return store.Decision{}, fmt.Errorf("rate limit: %w", err)
	}
	return s.lim.Allow(bucket, limit, window)
}

// Invalidations is nil: nothing outside this process changes a memory store.
func (s *Store) Invalidations() <-chan string { return nil }

// Close releases nothing but makes later calls fail, like the other backends.
func (s *Store) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	return nil
}

// snapshot copies the key so callers never share LastUsed with the store.
func (e *entry) snapshot() store.Key {
	k := e.key
	if k.LastUsed != nil {
		t := *k.LastUsed
		k.LastUsed = &t
	}
	return k
}
