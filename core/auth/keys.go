package auth

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/ralf-gateway/ralf/core/store"
)

// Errors of Keys.Authenticate.
var (
	// ErrInvalidKey: the key is unknown or revoked.
	ErrInvalidKey = errors.New("invalid api key")
	// ErrStoreUnavailable: the store could not answer and the key is not known locally.
	ErrStoreUnavailable = errors.New("key store unavailable")
)

// KeysOptions tunes Keys; zero values take the defaults.
type KeysOptions struct {
	// TTL bounds how long a valid key is trusted without asking the store again
	// (a backstop: revocations arrive through Invalidations). Default 30s.
	TTL time.Duration
	// NegativeTTL is how long an unknown key is remembered as unknown. Default 5s.
	NegativeTTL time.Duration
	// FlushInterval is how often usage counts are written to the store. Default 2s.
	FlushInterval time.Duration
	// StoreTimeout bounds each store call. Default 2s.
	StoreTimeout time.Duration
	// MaxNegative caps remembered unknown keys, so random keys cannot grow memory. Default 10000.
	MaxNegative int
	// OnStoreError is called on each failed store operation with a short op name
	// ("lookup_key", "record_usage", "create_key", "list_keys", "revoke_key").
	OnStoreError func(op string)
	// Now replaces time.Now in tests.
	Now func() time.Time
}

func (o *KeysOptions) defaults() {
	if o.TTL <= 0 {
		o.TTL = 30 * time.Second
	}
	if o.NegativeTTL <= 0 {
		o.NegativeTTL = 5 * time.Second
	}
	if o.FlushInterval <= 0 {
		o.FlushInterval = 2 * time.Second
	}
	if o.StoreTimeout <= 0 {
		o.StoreTimeout = 2 * time.Second
	}
	if o.MaxNegative <= 0 {
		o.MaxNegative = 10000
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// posEntry is a key the store confirmed. It stays after its TTL so it can be
// served while the store is down (stale-if-error); only an invalidation, a
// revoke or a negative answer from the store removes it.
type posEntry struct {
	key     store.Key
	expires time.Time
}

// Keys authenticates managed keys through a cache in front of the store and
// counts their usage in memory. It lives across config reloads; Close stops it.
type Keys struct {
	st   store.Store
	log  *zap.Logger
	opts KeysOptions

	mu      sync.RWMutex
	pos     map[[32]byte]*posEntry           // by sha256 of the secret: the secret itself is not kept
	byID    map[string]map[[32]byte]struct{} // key id → digests, for invalidation by id
	neg     map[[32]byte]time.Time           // unknown keys → expiry
	gen     uint64                           // bumped by every invalidation: a lookup racing one is not cached
	flights map[[32]byte]*flight             // lookups in progress

	umu   sync.Mutex
	usage map[string]*store.Usage // pending, by key id

	flushMu sync.Mutex // one flush at a time; List waits for it so counts are not missed

	lookupErrs burst
	usageErrs  burst

	stop      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// NewKeys starts the cache invalidation listener and the usage flusher.
func NewKeys(st store.Store, log *zap.Logger, opts KeysOptions) *Keys {
	if log == nil {
		log = zap.NewNop()
	}
	opts.defaults()
	k := &Keys{
		st: st, log: log, opts: opts,
		pos: map[[32]byte]*posEntry{}, byID: map[string]map[[32]byte]struct{}{}, neg: map[[32]byte]time.Time{},
		flights: map[[32]byte]*flight{},
		usage:   map[string]*store.Usage{},
		stop:    make(chan struct{}),
	}
	var inv <-chan string
	if st != nil {
		inv = st.Invalidations()
	}
	k.wg.Add(1)
	go k.loop(inv)
	return k
}

func (k *Keys) loop(inv <-chan string) {
	defer k.wg.Done()
	t := time.NewTicker(k.opts.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-k.stop:
			return
		case id, ok := <-inv:
			if !ok {
				inv = nil // the store closed it; keep flushing usage
				continue
			}
			k.Invalidate(id)
		case <-t.C:
			_ = k.Flush(context.Background())
			k.sweep()
		}
	}
}

// Close stops the background goroutines and flushes pending usage. It is safe to call twice.
func (k *Keys) Close() error {
	k.closeOnce.Do(func() {
		close(k.stop)
		k.wg.Wait()
		k.closeErr = k.Flush(context.Background())
	})
	return k.closeErr
}

// Authenticate returns the managed client for secret: ErrInvalidKey when the key
// is unknown or revoked, ErrStoreUnavailable when the store cannot answer and
// the key was never seen valid by this process.
func (k *Keys) Authenticate(ctx context.Context, secret string) (Client, error) {
	if k == nil || k.st == nil || secret == "" || len(secret) > maxKeyLen {
		return Client{}, ErrInvalidKey
	}
	d := digest(secret)
	now := k.opts.Now()

	// Fast path: a fresh entry, under the read lock only.
	k.mu.RLock()
	if e := k.pos[d]; e != nil && now.Before(e.expires) {
		key := e.key
		k.mu.RUnlock()
		return k.use(key, now), nil
	}
	k.mu.RUnlock()

	k.mu.Lock()
	e := k.pos[d]
	if e != nil && now.Before(e.expires) {
		key := e.key
		k.mu.Unlock()
		return k.use(key, now), nil
	}
	if exp, ok := k.neg[d]; ok && now.Before(exp) {
		k.mu.Unlock()
		return Client{}, ErrInvalidKey
	}
	f := k.flights[d]
	if f != nil && e != nil {
		// Another request is already asking the store about this known key:
		// serve the entry meanwhile instead of queueing behind it.
		key := e.key
		k.mu.Unlock()
		return k.use(key, now), nil
	}
	leader := f == nil
	if leader {
		f = &flight{done: make(chan struct{})}
		k.flights[d] = f
	}
	f.waiters++
	gen := k.gen
	k.mu.Unlock()

	if leader {
		k.lookup(ctx, f, d, secret, gen)
	}
	select {
	case <-f.done:
	case <-ctx.Done():
		return Client{}, fmt.Errorf("lookup key: %w", ctx.Err())
	}
	if f.err != nil {
		return Client{}, f.err
	}
	if !f.ok {
		return Client{}, ErrInvalidKey
	}
	return k.use(f.key, now), nil
}

// flight is one store lookup shared by the requests that need the same key at
// once, so a popular key whose entry expires costs one store call, not a stampede.
type flight struct {
	done    chan struct{}
	key     store.Key
	ok      bool
	err     error
	waiters int // requests sharing it (tests)
}

// staleRetry is how long a known key is served from cache after a failed
// lookup before the store is asked again, so a hanging store slows one request
// per interval rather than all of them.
const staleRetry = time.Second

// lookup asks the store and fills f and the cache; the lookup is detached from
// the leader's cancellation because other requests wait on it.
func (k *Keys) lookup(ctx context.Context, f *flight, d [32]byte, secret string, gen uint64) {
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), k.opts.StoreTimeout)
	key, ok, err := k.st.LookupKey(lctx, secret)
	cancel()
	now := k.opts.Now()
	if err != nil {
		k.storeError(&k.lookupErrs, "lookup_key", err, secret)
	} else {
		k.storeRecovered(&k.lookupErrs, "lookup_key")
	}

	k.mu.Lock()
	delete(k.flights, d)
	switch {
	case err != nil:
		if e := k.pos[d]; e != nil { // stale-if-error
			f.key, f.ok = e.key, true
			e.expires = now.Add(min(staleRetry, k.opts.TTL))
		} else {
			f.err = ErrStoreUnavailable
		}
	case k.gen != gen:
		// An invalidation raced this lookup: answer this request with it, cache nothing.
		f.key, f.ok = key, ok
	case ok:
		f.key, f.ok = key, true
		k.putPos(d, key, now.Add(k.opts.TTL))
	default:
		k.dropDigest(d)
		k.putNeg(d, now.Add(k.opts.NegativeTTL), now)
	}
	k.mu.Unlock()
	close(f.done)
}

// use counts one request for key and returns its Client.
func (k *Keys) use(key store.Key, now time.Time) Client {
	k.umu.Lock()
	u := k.usage[key.ID]
	if u == nil {
		u = &store.Usage{KeyID: key.ID}
		k.usage[key.ID] = u
	}
	u.Requests++
	if now.After(u.LastUsed) {
		u.LastUsed = now
	}
	k.umu.Unlock()
	return Client{Name: key.Name, KeyID: key.ID, Kind: KindManaged}
}

// putPos caches a valid key; k.mu held.
func (k *Keys) putPos(d [32]byte, key store.Key, exp time.Time) {
	delete(k.neg, d)
	if old := k.pos[d]; old != nil && old.key.ID != key.ID {
		k.unindex(old.key.ID, d)
	}
	k.pos[d] = &posEntry{key: key, expires: exp}
	set := k.byID[key.ID]
	if set == nil {
		set = map[[32]byte]struct{}{}
		k.byID[key.ID] = set
	}
	set[d] = struct{}{}
}

// putNeg remembers an unknown key, bounded by MaxNegative; k.mu held.
func (k *Keys) putNeg(d [32]byte, exp, now time.Time) {
	if len(k.neg) >= k.opts.MaxNegative {
		k.sweepNegLocked(now)
		if len(k.neg) >= k.opts.MaxNegative {
			k.neg = map[[32]byte]time.Time{} // a flood of random keys: forget them all
		}
	}
	k.neg[d] = exp
}

// dropDigest forgets one secret's positive entry; k.mu held.
func (k *Keys) dropDigest(d [32]byte) {
	if e := k.pos[d]; e != nil {
		delete(k.pos, d)
		k.unindex(e.key.ID, d)
	}
}

func (k *Keys) unindex(id string, d [32]byte) {
	if set := k.byID[id]; set != nil {
		delete(set, d)
		if len(set) == 0 {
			delete(k.byID, id)
		}
	}
}

// Invalidate drops what is cached for key id ("*": everything). Remembered
// unknown keys are dropped too, since the change may be a key created elsewhere.
func (k *Keys) Invalidate(id string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.gen++
	k.neg = map[[32]byte]time.Time{}
	if id == "*" {
		k.pos = map[[32]byte]*posEntry{}
		k.byID = map[string]map[[32]byte]struct{}{}
		return
	}
	for d := range k.byID[id] {
		delete(k.pos, d)
	}
	delete(k.byID, id)
}

// sweep drops expired negative entries (positive ones stay for stale-if-error).
func (k *Keys) sweep() {
	now := k.opts.Now()
	k.mu.Lock()
	k.sweepNegLocked(now)
	k.mu.Unlock()
}

func (k *Keys) sweepNegLocked(now time.Time) {
	for d, exp := range k.neg {
		if !now.Before(exp) {
			delete(k.neg, d)
		}
	}
}

// Flush writes pending usage to the store in one batch. On failure the counts
// are kept for the next flush.
func (k *Keys) Flush(ctx context.Context) error {
	if k.st == nil {
		return nil
	}
	k.flushMu.Lock()
	defer k.flushMu.Unlock()
	k.umu.Lock()
	pending := k.usage
	if len(pending) == 0 {
		k.umu.Unlock()
		return nil
	}
	k.usage = map[string]*store.Usage{}
	k.umu.Unlock()

	batch := make([]store.Usage, 0, len(pending))
	for _, u := range pending {
		batch = append(batch, *u)
	}
	sort.Slice(batch, func(i, j int) bool { return batch[i].KeyID < batch[j].KeyID })

	ctx, cancel := context.WithTimeout(ctx, k.opts.StoreTimeout)
	defer cancel()
	if err := k.st.RecordUsage(ctx, batch); err != nil {
		k.storeError(&k.usageErrs, "record_usage", err, "")
		k.umu.Lock()
		for _, b := range batch {
			k.mergeUsage(b)
		}
		k.umu.Unlock()
		return fmt.Errorf("record usage: %w", err)
	}
	k.storeRecovered(&k.usageErrs, "record_usage")
	return nil
}

// mergeUsage adds b to the pending counts; k.umu held.
func (k *Keys) mergeUsage(b store.Usage) {
	u := k.usage[b.KeyID]
	if u == nil {
		u = &store.Usage{KeyID: b.KeyID}
		k.usage[b.KeyID] = u
	}
	u.Requests += b.Requests
	if b.LastUsed.After(u.LastUsed) {
		u.LastUsed = b.LastUsed
	}
}

// Create makes a new managed key; the secret is returned once and never stored in clear.
func (k *Keys) Create(ctx context.Context, name string) (string, store.Key, error) {
	if k.st == nil {
		return "", store.Key{}, fmt.Errorf("create key: %w", errNoStore)
	}
	secret, key, err := k.st.CreateKey(ctx, name)
	if err != nil {
		k.storeError(nil, "create_key", err, "")
		return "", store.Key{}, fmt.Errorf("create key: %w", err)
	}
	k.mu.Lock()
	k.neg = map[[32]byte]time.Time{} // in case this secret was tried before it existed
	k.mu.Unlock()
	return secret, key, nil
}

// List returns every key with usage counts that are not flushed yet added in.
func (k *Keys) List(ctx context.Context) ([]store.Key, error) {
	if k.st == nil {
		return nil, fmt.Errorf("list keys: %w", errNoStore)
	}
	k.flushMu.Lock() // a flush in flight would hide its counts from both sides
	defer k.flushMu.Unlock()
	keys, err := k.st.ListKeys(ctx)
	if err != nil {
		k.storeError(nil, "list_keys", err, "")
		return nil, fmt.Errorf("list keys: %w", err)
	}
	k.umu.Lock()
	for i := range keys {
		if u := k.usage[keys[i].ID]; u != nil {
			keys[i].RequestCount += u.Requests
			if keys[i].LastUsed == nil || u.LastUsed.After(*keys[i].LastUsed) {
				t := u.LastUsed
				keys[i].LastUsed = &t
			}
		}
	}
	k.umu.Unlock()
	return keys, nil
}

// Revoke disables the key with this id or secret (store.ErrNotFound if none)
// and drops it from the local cache, so the very next request with it fails.
func (k *Keys) Revoke(ctx context.Context, idOrSecret string) error {
	idOrSecret = strings.TrimSpace(idOrSecret)
	if idOrSecret == "" {
		return store.ErrNotFound
	}
	if k.st == nil {
		return fmt.Errorf("revoke key: %w", errNoStore)
	}
	if err := k.st.RevokeKey(ctx, idOrSecret); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return store.ErrNotFound
		}
		k.storeError(nil, "revoke_key", err, idOrSecret)
		return fmt.Errorf("revoke key: %w", errors.New(redact(err, idOrSecret)))
	}
	d := digest(idOrSecret)
	k.mu.Lock()
	k.gen++
	k.dropDigest(d)
	for dd := range k.byID[idOrSecret] {
		delete(k.pos, dd)
	}
	delete(k.byID, idOrSecret)
	k.mu.Unlock()
	return nil
}

// burst logs a failing operation once, then again only after a minute of
// continuous failures or after a recovery, so an outage is one log line and not
// one per request.
type burst struct {
	failing atomic.Bool // fast path: recover is called on every success
	mu      sync.Mutex
	last    time.Time
}

const burstEvery = time.Minute

// fail records a failure and reports whether to log it.
func (b *burst) fail(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.failing.Load() && now.Sub(b.last) < burstEvery {
		return false
	}
	b.failing.Store(true)
	b.last = now
	return true
}

// recover records a success and reports whether a failure burst just ended.
func (b *burst) recover() bool {
	return b.failing.Load() && b.failing.CompareAndSwap(true, false)
}

func (k *Keys) storeError(b *burst, op string, err error, secret string) {
	if k.opts.OnStoreError != nil {
		k.opts.OnStoreError(op)
	}
	if b == nil {
		k.log.Error("key store operation failed", zap.String("op", op), zap.String("error", redact(err, secret)))
		return
	}
	if b.fail(k.opts.Now()) {
		msg := "key store unavailable: serving known keys from cache, refusing unknown ones"
		if op == "record_usage" {
			msg = "key store unavailable: usage counts kept in memory for the next flush"
		}
		k.log.Error(msg, zap.String("op", op), zap.String("error", redact(err, secret)))
	}
}

func (k *Keys) storeRecovered(b *burst, op string) {
	if b.recover() {
		k.log.Info("key store answering again", zap.String("op", op))
	}
}

// redact renders err without secret in it, in case a backend echoes its input.
func redact(err error, secret string) string {
	s := err.Error()
	if secret != "" {
		s = strings.ReplaceAll(s, secret, "[redacted]")
	}
	return s
}
