package sqlite_test

import (
	"bytes"
	"context"
	"database/sql"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/ralf-gateway/ralf/core/store"
	"github.com/ralf-gateway/ralf/plugins/store/sqlite"
	"github.com/ralf-gateway/ralf/plugins/store/storetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestConformance(t *testing.T) {
	var mu sync.Mutex
	paths := map[*testing.T]string{}
	storetest.Run(t, func(t *testing.T) store.Store {
		mu.Lock()
		p, ok := paths[t]
		if !ok {
			p = filepath.Join(t.TempDir(), "ralf.db")
			paths[t] = p
		}
		mu.Unlock()
		s, err := sqlite.Open(p, zap.NewNop())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	})
}

func TestPathFromURL(t *testing.T) {
	tests := []struct {
		url, want string
		wantErr   bool
	}{
		{"sqlite://data/ralf.db", "data/ralf.db", false},
		{"sqlite://ralf.db", "ralf.db", false},
		{"sqlite://./data/ralf.db", "./data/ralf.db", false},
		{"sqlite:///var/lib/ralf/ralf.db", "/var/lib/ralf/ralf.db", false},
		{"sqlite:data/ralf.db", "data/ralf.db", false},
		{"sqlite://", "", true},
	}
	for _, tc := range tests {
		t.Run(tc.url, func(t *testing.T) {
			u, err := url.Parse(tc.url)
			if err != nil {
				t.Fatal(err)
			}
			got, err := sqlite.PathFromURL(u)
			if (err != nil) != tc.wantErr || got != filepath.FromSlash(tc.want) {
				t.Fatalf("PathFromURL(%s) = %q, %v; want %q (error %v)", tc.url, got, err, tc.want, tc.wantErr)
			}
		})
	}
}

// TestOpenRelativeURLCreatesDirectory opens sqlite://data/x.db through the
// registry from a fresh working directory, as a first run would.
func TestOpenRelativeURLCreatesDirectory(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	s, err := store.Open("sqlite://data/sub/ralf.db", zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	secret, _, err := s.CreateKey(ctx, "first run")
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, "data", "sub", "ralf.db"))
	if err != nil {
		t.Fatalf("database not at data/sub/ralf.db under the working directory: %v", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		t.Errorf("database file mode %v readable by others", fi.Mode().Perm())
	}
	// The write-ahead log and shared memory files hold the same rows, from the first run.
	for _, name := range []string{"ralf.db-wal", "ralf.db-shm"} {
		fi, err := os.Stat(filepath.Join(dir, "data", "sub", name))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s mode %v readable by others", name, fi.Mode().Perm())
		}
	}
	raw, err := os.ReadFile(filepath.Join(dir, "data", "sub", "ralf.db"))
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	// The WAL is checkpointed into the file on close; the secret must not be in either.
	for _, name := range []string{"ralf.db", "ralf.db-wal"} {
		b, _ := os.ReadFile(filepath.Join(dir, "data", "sub", name))
		raw = append(raw, b...)
	}
	if containsSecret(raw, secret) {
		t.Fatal("the secret is stored in the database file")
	}
}

func containsSecret(b []byte, secret string) bool {
	return bytes.Contains(b, []byte(secret)) || bytes.Contains(b, []byte(secret[3:]))
}

func TestWALAndSchemaVersion(t *testing.T) {
	p := filepath.Join(t.TempDir(), "ralf.db")
	s, err := sqlite.Open(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	v, err := s.SchemaVersion(ctx)
	if err != nil || v != 1 {
		t.Fatalf("schema version = %d, %v; want 1", v, err)
	}
	db, err := sql.Open("sqlite", p)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var mode string
	if err := db.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
		t.Fatalf("journal_mode = %q, %v; want wal", mode, err)
	}
}

func TestNewerSchemaRefused(t *testing.T) {
	p := filepath.Join(t.TempDir(), "ralf.db")
	db, err := sql.Open("sqlite", p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`PRAGMA user_version = 99`); err != nil {
		t.Fatal(err)
	}
	_ = db.Close()
	s, err := sqlite.Open(p, nil)
	if err == nil {
		_ = s.Close()
		t.Fatal("opened a database written by a newer ralf")
	}
}

// TestTwoHandlesOneFile models `ralf keys create` run beside a live gateway:
// a key written through one handle is found through the other.
func TestTwoHandlesOneFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "ralf.db")
	a, err := sqlite.Open(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := sqlite.Open(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx := context.Background()
	secret, k, err := a.CreateKey(ctx, "cli")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 10 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			if err := a.RecordUsage(ctx, []store.Usage{{KeyID: k.ID, Requests: 1}}); err != nil {
				t.Error(err)
			}
		}()
		go func() {
			defer wg.Done()
			if err := b.RecordUsage(ctx, []store.Usage{{KeyID: k.ID, Requests: 1}}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	got, ok, err := b.LookupKey(ctx, secret)
	if err != nil || !ok || got.RequestCount != 20 {
		t.Fatalf("other handle: %+v, %v, %v; want the key with 20 requests", got, ok, err)
	}
}

// TestMemoryPathRefused: SQLite's :memory: is one empty database per pooled
// connection, where created keys would vanish; the error points to memory://.
func TestMemoryPathRefused(t *testing.T) {
	t.Chdir(t.TempDir())
	_, err := store.Open("sqlite://:memory:", zap.NewNop())
	if err == nil || !strings.Contains(err.Error(), "memory://") {
		t.Fatalf("Open(sqlite://:memory:) = %v, want an error naming memory://", err)
	}
	if _, statErr := os.Stat(":memory:"); statErr == nil {
		t.Fatal("a file named :memory: was created")
	}
}
