package auth

import (
	"net/http"
	"strings"

	"github.com/ralf-gateway/ralf/core/config"
)

const (
	corsMethods = "GET, POST, DELETE, OPTIONS"
	corsHeaders = "Content-Type, Authorization, X-API-Key, X-Request-Id"
	corsExpose  = "X-Request-Id, X-Provider, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset, Retry-After, X-Should-Retry"
	corsMaxAge  = "600"
)

// CORS answers preflights itself (204) and adds CORS headers to other answers
// before calling next, so errors carry them too. cfg.AllowedOrigins holds "*"
// or exact origins; with exact origins the origin is echoed and credentials are
// allowed ("*" never is combined with credentials). A disallowed origin gets no
// CORS headers. With no origins configured it does nothing.
func CORS(cfg config.CORS) func(http.Handler) http.Handler {
	allowAll := false
	origins := map[string]bool{}
	for _, o := range cfg.AllowedOrigins {
		o = strings.TrimSpace(o)
		switch {
		case o == "":
		case o == "*":
			allowAll = true
		default:
			origins[normOrigin(o)] = true
		}
	}
	if !allowAll && len(origins) == 0 {
		return identity
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h := w.Header()
			origin := r.Header.Get("Origin")
			if !allowAll {
				// The answer depends on Origin: shared caches must key on it.
				h.Add("Vary", "Origin")
			}
			allowed := origin != "" && (allowAll || origins[normOrigin(origin)])
			if r.Method == http.MethodOptions && origin != "" && r.Header.Get("Access-Control-Request-Method") != "" {
				h.Add("Vary", "Access-Control-Request-Method")
				h.Add("Vary", "Access-Control-Request-Headers")
				if allowed {
					setAllowOrigin(h, origin, allowAll)
					h.Set("Access-Control-Allow-Methods", corsMethods)
					h.Set("Access-Control-Allow-Headers", preflightHeaders(r.Header.Get("Access-Control-Request-Headers")))
					h.Set("Access-Control-Max-Age", corsMaxAge)
				}
				w.WriteHeader(http.StatusNoContent)
				return
			}
			if allowed {
				setAllowOrigin(h, origin, allowAll)
				h.Set("Access-Control-Expose-Headers", corsExpose)
			}
			next.ServeHTTP(w, r)
		})
	}
}

func setAllowOrigin(h http.Header, origin string, allowAll bool) {
	if allowAll {
		h.Set("Access-Control-Allow-Origin", "*")
		return
	}
	h.Set("Access-Control-Allow-Origin", origin)
	h.Set("Access-Control-Allow-Credentials", "true")
}

// preflightHeaders echoes the requested headers when all are allowed (keeping
// the browser's spelling), else lists the allowed ones.
func preflightHeaders(requested string) string {
	if strings.TrimSpace(requested) == "" {
		return corsHeaders
	}
	// Browser SDKs send their own headers (the OpenAI SDK's x-stainless-*): any
	// well-formed header name is allowed; what authenticates is the key, not the
	// header list. Anything malformed gets the fixed list.
	for _, f := range strings.Split(requested, ",") {
		if f = strings.TrimSpace(f); f == "" || !validHeaderName(f) {
			return corsHeaders
		}
	}
	return requested
}

// normOrigin compares origins without case, a trailing slash or the scheme's
// default port (browsers never send :443 or :80).
func normOrigin(o string) string {
	o = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(o)), "/")
	switch {
	case strings.HasPrefix(o, "https://"):
		o = strings.TrimSuffix(o, ":443")
	case strings.HasPrefix(o, "http://"):
		o = strings.TrimSuffix(o, ":80")
	}
	return o
}

// validHeaderName reports whether h is an RFC 9110 token.
func validHeaderName(h string) bool {
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return len(h) > 0
}
