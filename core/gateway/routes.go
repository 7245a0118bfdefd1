package gateway

import (
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/gorilla/mux"

	"github.com/ralf-gateway/ralf/core/apierr"
	"github.com/ralf-gateway/ralf/core/auth"
	"github.com/ralf-gateway/ralf/core/metrics"
	"github.com/ralf-gateway/ralf/core/middleware"
)

// routes builds the handler of one generation: its middleware are built from that
// generation's config, so a reload changes auth, limits and CORS all at once.
func (g *Gateway) routes(s *snapshot) http.Handler {
	cfg := s.cfg
	r := mux.NewRouter()
	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		apierr.Write(w, r, http.StatusNotFound, "Not found: "+r.Method+" "+middleware.RedactPath(r.URL.Path))
	})
	var allowed []allowRule // for the Allow header of a 405
	r.MethodNotAllowedHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, a := range allowed {
			if a.path.MatchString(r.URL.Path) {
				w.Header().Set("Allow", a.methods)
				break
			}
		}
		apierr.Write(w, r, http.StatusMethodNotAllowed, "Method "+r.Method+" not allowed on "+middleware.RedactPath(r.URL.Path))
	})

	authn := auth.Authenticate(cfg.Auth, g.keys, g.log.Named("auth"))
	limit := auth.RateLimit(cfg.Limits.Rate, g.store, g.log.Named("ratelimit"), auth.RateHooks{
		OnLimited:    g.m.RateLimited,
		OnStoreError: g.m.StoreError,
	})
	r.Handle("/chat", middleware.Chain(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.serveChat(w, r, s)
	}), authn, limit)).Methods(http.MethodPost)
	r.Handle("/v1/chat/completions", middleware.Chain(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.serveOpenAI(w, r, s)
	}), authn, limit)).Methods(http.MethodPost)
	r.Handle("/v1/models", middleware.Chain(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.serveModels(w, r, s)
	}), authn)).Methods(http.MethodGet)
	r.Handle("/v1/models/{id:.+}", middleware.Chain(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.serveModel(w, r, s)
	}), authn)).Methods(http.MethodGet)
	r.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) { g.serveHealth(w, r, s) }).Methods(http.MethodGet, http.MethodHead)
	var metricsH http.Handler = g.m.Handler(metrics.HandlerOptions{})
	if cfg.Auth.ProtectMetrics {
		metricsH = auth.RequireMaster(cfg.Auth)(metricsH)
	}
	r.Handle("/metrics", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Cooldowns end by time: refresh provider_up at scrape, for the generation being
		// served now (a scrape that began before a reload must not bring back its providers).
		// Under Apply's lock: a reload cannot publish its set in between.
		g.mu.Lock()
		g.publishProviderStates(g.cur.Load())
		g.mu.Unlock()
		metricsH.ServeHTTP(w, r)
	})).Methods(http.MethodGet, http.MethodHead) // the metrics handler answers HEAD too, as /health does
	if g.keys != nil {
		r.PathPrefix("/admin/keys").Handler(auth.RequireMaster(cfg.Auth)(auth.AdminHandler(g.keys)))
	}
	r.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{
			"name":      "ralf",
			"endpoints": []string{"POST /chat", "POST /v1/chat/completions", "GET /v1/models", "GET /v1/models/{id}", "GET /health", "GET /metrics", "/admin/keys"},
		})
	}).Methods(http.MethodGet)

	_ = r.Walk(func(route *mux.Route, _ *mux.Router, _ []*mux.Route) error {
		path, err1 := route.GetPathRegexp()
		methods, err2 := route.GetMethods()
		if err1 == nil && err2 == nil {
			allowed = append(allowed, allowRule{regexp.MustCompile(path), strings.Join(methods, ", ")})
		}
		return nil
	})

	// Recover sits inside AccessLog: a panic's 500 is then what the access line and
	// the metrics record (outside, they saw the 200 of a response never written),
	// and the panic line carries the request id.
	return middleware.Chain(r,
		middleware.AccessLog(g.log.Named("access"), g.record, s.secrets),
		middleware.Recover(g.log),
		auth.CORS(cfg.CORS),
	)
}

// allowRule is a route's path and the methods it takes.
type allowRule struct {
	path    *regexp.Regexp
	methods string
}

// record feeds a finished chat request into the metrics.
func (g *Gateway) record(in *middleware.Info, status int, dur time.Duration) {
	if !in.Chat {
		return
	}
	overhead := dur - in.UpstreamWait
	if overhead < 0 {
		overhead = 0
	}
	// The provider's latencies count from its own attempt: time lost on providers that
	// failed before it is not its own (those show in ralf_upstream_attempts_total).
	pdur, pttfb := dur, in.TTFB
	if off := in.AttemptStart.Sub(in.Start); !in.AttemptStart.IsZero() && off > 0 {
		pdur -= off
		if pttfb > off {
			pttfb -= off
		}
	}
	if in.Whole {
		pttfb = 0 // a non-streaming answer has no first token apart from its end
	}
	g.m.Request(metrics.Record{
		Provider: in.Provider, Outcome: in.Outcome, Status: status, Duration: pdur, TTFB: pttfb,
		Overhead: overhead, Attempts: in.Attempts, TokensIn: in.TokensIn, TokensOut: in.TokensOut, Client: in.Client,
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"Internal server error","status":500}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// wantsText reports whether /chat should use seed 000's raw text framing.
func wantsText(r *http.Request) bool {
	if f := r.URL.Query().Get("format"); f != "" {
		return f == "text"
	}
	a := r.Header.Get("Accept")
	return strings.Contains(a, "text/plain") && !strings.Contains(a, "text/event-stream")
}
