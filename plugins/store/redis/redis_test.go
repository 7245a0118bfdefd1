package redis_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/ralf-gateway/ralf/core/store"
	ralfredis "github.com/ralf-gateway/ralf/plugins/store/redis"
	"github.com/ralf-gateway/ralf/plugins/store/redis/redistest"
	"github.com/ralf-gateway/ralf/plugins/store/storetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// opener returns an open function for storetest: each distinct t gets its own
// key prefix on the one server, the same t reopens the same data.
func opener(addr string) func(t *testing.T) store.Store {
	var mu sync.Mutex
	prefixes := map[*testing.T]string{}
	return func(t *testing.T) store.Store {
		mu.Lock()
		p, ok := prefixes[t]
		if !ok {
			p = fmt.Sprintf("t%d", len(prefixes))
			prefixes[t] = p
		}
		mu.Unlock()
		return open(t, fmt.Sprintf("redis://%s/0?prefix=%s", addr, p))
	}
}

func open(t *testing.T, url string) *ralfredis.Store {
	t.Helper()
	s, err := ralfredis.Open(url, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	addr, _ := redistest.Start(t)
	storetest.Run(t, opener(addr))
}

func TestOpenByURL(t *testing.T) {
	srv := redistest.StartServer(t, redistest.Options{Password: "s3cret-pass"})
	tests := []struct {
		name    string
		url     string
		wantErr bool
	}{
		{"password", "redis://:s3cret-pass@" + srv.Addr + "/2", false},
		{"user and password", "redis://default:s3cret-pass@" + srv.Addr + "/0", false},
		{"wrong password", "redis://:wrong-s3cret-pass@" + srv.Addr + "/0", true},
		{"no password", "redis://" + srv.Addr + "/0", true},
		{"bad db", "redis://:s3cret-pass@" + srv.Addr + "/notanumber", true},
		{"unknown option", "redis://:s3cret-pass@" + srv.Addr + "/0?bogus=1", true},
		{"malformed", "redis://:s3cret-pass@" + srv.Addr + ":x:y/0", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := ralfredis.Open(tc.url, zap.NewNop())
			if tc.wantErr {
				if err == nil {
					_ = s.Close()
					t.Fatal("opened")
				}
				if strings.Contains(err.Error(), "s3cret-pass") {
					t.Fatalf("error shows the password: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if _, _, err := s.CreateKey(context.Background(), "x"); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestRegistered(t *testing.T) {
	addr, _ := redistest.Start(t)
	s, err := store.Open("redis://"+addr+"/0", zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, ok := s.(*ralfredis.Store); !ok {
		t.Fatalf("redis:// opened %T", s)
	}
	if !store.Known("rediss") {
		t.Error("rediss:// (TLS) not registered")
	}
}

// TestOpenWhileRedisIsDown: a replica (re)started during a Redis outage starts, as
// running replicas ride the outage out (no crash loop): Open returns at once, calls
// fail fast meanwhile, and everything works, invalidations included, once Redis is back.
func TestOpenWhileRedisIsDown(t *testing.T) {
	srv := redistest.StartServer(t, redistest.Options{})
	srv.Stop()
	done := make(chan error, 1)
	var a *ralfredis.Store
	go func() {
		var err error
		a, err = ralfredis.Open("redis://"+srv.Addr+"/0", nil)
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Open with Redis down: %v, want a store that connects later", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Open hung on a dead redis")
	}
	defer a.Close()
	ctx := context.Background()
	if _, err := a.Allow(ctx, "down", 5, time.Second); err == nil {
		t.Fatal("Allow succeeded with redis down")
	}

	srv.StartAgain()
	var back error
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if _, back = a.Allow(ctx, "up", 5, time.Second); back == nil {
			break
		}
	}
	if back != nil {
		t.Fatalf("calls still failing after redis came: %v", back)
	}
	// Subscribed at last: what was cached meanwhile is forgotten, since revocations
	// may have been missed.
	expectInvalidation(t, a.Invalidations(), "*")
	b := open(t, "redis://"+srv.Addr+"/0")
	secret, k, err := b.CreateKey(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if err := b.RevokeKey(ctx, secret); err != nil {
		t.Fatal(err)
	}
	expectInvalidation(t, a.Invalidations(), k.ID)
}

// TestReplicasShareKeys: two stores on one redis act as two gateway replicas.
func TestReplicasShareKeys(t *testing.T) {
	addr, _ := redistest.Start(t)
	a := open(t, "redis://"+addr+"/0")
	b := open(t, "redis://"+addr+"/0")
	ctx := context.Background()

	secret, k, err := a.CreateKey(ctx, "shared")
	if err != nil {
		t.Fatal(err)
	}
	got, ok, err := b.LookupKey(ctx, secret)
	if err != nil || !ok || got.ID != k.ID {
		t.Fatalf("replica B: %+v, %v, %v; want the key created on A", got, ok, err)
	}
	if err := a.RecordUsage(ctx, []store.Usage{{KeyID: k.ID, Requests: 2, LastUsed: time.Now()}}); err != nil {
		t.Fatal(err)
	}
	if err := b.RecordUsage(ctx, []store.Usage{{KeyID: k.ID, Requests: 3, LastUsed: time.Now()}}); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := a.LookupKey(ctx, secret); got.RequestCount != 5 {
		t.Errorf("usage from both replicas = %d, want 5", got.RequestCount)
	}
	if err := a.RevokeKey(ctx, secret); err != nil {
		t.Fatal(err)
	}
	expectInvalidation(t, b.Invalidations(), k.ID)
	if _, ok, _ := b.LookupKey(ctx, secret); ok {
		t.Fatal("replica B still accepts a key revoked on A")
	}
	// A different prefix is a different gateway: it sees none of this.
	c := open(t, "redis://"+addr+"/0?prefix=other")
	if list, err := c.ListKeys(ctx); err != nil || len(list) != 0 {
		t.Fatalf("other prefix lists %d keys, %v", len(list), err)
	}
	if err := c.RevokeKey(ctx, k.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("other prefix revoke = %v, want ErrNotFound", err)
	}
}

func expectInvalidation(t *testing.T, ch <-chan string, want string) {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case id, ok := <-ch:
			if !ok {
				t.Fatalf("invalidations closed while waiting for %q", want)
			}
			if id == want {
				return
			}
		case <-timeout:
			t.Fatalf("no invalidation %q within 5s", want)
		}
	}
}

// TestReplicasShareLimit: 2 replicas × 100 concurrent requests, one limit.
func TestReplicasShareLimit(t *testing.T) {
	addr, _ := redistest.Start(t)
	a := open(t, "redis://"+addr+"/0")
	b := open(t, "redis://"+addr+"/0")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, limit := range []int{1, 10, 37} {
		t.Run(fmt.Sprint(limit), func(t *testing.T) {
			res := storetest.Hammer(ctx, []store.Store{a, b}, fmt.Sprintf("shared-%d", limit), limit, time.Minute, 200)
			if res.Err != nil {
				t.Fatal(res.Err)
			}
			if res.Allowed != limit || res.Denied != 200-limit {
				t.Fatalf("allowed %d, denied %d across two replicas; want exactly %d allowed", res.Allowed, res.Denied, limit)
			}
		})
	}
}

// TestRedisDownAndBack: with Redis gone every call fails quickly; when it
// returns, calls work again without any action and the subscription is back
// (announced by "*", since invalidations may have been missed).
func TestRedisDownAndBack(t *testing.T) {
	srv := redistest.StartServer(t, redistest.Options{})
	a := open(t, "redis://"+srv.Addr+"/0")
	b := open(t, "redis://"+srv.Addr+"/0")
	ctx := context.Background()
	secret, _, err := a.CreateKey(ctx, "before")
	if err != nil {
		t.Fatal(err)
	}
	drain(b.Invalidations())

	srv.Stop()
	calls := []struct {
		name string
		call func(context.Context) error
	}{
		{"LookupKey", func(ctx context.Context) error { _, _, err := a.LookupKey(ctx, secret); return err }},
		{"Allow", func(ctx context.Context) error { _, err := a.Allow(ctx, "down", 5, time.Second); return err }},
		{"CreateKey", func(ctx context.Context) error { _, _, err := a.CreateKey(ctx, "during"); return err }},
		{"ListKeys", func(ctx context.Context) error { _, err := a.ListKeys(ctx); return err }},
		{"RevokeKey", func(ctx context.Context) error { return a.RevokeKey(ctx, secret) }},
		{"RecordUsage", func(ctx context.Context) error {
			return a.RecordUsage(ctx, []store.Usage{{KeyID: "key_x", Requests: 1}})
		}},
	}
	for _, c := range calls {
		t.Run("down/"+c.name, func(t *testing.T) {
			// No deadline from the caller: the store's own timeouts must end the call.
			done := make(chan error, 1)
			go func() { done <- c.call(context.Background()) }()
			select {
			case err := <-done:
				if err == nil {
					t.Fatal("succeeded with redis down")
				}
				if strings.Contains(err.Error(), secret) {
					t.Fatalf("error contains the secret: %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("hung with redis down")
			}
		})
	}

	srv.StartAgain()
	// The server came back empty (no persistence): create again once it answers.
	var back error
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if _, back = a.Allow(ctx, "up", 5, time.Second); back == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if back != nil {
		t.Fatalf("calls still failing after redis returned: %v", back)
	}
	expectInvalidation(t, b.Invalidations(), "*")
	secret2, k2, err := a.CreateKey(ctx, "after")
	if err != nil {
		t.Fatal(err)
	}
	if err := a.RevokeKey(ctx, secret2); err != nil {
		t.Fatal(err)
	}
	expectInvalidation(t, b.Invalidations(), k2.ID)
	if _, ok, err := b.LookupKey(ctx, secret2); err != nil || ok {
		t.Fatalf("lookup of revoked key after recovery: %v, %v", ok, err)
	}
}

// TestRedisHung: a server that accepts connections but never answers (paused)
// must not hang callers either; when it wakes up, everything works again.
func TestRedisHung(t *testing.T) {
	srv := redistest.StartServer(t, redistest.Options{})
	a := open(t, "redis://"+srv.Addr+"/0")
	b := open(t, "redis://"+srv.Addr+"/0")
	ctx := context.Background()
	secret, k, err := a.CreateKey(ctx, "hung")
	if err != nil {
		t.Fatal(err)
	}
	// A revoke proves b's subscription is live before the server freezes.
	_, probe, err := a.CreateKey(ctx, "probe")
	if err != nil {
		t.Fatal(err)
	}
	if err := a.RevokeKey(ctx, probe.ID); err != nil {
		t.Fatal(err)
	}
	expectInvalidation(t, b.Invalidations(), probe.ID)

	srv.Pause()
	resumed := false
	defer func() {
		if !resumed {
			srv.Resume()
		}
	}()
	for _, name := range []string{"LookupKey", "Allow"} {
		t.Run("paused/"+name, func(t *testing.T) {
			done := make(chan error, 1)
			go func() {
				var err error
				if name == "Allow" {
					_, err = a.Allow(context.Background(), "hung", 5, time.Second)
				} else {
					_, _, err = a.LookupKey(context.Background(), secret)
				}
				done <- err
			}()
			select {
			case err := <-done:
				if err == nil {
					t.Fatal("succeeded against a paused redis")
				}
			case <-time.After(10 * time.Second):
				t.Fatal("hung against a paused redis")
			}
		})
	}
	srv.Resume()
	resumed = true

	var err2 error
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if _, _, err2 = a.LookupKey(ctx, secret); err2 == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err2 != nil {
		t.Fatalf("still failing after the server resumed: %v", err2)
	}
	if err := a.RevokeKey(ctx, k.ID); err != nil {
		t.Fatal(err)
	}
	expectInvalidation(t, b.Invalidations(), k.ID)
}

func drain(ch <-chan string) {
	for {
		select {
		case <-ch:
		case <-time.After(200 * time.Millisecond):
			return
		}
	}
}

// TestRateLimitUsesRedisClock: a window is measured by Redis, so the decision
// fields agree with each other whatever the local clock does.
func TestLimitFieldsConsistent(t *testing.T) {
	addr, _ := redistest.Start(t)
	s := open(t, "redis://"+addr+"/0")
	ctx := context.Background()
	var last store.Decision
	for range 4 {
		d, err := s.Allow(ctx, "clock", 3, 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		last = d
	}
	if last.Allowed || last.RetryAfter <= 0 || last.RetryAfter > 30*time.Second {
		t.Fatalf("4th of 3: %+v", last)
	}
	if diff := time.Until(last.ResetAt) - last.RetryAfter; diff > time.Second || diff < -time.Second {
		t.Fatalf("resetAt in %v but retryAfter %v", time.Until(last.ResetAt), last.RetryAfter)
	}
}
