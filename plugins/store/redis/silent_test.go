package redis

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ralf-gateway/ralf/plugins/store/redis/redistest"
)

// TestSilentSubscriptionReplaced: a subscription whose server stops answering
// without closing the connection (a black hole) is detected by an unanswered
// ping and replaced; once the server answers again the reader gets "*".
func TestSilentSubscriptionReplaced(t *testing.T) {
	old := idleCheck
	idleCheck = 200 * time.Millisecond
	t.Cleanup(func() { idleCheck = old })

	srv := redistest.StartServer(t, redistest.Options{})
	s, err := Open("redis://"+srv.Addr+"/0", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	// Let the first subscription be confirmed before freezing the server.
	_, k, err := s.CreateKey(context.Background(), "x")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeKey(context.Background(), k.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, s.inv, func(id string) bool { return id != "*" })

	srv.Pause()
	time.Sleep(6 * idleCheck) // several idle checks: ping, silence, resubscribe
	srv.Resume()
	waitFor(t, s.inv, func(id string) bool { return id == "*" })
}

func waitFor(t *testing.T, ch <-chan string, ok func(string) bool) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case id := <-ch:
			if ok(id) {
				return
			}
		case <-timeout:
			t.Fatal("expected invalidation not delivered within 10s")
		}
	}
}

// TestCallerDeadlineBoundsACall: a Redis that stops answering (connection open)
// fails a call when the caller's deadline passes, not after go-redis's own read
// timeout: the rate limiter's 250 ms budget is what a request waits.
func TestCallerDeadlineBoundsACall(t *testing.T) {
	srv := redistest.StartServer(t, redistest.Options{})
	s, err := Open("redis://"+srv.Addr+"/0?read_timeout=30s", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if _, err := s.Allow(context.Background(), "b", 10, time.Minute); err != nil {
		t.Fatal(err)
	}
	srv.Pause()
	defer srv.Resume()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err = s.Allow(ctx, "b", 10, time.Minute)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Allow on a silent Redis: %v, want the caller's deadline (context.DeadlineExceeded)", err)
	}
}
