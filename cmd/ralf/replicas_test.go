package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ralf-gateway/ralf/core/mock"
	"github.com/ralf-gateway/ralf/plugins/store/redis/redistest"
)

const masterKey = "master-test-key-0123456789"

func replicaConfig(mockURL, redisAddr string, limit int) string {
	return fmt.Sprintf(`
server: {listen: "127.0.0.1:3000", shutdown_timeout: 2s}
log: {level: info}
providers:
  - {name: up, base_url: "%s/v1", model: "mock+chunks=2"}
auth: {enabled: true, master_key: %s}
limits: {rate: {enabled: true, requests: %d, window: 30s, on_store_error: allow}}
store: redis://%s/0
`, mockURL, masterKey, limit, redisAddr)
}

func call(t *testing.T, method, url, key, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

const chatBody = `{"messages":[{"role":"user","content":"Hello"}]}`

// TestReplicasShareKeysLimitsAndRevocations: three gateway processes on one Redis.
func TestReplicasShareKeysLimitsAndRevocations(t *testing.T) {
	rs := redistest.StartServer(t, redistest.Options{})
	mk, err := mock.Start(mock.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer mk.Close()
	var reps []*proc
	for i := 0; i < 3; i++ {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "gateway.yaml"), []byte(replicaConfig(mk.URL(), rs.Addr, 10)), 0o644)
		reps = append(reps, startRalf(t, dir, nil))
	}

	// A key created on replica 0 works on all of them.
	status, body := call(t, "POST", reps[0].url+"/admin/keys", masterKey, `{"name":"app"}`)
	var created struct {
		APIKey string `json:"apiKey"`
		ID     string `json:"id"`
	}
	if status != 200 || json.Unmarshal([]byte(body), &created) != nil || created.APIKey == "" {
		t.Fatalf("create: %d %s", status, body)
	}

	// The limit is global: 30 requests sprayed over 3 replicas, exactly 10 pass.
	var mu sync.Mutex
	counts := map[int]int{}
	var wg sync.WaitGroup
	for i := 0; i < 30; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			s, _ := call(t, "POST", reps[i%3].url+"/chat", created.APIKey, chatBody)
			mu.Lock()
			counts[s]++
			mu.Unlock()
		}(i)
	}
	wg.Wait()
	if counts[200] != 10 || counts[429] != 20 {
		t.Fatalf("statuses %v, want 10×200 and 20×429 across all replicas", counts)
	}

	// A revoke through replica 1 stops the key on every replica within a second.
	status, body = call(t, "DELETE", reps[1].url+"/admin/keys", masterKey, `{"id":"`+created.ID+`"}`)
	if status != 200 {
		t.Fatalf("revoke: %d %s", status, body)
	}
	deadline := time.Now().Add(3 * time.Second)
	for _, r := range reps {
		for {
			s, _ := call(t, "GET", r.url+"/v1/models", created.APIKey, "")
			if s == 403 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("replica %s still accepts a revoked key (status %d)", r.url, s)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// TestRedisDownKeepsKnownKeysServing: Redis stops mid-run; a key already seen keeps
// working (the limiter fails open), nothing hangs, and all recovers when Redis returns.
func TestRedisDownKeepsKnownKeysServing(t *testing.T) {
	rs := redistest.StartServer(t, redistest.Options{})
	mk, err := mock.Start(mock.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer mk.Close()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "gateway.yaml"), []byte(replicaConfig(mk.URL(), rs.Addr, 1000)), 0o644)
	p := startRalf(t, dir, nil)
	status, body := call(t, "POST", p.url+"/admin/keys", masterKey, `{"name":"app"}`)
	var created struct {
		APIKey string `json:"apiKey"`
	}
	if status != 200 || json.Unmarshal([]byte(body), &created) != nil {
		t.Fatalf("create: %d %s", status, body)
	}
	if s, b := call(t, "POST", p.url+"/chat", created.APIKey, chatBody); s != 200 {
		t.Fatalf("before: %d %s", s, b)
	}

	rs.Stop()
	for i := 0; i < 5; i++ {
		start := time.Now()
		s, b := call(t, "POST", p.url+"/chat", created.APIKey, chatBody)
		if s != 200 {
			t.Fatalf("Redis down: known key got %d %s", s, b)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("a request hung on the dead Redis for %v", d)
		}
	}
	if s, _ := call(t, "POST", p.url+"/chat", "sk_never_seen_0000000000000000000000000000000000000000", chatBody); s != 503 && s != 403 {
		t.Fatalf("unknown key with Redis down: %d, want 503", s)
	}
	if !strings.Contains(p.logs.String(), "store") {
		t.Fatalf("no log line about the store outage:\n%s", p.logs.String())
	}

	rs.StartAgain()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s, _ := call(t, "POST", p.url+"/admin/keys", masterKey, `{"name":"after"}`)
		if s == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no recovery after Redis came back (status %d)", s)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
