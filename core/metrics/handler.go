package metrics

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/ralf-gateway/ralf/core/apierr"
)

// HandlerOptions configures GET /metrics.
type HandlerOptions struct {
	// Authorize guards the endpoint (auth.protect_metrics). It writes the refusal
	// itself (401/403) and returns false to stop; nil leaves /metrics open.
	Authorize func(w http.ResponseWriter, r *http.Request) bool
	// Logger receives errors while encoding the Prometheus exposition; nil discards them.
	Logger *zap.Logger
}

// Handler serves GET /metrics: the seed's JSON document by default, the
// Prometheus exposition (text or OpenMetrics, negotiated) when the Accept header
// asks for it as Prometheus does, or with ?format=prometheus.
// The handler is cheap to build: make one per config generation if Authorize changes.
func (m *Metrics) Handler(opts HandlerOptions) http.Handler {
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	prom := promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorLog:          promLogger{log.Named("metrics")},
		ErrorHandling:     promhttp.ContinueOnError,
		EnableOpenMetrics: true,
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			apierr.Write(w, r, http.StatusMethodNotAllowed, "Method not allowed")
			return
		}
		if opts.Authorize != nil && !opts.Authorize(w, r) {
			return
		}
		w.Header().Add("Vary", "Accept")
		w.Header().Set("Cache-Control", "no-store")
		if WantsPrometheus(r) {
			prom.ServeHTTP(w, r)
			return
		}
		body, err := json.Marshal(m.Stats())
		if err != nil { // only a NaN could get here; never expected
			log.Error("encode metrics json", zap.Error(err))
			apierr.Write(w, r, http.StatusInternalServerError, "Internal server error")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(http.StatusOK)
		if r.Method != http.MethodHead {
			_, _ = w.Write(body)
		}
	})
}

// WantsPrometheus reports whether a /metrics request asks for the Prometheus
// exposition rather than the seed's JSON: ?format=prometheus (or openmetrics),
// or an Accept header naming application/openmetrics-text, or text/plain without
// application/json (Prometheus sends the former, browsers and fetch() the latter
// or */*). ?format=json forces JSON.
func WantsPrometheus(r *http.Request) bool {
	switch strings.ToLower(r.URL.Query().Get("format")) {
	case "prometheus", "openmetrics":
		return true
	case "json":
		return false
	}
	accept := strings.ToLower(strings.Join(r.Header.Values("Accept"), ","))
	if strings.Contains(accept, "application/openmetrics-text") {
		return true
	}
	return strings.Contains(accept, "text/plain") && !strings.Contains(accept, "application/json")
}

// promLogger adapts zap to promhttp's Println logger.
type promLogger struct{ log *zap.Logger }

func (l promLogger) Println(v ...any) {
	l.log.Error("serve prometheus metrics", zap.String("error", strings.TrimSuffix(fmt.Sprintln(v...), "\n")))
}
