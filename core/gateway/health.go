package gateway

import (
	"net/http"
	"time"

	"github.com/gorilla/mux"

	"github.com/ralf-gateway/ralf/core/apierr"
)

type healthProvider struct {
	Name          string     `json:"name"`
	Dialect       string     `json:"dialect"`
	Model         string     `json:"model"`
	State         string     `json:"state"`
	CooldownUntil *time.Time `json:"cooldownUntil,omitempty"`
}

type healthBody struct {
	Status           string           `json:"status"`
	Services         []string         `json:"services"`
	AuthEnabled      bool             `json:"authEnabled"`
	RateLimitEnabled bool             `json:"rateLimitEnabled"`
	Timestamp        time.Time        `json:"timestamp"`
	Providers        []healthProvider `json:"providers"`
	Config           *configStatus    `json:"config"`
}

// serveHealth is GET /health: "ok", "degraded" when an enabled provider is cooling
// down, and 503 "down" when none can serve. No secrets.
func (g *Gateway) serveHealth(w http.ResponseWriter, r *http.Request, s *snapshot) {
	now := time.Now()
	b := healthBody{
		Services:         s.names(),
		AuthEnabled:      s.cfg.Auth.Enabled,
		RateLimitEnabled: s.cfg.Limits.Rate.Enabled,
		Timestamp:        now.UTC(),
		Providers:        make([]healthProvider, 0, len(s.providers)),
		Config:           g.status.Load(),
	}
	up := 0
	for _, p := range s.providers {
		hp := healthProvider{Name: p.cfg.Name, Dialect: p.cfg.Dialect, Model: p.cfg.Model, State: "up"}
		if until, cooling := p.health.CooldownUntil(now); cooling {
			u := until.UTC()
			hp.State, hp.CooldownUntil = "cooldown", &u
		} else {
			up++
		}
		b.Providers = append(b.Providers, hp)
	}
	// Always 200 (the SPEC's ok|degraded): a liveness probe must not restart a gateway
	// because its providers are cooling, nor a load balancer drop every replica during
	// a shared upstream outage. A readiness check that wants that asks ?ready.
	status := http.StatusOK
	b.Status = "ok"
	if up < len(s.providers) || up == 0 {
		b.Status = "degraded"
	}
	if _, ready := r.URL.Query()["ready"]; ready && up == 0 {
		status = http.StatusServiceUnavailable
	}
	writeJSON(w, status, b)
}

type modelEntry struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
	Model   string `json:"model"`
	Dialect string `json:"dialect"`
}

// serveModels is GET /v1/models: one entry per enabled provider (id = provider name),
// plus "auto" for the ring.
func (g *Gateway) serveModels(w http.ResponseWriter, r *http.Request, s *snapshot) {
	data := make([]modelEntry, 0, len(s.providers)+1)
	data = append(data, autoModel)
	for _, p := range s.providers {
		data = append(data, providerModel(&p, p.cfg.Name, p.cfg.Model))
	}
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": data})
}

var autoModel = modelEntry{ID: "auto", Object: "model", OwnedBy: "ralf", Model: "round robin over all providers"}

func providerModel(p *provider, id, model string) modelEntry {
	return modelEntry{ID: id, Object: "model", OwnedBy: p.cfg.Name, Model: model, Dialect: p.cfg.Dialect}
}

// serveModel answers GET /v1/models/{id} (the SDKs' models.retrieve) for what a
// request's model may name, resolved as a request's model is.
func (g *Gateway) serveModel(w http.ResponseWriter, r *http.Request, s *snapshot) {
	id := mux.Vars(r)["id"]
	rt, override, he := s.resolveModel(id)
	switch {
	case he != nil: // a disabled provider too: for this GET, it does not exist
		apierr.Write(w, r, http.StatusNotFound, he.msg)
	case rt.model != "": // several providers serve it
		writeJSON(w, http.StatusOK, modelEntry{ID: id, Object: "model", OwnedBy: "ralf", Model: rt.model})
	case rt.pinned < 0:
		writeJSON(w, http.StatusOK, autoModel)
	default:
		p := &s.providers[rt.pinned]
		model := p.cfg.Model
		if override != "" {
			model = override
		}
		writeJSON(w, http.StatusOK, providerModel(p, id, model))
	}
}
