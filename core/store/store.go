// Package store defines what the gateway keeps outside a config generation and
// outside one process: managed client keys and rate-limit counters. Backends
// (memory, sqlite, redis) live in plugins/store and register a URL scheme here.
package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
)

// ErrNotFound is returned when a key id or key does not exist.
var ErrNotFound = errors.New("not found")

// Key is a managed client key as listed (never the secret itself).
type Key struct {
	ID           string     `json:"id"`
	Name         string     `json:"name"`
	Prefix       string     `json:"key"` // e.g. "sk_ab12…": first characters only
	CreatedAt    time.Time  `json:"createdAt"`
	LastUsed     *time.Time `json:"lastUsed"`
	RequestCount int64      `json:"requestCount"`
	Enabled      bool       `json:"enabled"`
}

// MarshalJSON writes the times as JavaScript's toISOString does (UTC, milliseconds),
// as the seed gateways did: "2026-11-23T03:17:49.123Z".
func (k Key) MarshalJSON() ([]byte, error) {
	v := struct { // Key's fields in Key's order, the times as strings
		ID           string  `json:"id"`
		Name         string  `json:"name"`
		Prefix       string  `json:"key"`
		CreatedAt    string  `json:"createdAt"`
		LastUsed     *string `json:"lastUsed"`
		RequestCount int64   `json:"requestCount"`
		Enabled      bool    `json:"enabled"`
	}{k.ID, k.Name, k.Prefix, isoMillis(k.CreatedAt), nil, k.RequestCount, k.Enabled}
	if k.LastUsed != nil {
		s := isoMillis(*k.LastUsed)
		v.LastUsed = &s
	}
	return json.Marshal(v)
}

func isoMillis(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

// Usage is a batch of uses of one key, flushed periodically (no write per request).
type Usage struct {
	KeyID    string
	Requests int64
	LastUsed time.Time
}

// Decision is the answer of a rate limiter for one request.
type Decision struct {
	Allowed    bool
	Limit      int
	Remaining  int
	ResetAt    time.Time     // when a slot frees: the oldest counted request leaves (or, over a lowered limit, the one that brings the count under it)
	RetryAfter time.Duration // > 0 when not allowed
}

// Store is a backend for keys and rate limits. Implementations are safe for concurrent use.
type Store interface {
	// CreateKey makes a new key "sk_..." and stores only its hash. The secret is returned once.
	CreateKey(ctx context.Context, name string) (secret string, k Key, err error)
	// ListKeys lists every key (revoked ones with Enabled false), oldest first.
	ListKeys(ctx context.Context) ([]Key, error)
	// RevokeKey disables the key with this id or this secret. ErrNotFound if none.
	RevokeKey(ctx context.Context, idOrSecret string) error
	// LookupKey finds an enabled key by its secret (hash lookup). ok false if unknown or revoked.
	LookupKey(ctx context.Context, secret string) (k Key, ok bool, err error)
	// RecordUsage adds batched usage counts.
	RecordUsage(ctx context.Context, batch []Usage) error
	// Allow counts one request for bucket against limit per window (sliding window),
	// atomically: under any concurrency exactly limit requests per window are allowed.
	Allow(ctx context.Context, bucket string, limit int, window time.Duration) (Decision, error)
	// Invalidations delivers key ids (or "*") whose cached state must be dropped because
	// another process changed them; nil when the backend is not shared.
	Invalidations() <-chan string
	Close() error
}

// Opener opens a store from its URL.
type Opener func(u *url.URL, log *zap.Logger) (Store, error)

var (
	mu      sync.RWMutex
	openers = map[string]Opener{}
)

// Register makes a URL scheme available; called from a backend's init(), panics on duplicates.
func Register(scheme string, o Opener) {
	mu.Lock()
	defer mu.Unlock()
	if _, dup := openers[scheme]; dup {
		panic("store: scheme registered twice: " + scheme)
	}
	openers[scheme] = o
}

// Known reports whether a scheme is registered.
func Known(scheme string) bool {
	mu.RLock()
	defer mu.RUnlock()
	_, ok := openers[scheme]
	return ok
}

// Open opens the store named by rawURL (sqlite://PATH, redis://HOST:PORT/DB, memory://).
func Open(rawURL string, log *zap.Logger) (Store, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		// url.Error repeats the whole URL, which may hold a password: keep the reason only.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("store url: %v", err)
	}
	mu.RLock()
	o, ok := openers[u.Scheme]
	mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("store url: unknown scheme %q", u.Scheme)
	}
	return o(u, log)
}

// KeyIDPrefix starts every managed key's id, so an id is never mistaken for a secret.
const KeyIDPrefix = "key_"

// IsKeyID reports whether s is a well-formed key id: KeyIDPrefix and 12 lower-case
// hex digits. Logs use it to tell an id (shown) from anything else (redacted).
func IsKeyID(s string) bool {
	h, ok := strings.CutPrefix(s, KeyIDPrefix)
	if !ok || len(h) != 12 {
		return false
	}
	for i := 0; i < len(h); i++ {
		if c := h[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
