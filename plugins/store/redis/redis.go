// Package redis is the redis:// store: keys, revocations and rate limits
// shared by every gateway replica using the same Redis database.
//
// URL: redis://[:password@]host:port/db, or rediss:// for TLS. go-redis query
// options (dial_timeout, read_timeout, ...) are accepted; by default every
// timeout is short (~500ms) so a dead Redis makes calls fail fast instead of
// hanging requests. prefix=NAME (default "ralf") namespaces every key and the
// invalidation channel, so several gateways can share one Redis database.
//
// Layout, with the default prefix:
//
//	ralf:key:<id>          hash: hash, name, prefix, created, last_used, count, enabled
//	ralf:keyhash:<sha256>  string: the id of the key with this secret hash
//	ralf:keys              sorted set of ids by creation time (ListKeys order)
//	ralf:rl:<bucket>       sorted set: the sliding window log of one limit bucket
//	ralf:keys:invalidate   pub/sub channel: ids of keys created or revoked
package redis

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
	"go.uber.org/zap"

	"github.com/ralf-gateway/ralf/core/store"
	"github.com/ralf-gateway/ralf/plugins/store/internal/keygen"
)

func init() {
	open := func(u *url.URL, log *zap.Logger) (store.Store, error) { return Open(u.String(), log) }
	store.Register("redis", open)
	store.Register("rediss", open)
}

const (
	// timeout is the default dial, read, write and pool timeout: short, so a
	// dead Redis costs a request at most about this much.
	timeout = 500 * time.Millisecond
	// openTimeout bounds the reachability check in Open.
	openTimeout = 3 * time.Second
	// invBuffer is how many invalidations may wait for the reader before they
	// are collapsed into "*".
	invBuffer = 256
)

// idleCheck is how long the subscription may be silent before we ping it;
// a second silence after the ping means a dead connection. A variable so a
// test can shorten it.
var idleCheck = 5 * time.Second

// ErrInvalid is returned by Allow for a limit or window that is not positive.
var ErrInvalid = errors.New("rate limit: limit and window must be positive")

// Store is the redis store.
type Store struct {
	c       *goredis.Client
	log     *zap.Logger
	prefix  string
	channel string

	memberBase string // unique per Store: rate-limit log members never collide across replicas
	memberSeq  atomic.Uint64

	inv       chan string
	psMu      sync.Mutex
	ps        *goredis.PubSub
	cancel    context.CancelFunc
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error
}

var _ store.Store = (*Store)(nil)

// Open connects to the Redis named by rawURL, checks that it answers (a refusal is
// an error; an unreachable Redis only a warning), and subscribes to key invalidations.
func Open(rawURL string, log *zap.Logger) (*Store, error) {
	if log == nil {
		log = zap.NewNop()
	}
	opt, prefix, err := parseURL(rawURL)
	if err != nil {
		return nil, err
	}
	setLogger(log)
	c := goredis.NewClient(opt)
	ctx, cancel := context.WithTimeout(context.Background(), openTimeout)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		if refusal(err) {
			// Redis answered, with a refusal (a wrong password, a database index it
			// does not have): the configuration is wrong, which waiting will not fix.
			_ = c.Close()
			return nil, fmt.Errorf("redis store %s: %w", opt.Addr, err)
		}
		// Unreachable, or not ready yet: go on, as a running gateway rides out a Redis
		// outage (static keys served, limits per on_store_error), and connect when it
		// is back. Refusing to start would make a restart during the outage a crash loop.
		log.Warn("redis store unreachable: going on without it until it answers",
			zap.String("addr", opt.Addr), zap.Error(err))
	}
	var rb [6]byte
	if _, err := rand.Read(rb[:]); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("redis store: %w", err)
	}
	lctx, lcancel := context.WithCancel(context.Background())
	s := &Store{
		c:          c,
		log:        log,
		prefix:     prefix,
		channel:    prefix + ":keys:invalidate",
		memberBase: hex.EncodeToString(rb[:]) + ":",
		inv:        make(chan string, invBuffer),
		cancel:     lcancel,
		done:       make(chan struct{}),
	}
	s.ps = c.Subscribe(lctx, s.channel)
	go s.listen(lctx)
	log.Debug("redis store open", zap.String("addr", opt.Addr), zap.Int("db", opt.DB), zap.String("prefix", prefix))
	return s, nil
}

// refusal tells an answer of Redis that waiting will not change (a wrong password, an
// unknown database) from an outage: no answer, or one that says "not ready yet"
// (LOADING while it reads its data after a restart, BUSY, MASTERDOWN, TRYAGAIN).
func refusal(err error) bool {
	var re goredis.Error
	if !errors.As(err, &re) {
		return false
	}
	for _, p := range [...]string{"LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN"} {
		if strings.HasPrefix(re.Error(), p) {
			return false
		}
	}
	return true
}

var loggerOnce sync.Once

// setLogger routes go-redis's own messages (dial failures, reconnects), which
// it otherwise prints to stderr outside our JSON log, into zap at debug level:
// our code reports outages itself, once, at warn. go-redis has one
// process-wide logger, so the first store opened provides it.
func setLogger(log *zap.Logger) {
	loggerOnce.Do(func() { goredis.SetLogger(zapLogger{log.Named("redis")}) })
}

type zapLogger struct{ log *zap.Logger }

func (z zapLogger) Printf(_ context.Context, format string, v ...any) {
	if ce := z.log.Check(zap.DebugLevel, "go-redis"); ce != nil {
		ce.Write(zap.String("detail", fmt.Sprintf(format, v...)))
	}
}

// parseURL turns the URL into client options with our short timeouts where
// the URL sets none, and takes out our own prefix option.
func parseURL(rawURL string) (*goredis.Options, string, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		// url.Error quotes the whole URL, password included: keep only the reason.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, "", fmt.Errorf("redis store url: %w", err)
	}
	q := u.Query()
	prefix := q.Get("prefix")
	if prefix == "" {
		prefix = "ralf"
	}
	q.Del("prefix")
	u.RawQuery = q.Encode()
	opt, err := goredis.ParseURL(u.String())
	if err != nil {
		// go-redis quotes the scheme, db or option at fault, never the password.
		return nil, "", fmt.Errorf("redis store url: %w", err)
	}
	set := func(name string, d *time.Duration) {
		if !q.Has(name) {
			*d = timeout
		}
	}
	set("dial_timeout", &opt.DialTimeout)
	set("read_timeout", &opt.ReadTimeout)
	set("write_timeout", &opt.WriteTimeout)
	set("pool_timeout", &opt.PoolTimeout)
	if !q.Has("max_retries") {
		// One retry covers a pooled connection that died with a restarted
		// Redis; more would only stretch how long a dead Redis takes to fail.
		opt.MaxRetries = 1
		opt.MinRetryBackoff = 8 * time.Millisecond
		opt.MaxRetryBackoff = 100 * time.Millisecond
	}
	// A caller's deadline bounds each call (the rate limiter gives the store 250 ms);
	// without this go-redis waits for its own read timeout, however long that is.
	opt.ContextTimeoutEnabled = true
	// Fail a dead address in one quick retry rather than five.
	opt.DialerRetries = 2
	opt.DialerRetryTimeout = 50 * time.Millisecond
	// Plain Redis does not know these; asking costs a round trip per connection.
	opt.DisableIdentity = true
	opt.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	return opt, prefix, nil
}

func (s *Store) keyKey(id string) string       { return s.prefix + ":key:" + id }
func (s *Store) hashKey(hash string) string    { return s.prefix + ":keyhash:" + hash }
func (s *Store) listKey() string               { return s.prefix + ":keys" }
func (s *Store) limitKey(bucket string) string { return s.prefix + ":rl:" + bucket }

// CreateKey implements store.Store. The key, its hash index and its place in
// the list are written in one MULTI/EXEC. Nothing is published: the secret is
// new and random, so no replica can hold it in its cache, and an invalidation
// arriving just after the key's first use would only drop a good cache entry
// (which matters when Redis then goes away).
func (s *Store) CreateKey(ctx context.Context, name string) (string, store.Key, error) {
	if err := ctx.Err(); err != nil {
		return "", store.Key{}, fmt.Errorf("create key: %w", err)
	}
	g, err := keygen.Generate()
	if err != nil {
		return "", store.Key{}, err
	}
	k := store.Key{ID: g.ID, Name: name, Prefix: g.Prefix, CreatedAt: time.Now().UTC(), Enabled: true}
	_, err = s.c.TxPipelined(ctx, func(p goredis.Pipeliner) error {
		p.HSet(ctx, s.keyKey(k.ID),
			"hash", g.Hash, "name", k.Name, "prefix", k.Prefix,
			"created", k.CreatedAt.UnixNano(), "count", 0, "enabled", 1)
		p.Set(ctx, s.hashKey(g.Hash), k.ID, 0)
		p.ZAdd(ctx, s.listKey(), goredis.Z{Score: float64(k.CreatedAt.UnixMicro()), Member: k.ID})
		return nil
	})
	if err != nil {
		return "", store.Key{}, fmt.Errorf("create key: %w", err)
	}
	return g.Secret, k, nil
}

// ListKeys implements store.Store.
func (s *Store) ListKeys(ctx context.Context) ([]store.Key, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	ids, err := s.c.ZRange(ctx, s.listKey(), 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	cmds := make([]*goredis.MapStringStringCmd, len(ids))
	if len(ids) > 0 {
		_, err = s.c.Pipelined(ctx, func(p goredis.Pipeliner) error {
			for i, id := range ids {
				cmds[i] = p.HGetAll(ctx, s.keyKey(id))
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("list keys: %w", err)
		}
	}
	out := make([]store.Key, 0, len(ids))
	for i, id := range ids {
		k, _, ok := parseKey(id, cmds[i].Val())
		if ok {
			out = append(out, k)
		}
	}
	// Scores are microseconds; ties (two replicas, one microsecond) sort by id.
	sort.SliceStable(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	return out, nil
}

// parseKey reads a key hash; ok is false when the hash is missing or damaged.
func parseKey(id string, m map[string]string) (store.Key, string, bool) {
	if len(m) == 0 || m["hash"] == "" {
		return store.Key{}, "", false
	}
	created, err := strconv.ParseInt(m["created"], 10, 64)
	if err != nil {
		return store.Key{}, "", false
	}
	k := store.Key{
		ID:        id,
		Name:      m["name"],
		Prefix:    m["prefix"],
		CreatedAt: time.Unix(0, created).UTC(),
		Enabled:   m["enabled"] == "1",
	}
	k.RequestCount, _ = strconv.ParseInt(m["count"], 10, 64)
	if lu, err := strconv.ParseInt(m["last_used"], 10, 64); err == nil {
		t := time.Unix(0, lu).UTC()
		k.LastUsed = &t
	}
	return k, m["hash"], true
}

// RevokeKey implements store.Store and tells the other replicas.
func (s *Store) RevokeKey(ctx context.Context, idOrSecret string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("revoke key: %w", err)
	}
	id, err := s.resolve(ctx, idOrSecret)
	if err != nil {
		return err
	}
	_, err = s.c.TxPipelined(ctx, func(p goredis.Pipeliner) error {
		p.HSet(ctx, s.keyKey(id), "enabled", 0)
		p.Publish(ctx, s.channel, id)
		return nil
	})
	if err != nil {
		return fmt.Errorf("revoke key: %w", err)
	}
	return nil
}

// resolve finds the id of a key given its id or its secret.
func (s *Store) resolve(ctx context.Context, idOrSecret string) (string, error) {
	if keygen.IsID(idOrSecret) {
		ok, err := s.c.HExists(ctx, s.keyKey(idOrSecret), "hash").Result()
		if err != nil {
			return "", fmt.Errorf("revoke key: %w", err)
		}
		if ok {
			return idOrSecret, nil
		}
	}
	id, err := s.c.Get(ctx, s.hashKey(keygen.Hash(idOrSecret))).Result()
	if errors.Is(err, goredis.Nil) {
		return "", store.ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("revoke key: %w", err)
	}
	return id, nil
}

// LookupKey implements store.Store.
func (s *Store) LookupKey(ctx context.Context, secret string) (store.Key, bool, error) {
	if err := ctx.Err(); err != nil {
		return store.Key{}, false, fmt.Errorf("lookup key: %w", err)
	}
	h := keygen.Hash(secret)
	id, err := s.c.Get(ctx, s.hashKey(h)).Result()
	if errors.Is(err, goredis.Nil) {
		return store.Key{}, false, nil
	}
	if err != nil {
		return store.Key{}, false, fmt.Errorf("lookup key: %w", err)
	}
	m, err := s.c.HGetAll(ctx, s.keyKey(id)).Result()
	if err != nil {
		return store.Key{}, false, fmt.Errorf("lookup key: %w", err)
	}
	k, stored, ok := parseKey(id, m)
	if !ok || !keygen.Equal(stored, h) || !k.Enabled {
		return store.Key{}, false, nil
	}
	return k, true, nil
}

// usageScript adds a batch of usage in one atomic call. KEYS are key hashes;
// ARGV holds, per key, the request count and lastUsed in unix nanoseconds ("" if
// none). Unknown keys are skipped, not created. lastUsed only moves forward:
// compared as decimal strings (same length until the year 2286), because Lua
// numbers are doubles and would round nanoseconds.
var usageScript = goredis.NewScript(`
for i, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then
    redis.call('HINCRBY', key, 'count', ARGV[2*i-1])
    local t = ARGV[2*i]
    if t ~= '' then
      local cur = redis.call('HGET', key, 'last_used')
      if not cur or #t > #cur or (#t == #cur and t > cur) then
        redis.call('HSET', key, 'last_used', t)
      end
    end
  end
end
return 0
`)

// RecordUsage implements store.Store: one script call per batch.
func (s *Store) RecordUsage(ctx context.Context, batch []store.Usage) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("record usage: %w", err)
	}
	if len(batch) == 0 {
		return nil
	}
	keys := make([]string, len(batch))
	args := make([]any, 0, 2*len(batch))
	for i, u := range batch {
		keys[i] = s.keyKey(u.KeyID)
		last := ""
		if !u.LastUsed.IsZero() {
			last = strconv.FormatInt(u.LastUsed.UnixNano(), 10)
		}
		args = append(args, u.Requests, last)
	}
	if err := usageScript.Run(ctx, s.c, keys, args...).Err(); err != nil && !errors.Is(err, goredis.Nil) {
		return fmt.Errorf("record usage: %w", err)
	}
	return nil
}

// allowScript is the sliding window log, atomically: drop entries older than
// the window, count, add this request if under the limit. The clock is
// Redis's TIME, so replicas with skewed clocks share one window.
// KEYS[1] the bucket's sorted set; ARGV limit, window (µs), unique member.
// Returns allowed (0/1), count after, now (µs), when the oldest entry leaves (µs).
var allowScript = goredis.NewScript(`
if redis.replicate_commands then pcall(redis.replicate_commands) end
local key = KEYS[1]
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
local count = redis.call('ZCARD', key)
local allowed = 0
if count < limit then
  redis.call('ZADD', key, now, ARGV[3])
  count = count + 1
  allowed = 1
end
local reset = now + window
-- Refused: a slot frees when the entry that brings the count under the limit
-- leaves (past the oldest when the limit was lowered under the count).
local at = 0
if allowed == 0 then at = count - limit end -- 0-based: the (count-limit+1)th oldest
local oldest = redis.call('ZRANGE', key, at, at, 'WITHSCORES')
if oldest[2] then reset = tonumber(oldest[2]) + window end
redis.call('PEXPIRE', key, math.ceil(window / 1000))
return {allowed, count, now, reset}
`)

// Allow implements store.Store; the limit holds across every replica.
func (s *Store) Allow(ctx context.Context, bucket string, limit int, window time.Duration) (store.Decision, error) {
	if limit <= 0 || window <= 0 {
		return store.Decision{}, ErrInvalid
	}
	if err := ctx.Err(); err != nil {
		return store.Decision{}, fmt.Errorf("rate limit: %w", err)
	}
	winUS := max(window.Microseconds(), 1)
	member := s.memberBase + strconv.FormatUint(s.memberSeq.Add(1), 36)
	local := time.Now()
	vals, err := allowScript.Run(ctx, s.c, []string{s.limitKey(bucket)}, limit, winUS, member).Int64Slice()
	if err != nil {
		return store.Decision{}, fmt.Errorf("rate limit: %w", err)
	}
	if len(vals) != 4 {
		return store.Decision{}, fmt.Errorf("rate limit: unexpected script reply of %d values", len(vals))
	}
	allowed, count, now, reset := vals[0] == 1, int(vals[1]), vals[2], vals[3]
	// Redis's clock decides; the answer is expressed on ours, so that
	// X-RateLimit-Reset and Retry-After agree with this host's clock.
	wait := time.Duration(reset-now) * time.Microsecond
	d := store.Decision{
		Allowed:   allowed,
		Limit:     limit,
		Remaining: max(limit-count, 0),
		ResetAt:   local.Add(wait),
	}
	if !allowed {
		d.RetryAfter = max(wait, time.Millisecond)
	}
	return d, nil
}

// Invalidations implements store.Store: ids of keys created or revoked by any
// replica (this one included), and "*" after the subscription was lost and
// restored (anything may have changed meanwhile). Closed by Close.
func (s *Store) Invalidations() <-chan string { return s.inv }

// listen forwards invalidation messages until Close. go-redis reconnects a
// broken subscription on the next receive and subscribes again; each
// subscription confirmation after the first therefore means messages may have
// been missed.
func (s *Store) listen(ctx context.Context) {
	defer close(s.done)
	defer close(s.inv)
	var (
		confirmed   bool // the first subscription was confirmed
		pingPending bool
		down        bool
		backoff     = 50 * time.Millisecond
	)
	for {
		ps := s.pubsub()
		msg, err := ps.ReceiveTimeout(ctx, idleCheck)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				if pingPending {
					// Not even a pong: the connection is dead without having
					// been closed (a network partition). Start over.
					s.resubscribe(ctx)
					pingPending = false
					continue
				}
				pingPending = true
				_ = ps.Ping(ctx)
				continue
			}
			if !down {
				down = true
				s.log.Warn("redis store: invalidation subscription lost, reconnecting", zap.Error(err))
			}
			if !sleep(ctx, backoff) {
				return
			}
			backoff = min(2*backoff, time.Second)
			continue
		}
		pingPending = false
		backoff = 50 * time.Millisecond
		switch m := msg.(type) {
		case *goredis.Subscription:
			if m.Kind != "subscribe" {
				continue
			}
			if confirmed || down {
				// Revocations published while unsubscribed were missed (also when the
				// store was opened with Redis down: keys may have been looked up since
				// it came back): forget every cached key.
				s.emit("*")
			}
			confirmed = true
			if down {
				down = false
				s.log.Info("redis store: invalidation subscription restored")
			}
		case *goredis.Message:
			if m.Channel == s.channel && m.Payload != "" {
				s.emit(m.Payload)
			}
		}
	}
}

func (s *Store) pubsub() *goredis.PubSub {
	s.psMu.Lock()
	defer s.psMu.Unlock()
	return s.ps
}

// resubscribe replaces the subscription (its connection is dead but not closed).
func (s *Store) resubscribe(ctx context.Context) {
	s.psMu.Lock()
	defer s.psMu.Unlock()
	if ctx.Err() != nil {
		return // Close has closed s.ps or is about to
	}
	_ = s.ps.Close()
	s.ps = s.c.Subscribe(ctx, s.channel)
}

// emit hands an invalidation to the reader without ever blocking the
// subscription: if the reader is behind, everything it has not read yet is
// replaced by one "*". Only listen sends, so after draining there is room.
func (s *Store) emit(id string) {
	select {
	case s.inv <- id:
		return
	default:
	}
	for drained := false; !drained; {
		select {
		case <-s.inv:
		default:
			drained = true
		}
	}
	select {
	case s.inv <- "*":
	default:
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// Close stops the subscription (closing the Invalidations channel) and the
// client. Safe to call more than once.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.cancel()
		s.psMu.Lock()
		_ = s.ps.Close() // unblocks a receive in progress
		s.psMu.Unlock()
		<-s.done
		s.closeErr = s.c.Close()
	})
	return s.closeErr
}
