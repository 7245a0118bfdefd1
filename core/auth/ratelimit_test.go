package auth

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/ralf-gateway/ralf/core/config"
)

var okHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(200) })

var isoMillis = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$`)

func TestRateLimitConcurrentExact(t *testing.T) {
	st := newFakeStore(false)
	var limited atomic.Int64
	h := RateLimit(config.Rate{Enabled: true, Requests: 10, Window: time.Minute}, st, zap.NewNop(),
		RateHooks{OnLimited: func() { limited.Add(1) }})(okHandler)
	var passed, refused atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			w := do(h, reqSpec{})
			switch w.Code {
			case 200:
				passed.Add(1)
			case 429:
				refused.Add(1)
			default:
				t.Errorf("status %d", w.Code)
			}
		}()
	}
	close(start)
	wg.Wait()
	if passed.Load() != 10 || refused.Load() != 190 {
		t.Errorf("passed %d refused %d, want exactly 10 and 190", passed.Load(), refused.Load())
	}
	if limited.Load() != 190 {
		t.Errorf("OnLimited called %d times, want 190", limited.Load())
	}
}

func TestRateLimitHeadersAndBody(t *testing.T) {
	tests := []struct {
		name string
		path string
		// checks the 429 body
		check func(t *testing.T, body map[string]any, reset string)
	}{
		{"chat", "/chat", func(t *testing.T, b map[string]any, reset string) {
			if b["error"] != "Rate limit exceeded" || b["status"] != float64(429) || b["resetAt"] != reset {
				t.Errorf("429 body = %v", b)
			}
		}},
		{"openai", "/v1/chat/completions", func(t *testing.T, b map[string]any, reset string) {
			e, _ := b["error"].(map[string]any)
			if e["message"] != "Rate limit exceeded" || e["type"] != "rate_limit_error" || e["code"] != "rate_limit_exceeded" || b["resetAt"] != reset {
				t.Errorf("429 body = %v", b)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := newFakeStore(false)
			h := RateLimit(config.Rate{Enabled: true, Requests: 3, Window: 30 * time.Second}, st, nil, RateHooks{})(okHandler)
			for i := 0; i < 3; i++ {
				w := do(h, reqSpec{path: tt.path})
				if w.Code != 200 {
					t.Fatalf("request %d: %d", i, w.Code)
				}
				if got := w.Header().Get("X-RateLimit-Limit"); got != "3" {
					t.Errorf("X-RateLimit-Limit = %q", got)
				}
				if got := w.Header().Get("X-RateLimit-Remaining"); got != strconv.Itoa(2-i) {
					t.Errorf("request %d: X-RateLimit-Remaining = %q, want %d", i, got, 2-i)
				}
				if got := w.Header().Get("X-RateLimit-Reset"); !isoMillis.MatchString(got) {
					t.Errorf("X-RateLimit-Reset = %q, want ISO 8601 UTC with ms", got)
				}
			}
			w := do(h, reqSpec{path: tt.path})
			if w.Code != 429 {
				t.Fatalf("4th request: %d", w.Code)
			}
			reset := w.Header().Get("X-RateLimit-Reset")
			if !isoMillis.MatchString(reset) || w.Header().Get("X-RateLimit-Remaining") != "0" || w.Header().Get("X-RateLimit-Limit") != "3" {
				t.Errorf("429 headers = %v", w.Header())
			}
			ra, err := strconv.Atoi(w.Header().Get("Retry-After"))
			if err != nil || ra < 1 || ra > 30 {
				t.Errorf("Retry-After = %q, want whole seconds in [1,30]", w.Header().Get("Retry-After"))
			}
			rt, err := time.Parse(time.RFC3339Nano, reset)
			if err != nil || rt.Before(time.Now().Add(-time.Second)) || rt.After(time.Now().Add(31*time.Second)) {
				t.Errorf("reset %q is not within the window", reset)
			}
			var body map[string]any
			if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
				t.Fatalf("429 body %q: %v", w.Body, err)
			}
			tt.check(t, body, reset)
		})
	}
}

func TestRateLimitRetryAfterAtLeastOne(t *testing.T) {
	st := newFakeStore(false)
	h := RateLimit(config.Rate{Enabled: true, Requests: 1, Window: 10 * time.Millisecond}, st, nil, RateHooks{})(okHandler)
	// Freeze the store's clock so the second request is refused with < 1s left.
	now := time.Now()
	st.now = func() time.Time { return now }
	do(h, reqSpec{})
	w := do(h, reqSpec{})
	if w.Code != 429 || w.Header().Get("Retry-After") != "1" {
		t.Errorf("got %d Retry-After %q, want 429 with 1", w.Code, w.Header().Get("Retry-After"))
	}
}

func TestRateLimitBuckets(t *testing.T) {
	st := newFakeStore(false)
	keys, _ := newTestKeys(t, st, KeysOptions{})
	managed, mk := mustCreate(t, keys, "m")
	authn := Authenticate(config.Auth{Enabled: true, Keys: []string{testStatic, testStatic2}}, keys, nil)
	limit := RateLimit(config.Rate{Enabled: true, Requests: 2, Window: time.Minute}, st, nil, RateHooks{})
	h := authn(limit(okHandler))
	for _, k := range []string{managed, testStatic, testStatic2} {
		for i := 0; i < 2; i++ {
			if w := do(h, reqSpec{headers: bearer(k)}); w.Code != 200 {
				t.Fatalf("key %d-th request: %d (buckets must be per client)", i, w.Code)
			}
		}
		if w := do(h, reqSpec{headers: bearer(k)}); w.Code != 429 {
			t.Fatalf("3rd request: %d, want 429", w.Code)
		}
	}
	buckets := st.buckets()
	if len(buckets) != 3 {
		t.Fatalf("buckets = %v, want 3", buckets)
	}
	var sawManaged bool
	for _, b := range buckets {
		if strings.Contains(b, testStatic) || strings.Contains(b, testStatic2) || strings.Contains(b, managed) {
			t.Errorf("bucket %q contains a key", b)
		}
		sawManaged = sawManaged || b == "key:"+mk.ID
	}
	if !sawManaged {
		t.Errorf("buckets %v lack the managed key id", buckets)
	}

	// Auth off: per client IP.
	st2 := newFakeStore(false)
	h2 := Authenticate(config.Auth{}, nil, nil)(RateLimit(config.Rate{Enabled: true, Requests: 1, Window: time.Minute}, st2, nil, RateHooks{})(okHandler))
	do(h2, reqSpec{})
	if b := st2.buckets(); len(b) != 1 || b[0] != "ip:203.0.113.7" {
		t.Errorf("auth off buckets = %v, want [ip:203.0.113.7]", b)
	}
}

// TestRateLimitIPv6ByPrefix: with auth off, IPv6 clients are limited per /64: one host
// holds a whole /64 and must not get a fresh bucket per address.
func TestRateLimitIPv6ByPrefix(t *testing.T) {
	st := newFakeStore(false)
	h := Authenticate(config.Auth{}, nil, nil)(RateLimit(config.Rate{Enabled: true, Requests: 2, Window: time.Minute}, st, nil, RateHooks{})(okHandler))
	send := func(addr string) int {
		r := httptest.NewRequest(http.MethodPost, "/chat", strings.NewReader(""))
		r.RemoteAddr = addr
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Code
	}
	codes := []int{send("[2001:db8:1:2::1]:1000"), send("[2001:db8:1:2:aaaa::7]:1001"), send("[2001:db8:1:2:ffff:ffff:ffff:ffff]:1002")}
	if codes[0] != 200 || codes[1] != 200 || codes[2] != 429 {
		t.Fatalf("three addresses of one /64: %v, want 200 200 429", codes)
	}
	if c := send("[2001:db8:1:3::1]:1000"); c != 200 {
		t.Fatalf("another /64: %d, want its own bucket", c)
	}
	// IPv4, IPv4 mapped into IPv6, and LAN addresses (ULA, link-local, with their
	// zone) stay per address.
	if c := send("[::ffff:203.0.113.9]:1000"); c != 200 {
		t.Fatalf("IPv4-mapped: %d", c)
	}
	for _, lan := range []string{"[fd00:1:2:3::1]", "[fd00:1:2:3::2]", "[fe80::1%eth0]", "[fe80::1%eth1]", "[fe80::2%eth0]"} {
		for i := 0; i < 2; i++ {
			if c := send(lan + ":1000"); c != 200 {
				t.Fatalf("%s, request %d: %d, want a bucket of its own", lan, i, c)
			}
		}
	}
	if b := st.buckets(); !slices.Contains(b, "ip:2001:db8:1:2::/64") || !slices.Contains(b, "ip:::ffff:203.0.113.9") {
		t.Fatalf("buckets %v", b)
	}
}

func TestRateLimitStoreError(t *testing.T) {
	tests := []struct {
		policy string
		status int
	}{
		{"", 200}, {"allow", 200}, {"deny", 503},
	}
	for _, tt := range tests {
		t.Run("policy "+tt.policy, func(t *testing.T) {
			st := newFakeStore(false)
			st.down.Store(true)
			core, logs := observer.New(zapcore.DebugLevel)
			var errs errCounter
			h := RateLimit(config.Rate{Enabled: true, Requests: 1, Window: time.Minute, OnStoreError: tt.policy}, st, zap.New(core),
				RateHooks{OnStoreError: errs.hook})(okHandler)
			for i := 0; i < 5; i++ {
				if w := do(h, reqSpec{}); w.Code != tt.status {
					t.Fatalf("status %d, want %d", w.Code, tt.status)
				}
			}
			if n := errs.get("rate_limit"); n != 5 {
				t.Errorf("OnStoreError(rate_limit) = %d, want 5", n)
			}
			if n := logs.Len(); n != 1 {
				t.Errorf("log lines = %d for one outage, want 1", n)
			}
		})
	}
}

func TestRateLimitOffAndPreflight(t *testing.T) {
	var calls atomic.Int64
	h := &countingHandler{n: &calls}
	if got := RateLimit(config.Rate{Enabled: false, Requests: 1}, newFakeStore(false), nil, RateHooks{})(h); got != http.Handler(h) {
		t.Error("disabled RateLimit wraps the handler: want identity")
	}
	st := newFakeStore(false)
	lh := RateLimit(config.Rate{Enabled: true, Requests: 1, Window: time.Minute}, st, nil, RateHooks{})(h)
	for i := 0; i < 3; i++ {
		if w := do(lh, reqSpec{method: http.MethodOptions}); w.Code != 200 || w.Header().Get("X-RateLimit-Limit") != "" {
			t.Errorf("OPTIONS: %d %v, want passed through unlimited", w.Code, w.Header())
		}
	}
	if len(st.buckets()) != 0 {
		t.Error("OPTIONS counted against the limit")
	}
}

type countingHandler struct{ n *atomic.Int64 }

func (c *countingHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) { c.n.Add(1) }
