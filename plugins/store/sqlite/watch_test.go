package sqlite

import (
	"context"
	"path/filepath"
	"testing"
	"time"
)

// TestRevocationFromAnotherProcessIsSeen: a revoke written to the same file by
// another store (as `ralf keys revoke` does beside a running gateway) is announced
// on Invalidations, so the gateway drops its cached keys.
func TestRevocationFromAnotherProcessIsSeen(t *testing.T) {
	old := revocationPoll
	revocationPoll = 50 * time.Millisecond
	defer func() { revocationPoll = old }()
	path := filepath.Join(t.TempDir(), "ralf.db")
	gw, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Close()
	cli, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	_, k, err := cli.CreateKey(ctx, "app")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // the watcher has seen the state before the revoke
	select {
	case id := <-gw.Invalidations():
		t.Fatalf("invalidation %q without a revoke", id)
	default:
	}
	if err := cli.RevokeKey(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	cli.Close()
	select {
	case id := <-gw.Invalidations():
		if id != "*" {
			t.Fatalf("invalidation %q, want *", id)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a revoke by another process was not announced")
	}
	gw.Close()
	if _, open := <-gw.Invalidations(); open {
		t.Fatal("Invalidations not closed by Close")
	}
}

// TestRevocationRightAfterOpenIsSeen: a revoke made by another process before the
// watcher's first poll (`ralf keys revoke` just as the gateway starts) is announced too.
func TestRevocationRightAfterOpenIsSeen(t *testing.T) {
	old := revocationPoll
	revocationPoll = 200 * time.Millisecond
	defer func() { revocationPoll = old }()
	path := filepath.Join(t.TempDir(), "ralf.db")
	cli, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx := context.Background()
	_, k, err := cli.CreateKey(ctx, "app")
	if err != nil {
		t.Fatal(err)
	}
	gw, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Close()
	if err := cli.RevokeKey(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	select {
	case id := <-gw.Invalidations():
		if id != "*" {
			t.Fatalf("invalidation %q, want *", id)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a revoke made before the first poll was not announced")
	}
}
