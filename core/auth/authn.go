package auth

import (
	"errors"
	"net/http"
	"strconv"
	"strings"

	"go.uber.org/zap"

	"github.com/ralf-gateway/ralf/core/apierr"
	"github.com/ralf-gateway/ralf/core/config"
	"github.com/ralf-gateway/ralf/core/middleware"
)

// Client-facing messages (kept as in the seed README).
const (
	msgKeyRequired    = "API key required. Provide it via Authorization: Bearer <key> or X-API-Key header"
	msgInvalidKey     = "Invalid API key"
	msgStoreDown      = "key store unavailable"
	msgMasterRequired = "Master key required"
	msgMasterMissing  = "Master key required. Provide it via Authorization: Bearer <key> or X-API-Key header"
	msgAdminDisabled  = "Admin API disabled: set auth.master_key (MASTER_API_KEY)"
)

// managedPrefix is how every managed key starts: anything else is not worth a store lookup.
const managedPrefix = "sk_"

// Authenticate guards client routes. With cfg.Enabled a request needs a static
// key from cfg.Keys or a managed key known to keys (the master key is not a
// client key); otherwise it runs as an anonymous client identified by its IP.
// OPTIONS requests (CORS preflights) pass through untouched.
func Authenticate(cfg config.Auth, keys *Keys, log *zap.Logger) func(http.Handler) http.Handler {
	if log == nil {
		log = zap.NewNop()
	}
	if !cfg.Enabled {
		return func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Method == http.MethodOptions {
					next.ServeHTTP(w, r)
					return
				}
				c := Client{Name: "", Kind: KindAnonymous, IP: ClientIP(r)}
				next.ServeHTTP(w, r.WithContext(WithClient(r.Context(), c)))
			})
		}
	}
	static := newStaticSet(cfg.Keys)
	master := strings.TrimSpace(cfg.MasterKey)
	masterDigest := digest(master)
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodOptions {
				next.ServeHTTP(w, r)
				return
			}
			secret := presentedKey(r)
			if secret == "" {
				apierr.Write(w, r, http.StatusUnauthorized, msgKeyRequired)
				return
			}
			if len(secret) > maxKeyLen {
				apierr.Write(w, r, http.StatusForbidden, msgInvalidKey)
				return
			}
			d := digest(secret)
			ip := ClientIP(r)
			var c Client
			if i := static.match(d); i >= 0 {
				c = Client{Name: "static-" + strconv.Itoa(i+1), KeyID: static.ids[i], Kind: KindStatic, IP: ip}
			} else if master != "" && equalDigest(d, masterDigest) {
				// The master key only opens the admin API: a leaked client
				// config must not hold it, so refuse it here like any bad key.
				apierr.Write(w, r, http.StatusForbidden, msgInvalidKey)
				return
			} else if !strings.HasPrefix(secret, managedPrefix) || keys == nil {
				apierr.Write(w, r, http.StatusForbidden, msgInvalidKey)
				return
			} else {
				mc, err := keys.Authenticate(r.Context(), secret)
				switch {
				case err == nil:
					c = mc
					c.IP = ip
				case errors.Is(err, ErrInvalidKey):
					apierr.Write(w, r, http.StatusForbidden, msgInvalidKey)
					return
				default:
					apierr.Write(w, r, http.StatusServiceUnavailable, msgStoreDown)
					return
				}
			}
			middleware.InfoFrom(r.Context()).Client = c.Name
			next.ServeHTTP(w, r.WithContext(WithClient(r.Context(), c)))
		})
	}
}

// RequireMaster guards the admin API (and /metrics with protect_metrics): the
// request must carry the master key. With no master key configured the admin
// API is off.
func RequireMaster(cfg config.Auth) func(http.Handler) http.Handler {
	master := strings.TrimSpace(cfg.MasterKey)
	if master == "" {
		return func(http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				apierr.Write(w, r, http.StatusForbidden, msgAdminDisabled)
			})
		}
	}
	want := digest(master)
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			secret := presentedKey(r)
			if secret == "" {
				apierr.Write(w, r, http.StatusUnauthorized, msgMasterMissing)
				return
			}
			if !equalDigest(digest(secret), want) {
				apierr.Write(w, r, http.StatusForbidden, msgMasterRequired)
				return
			}
			ctx := WithClient(r.Context(), Client{Name: "master", Kind: KindMaster, IP: ClientIP(r)})
			next.ServeHTTP(w, r.WithContext(ctx))
		})
	}
}
