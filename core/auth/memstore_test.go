package auth

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/ralf-gateway/ralf/core/config"
	"github.com/ralf-gateway/ralf/core/middleware"
	"github.com/ralf-gateway/ralf/plugins/store/memory"
)

// TestWithMemoryStore runs the client flows against the real memory backend.
func TestWithMemoryStore(t *testing.T) {
	st := memory.New()
	defer st.Close()
	keys := NewKeys(st, zap.NewNop(), KeysOptions{FlushInterval: time.Hour})
	defer keys.Close()
	cfg := config.Auth{Enabled: true, MasterKey: testMaster}
	admin := RequireMaster(cfg)(AdminHandler(keys))
	chat := middleware.Chain(okHandler, Authenticate(cfg, keys, nil),
		RateLimit(config.Rate{Enabled: true, Requests: 10, Window: time.Minute}, st, nil, RateHooks{}))

	w := do(admin, reqSpec{method: http.MethodPost, path: "/admin/keys", headers: bearer(testMaster), body: `{"name":"load"}`})
	var c struct{ APIKey, ID string }
	if err := json.Unmarshal(w.Body.Bytes(), &c); err != nil || w.Code != 200 {
		t.Fatalf("create: %d %s", w.Code, w.Body)
	}

	t.Run("200 concurrent requests, limit 10", func(t *testing.T) {
		var passed, refused atomic.Int64
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := 0; i < 200; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				switch w := do(chat, reqSpec{headers: bearer(c.APIKey)}); w.Code {
				case 200:
					passed.Add(1)
				case 429:
					refused.Add(1)
				default:
					t.Errorf("status %d %s", w.Code, w.Body)
				}
			}()
		}
		close(start)
		wg.Wait()
		if passed.Load() != 10 || refused.Load() != 190 {
			t.Errorf("passed %d refused %d, want exactly 10 and 190", passed.Load(), refused.Load())
		}
	})

	t.Run("usage flushed and listed", func(t *testing.T) {
		if err := keys.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
		list, err := st.ListKeys(context.Background())
		if err != nil || len(list) != 1 {
			t.Fatalf("list: %v %v", list, err)
		}
		// Every authenticated request counts, refused by the limiter or not.
		if list[0].RequestCount != 200 || list[0].LastUsed == nil {
			t.Errorf("stored usage = %d, lastUsed %v; want 200 and set", list[0].RequestCount, list[0].LastUsed)
		}
	})

	t.Run("revoke", func(t *testing.T) {
		w := do(admin, reqSpec{method: http.MethodDelete, path: "/admin/keys", headers: bearer(testMaster), body: `{"id":"` + c.ID + `"}`})
		if w.Code != 200 {
			t.Fatalf("revoke: %d %s", w.Code, w.Body)
		}
		if w := do(chat, reqSpec{headers: bearer(c.APIKey)}); w.Code != 403 {
			t.Errorf("revoked key: %d, want 403", w.Code)
		}
	})
}
