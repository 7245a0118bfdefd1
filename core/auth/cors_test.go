package auth

import (
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/ralf-gateway/ralf/core/apierr"
	"github.com/ralf-gateway/ralf/core/config"
)

func TestCORS(t *testing.T) {
	failing := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		apierr.Write(w, r, http.StatusForbidden, "Invalid API key")
	})
	star := config.CORS{AllowedOrigins: []string{"*"}}
	list := config.CORS{AllowedOrigins: []string{"https://app.example.com", "http://localhost:5173/", "https://admin.example.com:443"}}
	preflight := func(origin, headers string) map[string]string {
		m := map[string]string{"Origin": origin, "Access-Control-Request-Method": "POST"}
		if headers != "" {
			m["Access-Control-Request-Headers"] = headers
		}
		return m
	}
	tests := []struct {
		name    string
		cfg     config.CORS
		req     reqSpec
		status  int
		want    map[string]string // "" value: header must be absent
		reached bool
	}{
		{name: "star preflight", cfg: star, req: reqSpec{method: http.MethodOptions, headers: preflight("https://x.test", "")}, status: 204,
			want: map[string]string{"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Methods": "GET, POST, DELETE, OPTIONS",
				"Access-Control-Allow-Headers": "Content-Type, Authorization, X-API-Key, X-Request-Id", "Access-Control-Max-Age": "600",
				"Access-Control-Allow-Credentials": ""}},
		{name: "preflight echoes allowed requested headers", cfg: star, req: reqSpec{method: http.MethodOptions, headers: preflight("https://x.test", "content-type,authorization")}, status: 204,
			want: map[string]string{"Access-Control-Allow-Headers": "content-type,authorization"}},
		{name: "preflight with SDK headers echoes them (OpenAI JS SDK sends x-stainless-*)", cfg: star, req: reqSpec{method: http.MethodOptions, headers: preflight("https://x.test", "authorization, content-type, x-stainless-os, x-stainless-lang")}, status: 204,
			want: map[string]string{"Access-Control-Allow-Headers": "authorization, content-type, x-stainless-os, x-stainless-lang"}},
		{name: "preflight with a malformed header name lists the allowed ones", cfg: star, req: reqSpec{method: http.MethodOptions, headers: preflight("https://x.test", "content-type, bad header")}, status: 204,
			want: map[string]string{"Access-Control-Allow-Headers": "Content-Type, Authorization, X-API-Key, X-Request-Id"}},
		{name: "star request", cfg: star, req: reqSpec{headers: map[string]string{"Origin": "https://x.test"}}, status: 403, reached: true,
			want: map[string]string{"Access-Control-Allow-Origin": "*", "Access-Control-Expose-Headers": "X-Request-Id, X-Provider, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset, Retry-After, X-Should-Retry",
				"Access-Control-Allow-Credentials": ""}},
		{name: "list preflight allowed", cfg: list, req: reqSpec{method: http.MethodOptions, headers: preflight("https://app.example.com", "")}, status: 204,
			want: map[string]string{"Access-Control-Allow-Origin": "https://app.example.com", "Access-Control-Allow-Credentials": "true", "Access-Control-Max-Age": "600"}},
		{name: "list request allowed, trailing slash in config", cfg: list, req: reqSpec{headers: map[string]string{"Origin": "http://localhost:5173"}}, status: 403, reached: true,
			want: map[string]string{"Access-Control-Allow-Origin": "http://localhost:5173", "Access-Control-Allow-Credentials": "true", "Vary": "Origin"}},
		{name: "list request allowed, default port in config", cfg: list, req: reqSpec{headers: map[string]string{"Origin": "https://admin.example.com"}}, status: 403, reached: true,
			want: map[string]string{"Access-Control-Allow-Origin": "https://admin.example.com"}},
		{name: "list preflight disallowed", cfg: list, req: reqSpec{method: http.MethodOptions, headers: preflight("https://evil.test", "")}, status: 204,
			want: map[string]string{"Access-Control-Allow-Origin": "", "Access-Control-Allow-Methods": "", "Access-Control-Allow-Credentials": ""}},
		{name: "list request disallowed", cfg: list, req: reqSpec{headers: map[string]string{"Origin": "https://app.example.com.evil.test"}}, status: 403, reached: true,
			want: map[string]string{"Access-Control-Allow-Origin": "", "Access-Control-Expose-Headers": "", "Access-Control-Allow-Credentials": ""}},
		{name: "no origin", cfg: star, req: reqSpec{}, status: 403, reached: true, want: map[string]string{"Access-Control-Allow-Origin": ""}},
		{name: "OPTIONS without preflight headers goes on", cfg: star, req: reqSpec{method: http.MethodOptions, headers: map[string]string{"Origin": "https://x.test"}}, status: 403, reached: true,
			want: map[string]string{"Access-Control-Allow-Origin": "*"}},
		{name: "unconfigured", cfg: config.CORS{}, req: reqSpec{headers: map[string]string{"Origin": "https://x.test"}}, status: 403, reached: true,
			want: map[string]string{"Access-Control-Allow-Origin": ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var reached atomic.Bool
			h := CORS(tt.cfg)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				reached.Store(true)
				failing(w, r)
			}))
			w := do(h, tt.req)
			if w.Code != tt.status || reached.Load() != tt.reached {
				t.Fatalf("status %d reached %v, want %d %v", w.Code, reached.Load(), tt.status, tt.reached)
			}
			for k, v := range tt.want {
				got := strings.Join(w.Header().Values(k), ", ")
				if k == "Vary" {
					if !strings.Contains(got, v) {
						t.Errorf("Vary = %q, want it to contain %q", got, v)
					}
					continue
				}
				if got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
		})
	}
}

func TestCORSUnconfiguredIsIdentity(t *testing.T) {
	var n atomic.Int64
	h := &countingHandler{n: &n}
	if CORS(config.CORS{})(h) != http.Handler(h) {
		t.Error("CORS with no origins wraps the handler: want identity")
	}
}
