package auth

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/ralf-gateway/ralf/core/apierr"
	"github.com/ralf-gateway/ralf/core/config"
	"github.com/ralf-gateway/ralf/core/store"
)

// RateHooks are the rate limiter's metrics callbacks; nil ones are skipped.
type RateHooks struct {
	OnLimited    func()          // a request was refused with 429
	OnStoreError func(op string) // the store could not answer (op "rate_limit")
}

// rateStoreTimeout bounds one Allow call: a slow store must not stall every request.
const rateStoreTimeout = 250 * time.Millisecond

// resetLayout is ISO 8601 in UTC with milliseconds, as the seed sends it.
const resetLayout = "2006-01-02T15:04:05.000Z"

const msgRateLimited = "Rate limit exceeded"

var errNoStore = errors.New("no store configured")

// RateLimit limits each client to cfg.Requests per cfg.Window (sliding window,
// counted in st so replicas sharing a store share the limit). The bucket is the
// managed key id, a hash of the static key, or the client IP when auth is off.
// Every answer it lets through or refuses carries X-RateLimit-Limit, -Remaining
// and -Reset; a refusal is a 429 with Retry-After. When the store fails the
// request is allowed (cfg.OnStoreError "allow", the default) or refused with 503 ("deny").
func RateLimit(cfg config.Rate, st store.Store, log *zap.Logger, hooks RateHooks) func(http.Handler) http.Handler {
	if !cfg.Enabled {
		return identity
	}
	if log == nil {
		log = zap.NewNop()
	}
	limit, window := cfg.Requests, cfg.Window
	if limit <= 0 {
		limit = 10
	}
	if window <= 0 {
		window = time.Minute
	}
	deny := cfg.OnStoreError == "deny"
	var errs burst
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodOptions {
				next.ServeHTTP(w, r)
				return
			}
			bucket := bucketOf(r)
			var d store.Decision
			err := errNoStore
			if st != nil {
				ctx, cancel := context.WithTimeout(r.Context(), rateStoreTimeout)
				d, err = st.Allow(ctx, bucket, limit, window)
				cancel()
			}
			if err != nil {
				if r.Context().Err() != nil {
					return // the client is gone; nobody reads an answer
				}
				if hooks.OnStoreError != nil {
					hooks.OnStoreError("rate_limit")
				}
				if errs.fail(time.Now()) {
					log.Warn("rate limit store unavailable", zap.Bool("deny", deny), zap.Error(err))
				}
				if deny {
					apierr.Write(w, r, http.StatusServiceUnavailable, "rate limiter unavailable")
					return
				}
				next.ServeHTTP(w, r)
				return
			}
			errs.recover()
			now := time.Now()
			if d.Limit <= 0 {
				d.Limit = limit
			}
			if d.Remaining < 0 {
				d.Remaining = 0
			}
			if d.ResetAt.IsZero() {
				d.ResetAt = now.Add(window)
			}
			reset := d.ResetAt.UTC().Format(resetLayout)
			h := w.Header()
			h.Set("X-RateLimit-Limit", strconv.Itoa(d.Limit))
			h.Set("X-RateLimit-Remaining", strconv.Itoa(d.Remaining))
			h.Set("X-RateLimit-Reset", reset)
			if d.Allowed {
				next.ServeHTTP(w, r)
				return
			}
			if hooks.OnLimited != nil {
				hooks.OnLimited()
			}
			wait := d.RetryAfter
			if wait <= 0 {
				wait = d.ResetAt.Sub(now)
			}
			secs := int(math.Ceil(wait.Seconds()))
			if secs < 1 {
				secs = 1
			}
			h.Set("Retry-After", strconv.Itoa(secs))
			h.Set("Content-Type", "application/json")
			h.Del("Content-Length")
			w.WriteHeader(http.StatusTooManyRequests)
			_, _ = w.Write(limitedBody(r, reset))
		})
	}
}

// limitedBody is the seed's 429 body on /chat, OpenAI's error shape plus resetAt on /v1.
func limitedBody(r *http.Request, reset string) []byte {
	var v any
	if apierr.IsOpenAI(r) {
		v = map[string]any{
			"error":   map[string]any{"message": msgRateLimited, "type": apierr.Type(429), "code": apierr.Code(429)},
			"resetAt": reset,
		}
	} else {
		v = struct {
			Error   string `json:"error"`
			ResetAt string `json:"resetAt"`
			Status  int    `json:"status"`
		}{msgRateLimited, reset, http.StatusTooManyRequests}
	}
	b, _ := json.Marshal(v)
	return b
}

// bucketOf names the rate-limit bucket of a request; it never contains a secret.
func bucketOf(r *http.Request) string {
	if c, ok := ClientFrom(r.Context()); ok {
		switch c.Kind {
		case KindManaged:
			return "key:" + c.KeyID
		case KindStatic:
			return "static:" + c.KeyID
		case KindMaster:
			return "master"
		}
		if c.IP != "" {
			return "ip:" + ipBucket(c.IP)
		}
	}
	return "ip:" + ipBucket(ClientIP(r))
}

// ipBucket is the per-IP bucket of an address: the address for IPv4, its /64 for a
// public IPv6 address, since one host usually holds a whole /64 and could otherwise
// take a fresh bucket per request. Private (ULA), link-local and loopback IPv6 count
// by address: on a LAN, the /64 is every host's.
func ipBucket(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil || !a.Is6() || a.Is4In6() || a.IsPrivate() || a.IsLinkLocalUnicast() || a.IsLoopback() {
		return ip
	}
	p, _ := a.Prefix(64)
	return p.String()
}

// identity is the middleware of a feature that is off.
func identity(h http.Handler) http.Handler { return h }
