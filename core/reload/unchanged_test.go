package reload

import (
	"context"
	"crypto/sha256"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestUnchangedHook: a rewrite with the same bytes is reported through Unchanged and
// never reaches Apply.
func TestUnchangedHook(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "gateway.yaml")
	content := []byte("providers: []\n")
	if err := os.WriteFile(path, content, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	unchanged := make(chan struct{}, 4)
	applied := make(chan struct{}, 4)
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{
			Path: path, Debounce: 20 * time.Millisecond, InitialHash: sha256.Sum256(content),
			Apply:     func([]byte, [32]byte, string) error { applied <- struct{}{}; return nil },
			Unchanged: func() { unchanged <- struct{}{} },
			Ready:     func() { close(ready) },
		})
	}()
	<-ready
	if err := os.WriteFile(path, content, 0o644); err != nil {
		t.Fatal(err)
	}
	select {
	case <-unchanged:
	case <-applied:
		t.Fatal("unchanged content was applied")
	case <-time.After(5 * time.Second):
		t.Fatal("no Unchanged call after rewriting the same bytes")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
