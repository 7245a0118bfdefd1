// Package sqlite is the sqlite:// store, the default: managed keys in one
// embedded database file (modernc.org/sqlite, pure Go, no cgo).
//
// Rate-limit counters are deliberately not written to the file: a sqlite store
// belongs to one gateway process (it is the single-replica setup), so the
// limiter state is as exact in memory as in the file, and writing a row per
// request would cost a disk write (and a lock) per request. Counters restart
// empty with the process; use redis:// when several replicas share limits.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	_ "modernc.org/sqlite" // driver "sqlite"

	"github.com/ralf-gateway/ralf/core/store"
	"github.com/ralf-gateway/ralf/plugins/store/internal/keygen"
	"github.com/ralf-gateway/ralf/plugins/store/internal/window"
)

func init() {
	store.Register("sqlite", func(u *url.URL, log *zap.Logger) (store.Store, error) {
		path, err := PathFromURL(u)
		if err != nil {
			return nil, err
		}
		return Open(path, log)
	})
}

// ErrClosed is returned by the rate limiter after Close (database calls fail on their own).
var ErrClosed = errors.New("sqlite store: closed")

// busyTimeout is how long a write waits for another connection's write
// (another process using the same file, e.g. `ralf keys create` next to a
// running gateway) before failing.
const busyTimeout = 5 * time.Second

// migrations bring the schema from version i to i+1 (PRAGMA user_version).
// Append only: never edit a released step, add a new one.
var migrations = [][]string{
	{ // 1: managed keys
		`CREATE TABLE keys (
			id            TEXT PRIMARY KEY,
			hash          TEXT NOT NULL UNIQUE,  -- hex sha256 of the secret; the secret is never stored
			name          TEXT NOT NULL,
			prefix        TEXT NOT NULL,         -- display only: "sk_ab12c…"
			created_at    INTEGER NOT NULL,      -- unix nanoseconds, UTC
			last_used     INTEGER,               -- unix nanoseconds, NULL until first use
			request_count INTEGER NOT NULL DEFAULT 0,
			enabled       INTEGER NOT NULL DEFAULT 1,
			revoked_at    INTEGER
		)`,
		`CREATE INDEX keys_created ON keys (created_at)`,
	},
}

// Store is the sqlite store.
type Store struct {
	db        *sql.DB
	log       *zap.Logger
	lim       *window.Limiter
	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
	inv       chan string   // "*" when another process (ralf keys) revoked a key
	stop      chan struct{} // ends the revocation watcher
	stopped   chan struct{}
}

// revocationPoll is how often the store looks for revocations made by another
// process on the same file (`ralf keys revoke` beside a running gateway).
var revocationPoll = time.Second

var _ store.Store = (*Store)(nil)

// PathFromURL is the file named by a sqlite URL: sqlite://data/ralf.db is
// relative to the working directory, sqlite:///var/lib/ralf/ralf.db absolute.
func PathFromURL(u *url.URL) (string, error) {
	p := u.Opaque // sqlite:data/ralf.db
	if p == "" {
		p = u.Host + u.Path
	}
	if p == "" {
		return "", errors.New("sqlite store url: no file path (sqlite://data/ralf.db or sqlite:///abs/ralf.db)")
	}
	return filepath.FromSlash(p), nil
}

// Open opens (creating if needed) the database file at path and its
// directory, and migrates the schema.
func Open(path string, log *zap.Logger) (*Store, error) {
	if log == nil {
		log = zap.NewNop()
	}
	if strings.ContainsAny(path, "?#") {
		return nil, fmt.Errorf("sqlite store: path %q must not contain ? or #", path)
	}
	if path == ":memory:" { // one empty database per pooled connection: keys would vanish
		return nil, errors.New("sqlite store: :memory: is not a file; for a store in memory use store: memory://")
	}
	if dir := filepath.Dir(path); dir != "." {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("sqlite store: create directory: %w", err)
		}
	}
	// A new file is created for its owner only before SQLite opens it: SQLite gives
	// the -wal and -shm files beside it the same mode.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err == nil {
		_ = f.Close()
	} else if !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("sqlite store: create file: %w", err)
	}

	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busyTimeout.Milliseconds()))
	q.Add("_pragma", "journal_mode(WAL)") // readers never block the usage flush, and the reverse
	q.Add("_pragma", "foreign_keys(1)")
	q.Set("_txlock", "immediate") // take the write lock at BEGIN: no deadlock upgrading a read lock
	db, err := sql.Open("sqlite", path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("sqlite store: open: %w", err)
	}
	// A handful of connections: WAL lets readers run beside the one writer.
	db.SetMaxOpenConns(4)
	db.SetMaxIdleConns(4)
	db.SetConnMaxIdleTime(5 * time.Minute)

	ctx, cancel := context.WithTimeout(context.Background(), 2*busyTimeout)
	defer cancel()
	if err := migrate(ctx, db); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("sqlite store %s: %w", path, err)
	}
	log.Debug("sqlite store open", zap.String("path", path), zap.Int("schema_version", len(migrations)))
	st := &Store{db: db, log: log, lim: window.New(), inv: make(chan string, 1), stop: make(chan struct{}), stopped: make(chan struct{})}
	// The count the watcher compares with is taken now: a revoke made by another
	// process in the first poll interval is a change too.
	revoked, err := st.revokedCount(ctx)
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("sqlite store %s: %w", path, err)
	}
	go st.watchRevocations(revocationPoll, revoked)
	return st, nil
}

// watchRevocations sends "*" on Invalidations when the number of revoked keys
// changes, so a revoke made by another process on this file (`ralf keys revoke`)
// reaches a running gateway's key cache within about a second. One cheap indexed
// count per poll; the channel is closed by Close.
func (s *Store) watchRevocations(every time.Duration, last int) {
	defer close(s.stopped)
	defer close(s.inv)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), every)
		n, err := s.revokedCount(ctx)
		cancel()
		if err != nil {
			continue
		}
		if n != last {
			select {
			case s.inv <- "*":
			default: // one pending "*" already says everything
			}
		}
		last = n
	}
}

func (s *Store) revokedCount(ctx context.Context) (n int, err error) {
	err = s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM keys WHERE enabled = 0`).Scan(&n)
	return n, err
}

// migrate runs the missing migrations, each in its own transaction with its
// version bump, so a crash leaves a consistent version. BEGIN IMMEDIATE makes
// two processes opening a new file at once take turns.
func migrate(ctx context.Context, db *sql.DB) error {
	for {
		done, err := migrateOne(ctx, db)
		if err != nil || done {
			return err
		}
	}
}

func migrateOne(ctx context.Context, db *sql.DB) (done bool, err error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("migrate: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	var v int
	if err := tx.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&v); err != nil {
		return false, fmt.Errorf("read schema version: %w", err)
	}
	switch {
	case v > len(migrations):
		return false, fmt.Errorf("schema version %d is newer than this ralf knows (%d): upgrade ralf", v, len(migrations))
	case v == len(migrations):
		return true, tx.Commit()
	}
	for _, stmt := range migrations[v] {
		if _, err := tx.ExecContext(ctx, stmt); err != nil {
			return false, fmt.Errorf("migration %d: %w", v+1, err)
		}
	}
	// PRAGMA takes no bound parameters; v is our own integer.
	if _, err := tx.ExecContext(ctx, fmt.Sprintf(`PRAGMA user_version = %d`, v+1)); err != nil {
		return false, fmt.Errorf("migration %d: set version: %w", v+1, err)
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("migration %d: commit: %w", v+1, err)
	}
	return false, nil
}

// SchemaVersion is the schema version of the open database.
func (s *Store) SchemaVersion(ctx context.Context) (int, error) {
	var v int
	err := s.db.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&v)
	return v, err
}

const keyColumns = `id, hash, name, prefix, created_at, last_used, request_count, enabled`

func scanKey(row interface{ Scan(...any) error }) (store.Key, string, error) {
	var (
		k        store.Key
		hash     string
		created  int64
		lastUsed sql.NullInt64
	)
	if err := row.Scan(&k.ID, &hash, &k.Name, &k.Prefix, &created, &lastUsed, &k.RequestCount, &k.Enabled); err != nil {
		return store.Key{}, "", err
	}
	k.CreatedAt = time.Unix(0, created).UTC()
	if lastUsed.Valid {
		t := time.Unix(0, lastUsed.Int64).UTC()
		k.LastUsed = &t
	}
	return k, hash, nil
}

// CreateKey implements store.Store.
func (s *Store) CreateKey(ctx context.Context, name string) (string, store.Key, error) {
	g, err := keygen.Generate()
	if err != nil {
		return "", store.Key{}, err
	}
	k := store.Key{ID: g.ID, Name: name, Prefix: g.Prefix, CreatedAt: time.Now().UTC(), Enabled: true}
	_, err = s.db.ExecContext(ctx,
		`INSERT INTO keys (id, hash, name, prefix, created_at, enabled) VALUES (?, ?, ?, ?, ?, 1)`,
		k.ID, g.Hash, k.Name, k.Prefix, k.CreatedAt.UnixNano())
	if err != nil {
		return "", store.Key{}, fmt.Errorf("create key: %w", err)
	}
	return g.Secret, k, nil
}

// ListKeys implements store.Store.
func (s *Store) ListKeys(ctx context.Context) ([]store.Key, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+keyColumns+` FROM keys ORDER BY created_at, rowid`)
	if err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	defer rows.Close()
	out := []store.Key{}
	for rows.Next() {
		k, _, err := scanKey(rows)
		if err != nil {
			return nil, fmt.Errorf("list keys: %w", err)
		}
		out = append(out, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	return out, nil
}

// RevokeKey implements store.Store.
func (s *Store) RevokeKey(ctx context.Context, idOrSecret string) error {
	res, err := s.db.ExecContext(ctx,
		`UPDATE keys SET enabled = 0, revoked_at = COALESCE(revoked_at, ?) WHERE id = ? OR hash = ?`,
		time.Now().UnixNano(), idOrSecret, keygen.Hash(idOrSecret))
	if err != nil {
		return fmt.Errorf("revoke key: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("revoke key: %w", err)
	}
	if n == 0 {
		return store.ErrNotFound
	}
	return nil
}

// LookupKey implements store.Store.
func (s *Store) LookupKey(ctx context.Context, secret string) (store.Key, bool, error) {
	h := keygen.Hash(secret)
	k, stored, err := scanKey(s.db.QueryRowContext(ctx, `SELECT `+keyColumns+` FROM keys WHERE hash = ?`, h))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Key{}, false, nil
	}
	if err != nil {
		return store.Key{}, false, fmt.Errorf("lookup key: %w", err)
	}
	if !keygen.Equal(stored, h) || !k.Enabled {
		return store.Key{}, false, nil
	}
	return k, true, nil
}

// RecordUsage implements store.Store: one transaction per batch. Unknown ids
// are skipped; lastUsed only moves forward, whatever order batches arrive in.
func (s *Store) RecordUsage(ctx context.Context, batch []store.Usage) (err error) {
	if len(batch) == 0 {
		return ctx.Err()
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("record usage: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	stmt, err := tx.PrepareContext(ctx, `UPDATE keys SET
		request_count = request_count + ?,
		last_used = CASE WHEN ? IS NOT NULL AND (last_used IS NULL OR last_used < ?) THEN ? ELSE last_used END
		WHERE id = ?`)
	if err != nil {
		return fmt.Errorf("record usage: %w", err)
	}
	defer stmt.Close()
	for _, u := range batch {
		var last sql.NullInt64
		if !u.LastUsed.IsZero() {
			last = sql.NullInt64{Int64: u.LastUsed.UnixNano(), Valid: true}
		}
		if _, err := stmt.ExecContext(ctx, u.Requests, last, last, last, u.KeyID); err != nil {
			return fmt.Errorf("record usage: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("record usage: %w", err)
	}
	return nil
}

// Allow implements store.Store in memory (see the package comment for why).
func (s *Store) Allow(ctx context.Context, bucket string, limit int, window time.Duration) (store.Decision, error) {
	if err := ctx.Err(); err != nil {
		return store.Decision{}, fmt.Errorf("rate limit: %w", err)
	}
	if s.closed.Load() {
		return store.Decision{}, ErrClosed
	}
	return s.lim.Allow(bucket, limit, window)
}

// Invalidations delivers "*" when a key was revoked by another process on the
// same file (`ralf keys revoke` beside a running gateway); see watchRevocations.
func (s *Store) Invalidations() <-chan string { return s.inv }

// Close closes the database. Safe to call more than once.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		close(s.stop)
		<-s.stopped
		s.closeErr = s.db.Close()
	})
	return s.closeErr
}
