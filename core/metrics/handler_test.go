package metrics

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ralf-gateway/ralf/core/apierr"
)

// prometheusAccept is what Prometheus 3 sends when scraping.
const prometheusAccept = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6," +
	"application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4," +
	"text/plain;version=0.0.4;q=0.3,*/*;q=0.2"

func TestNegotiation(t *testing.T) {
	tests := []struct {
		name   string
		target string
		accept string
		wantCT string // Content-Type prefix
	}{
		{"no accept is json", "/metrics", "", "application/json"},
		{"curl */* is json", "/metrics", "*/*", "application/json"},
		{"fetch json", "/metrics", "application/json", "application/json"},
		{"browser", "/metrics", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", "application/json"},
		{"prometheus scraper", "/metrics", prometheusAccept, "application/openmetrics-text"},
		{"prometheus 2 text", "/metrics", "text/plain;version=0.0.4;q=1,*/*;q=0.1", "text/plain"},
		{"text/plain", "/metrics", "text/plain", "text/plain"},
		{"text/plain with version", "/metrics", "text/plain; version=0.0.4", "text/plain"},
		{"text/plain but json too", "/metrics", "text/plain, application/json", "application/json"},
		{"openmetrics", "/metrics", "application/openmetrics-text; version=1.0.0", "application/openmetrics-text"},
		{"format=prometheus over json accept", "/metrics?format=prometheus", "application/json", "text/plain"},
		{"format=prometheus no accept", "/metrics?format=prometheus", "", "text/plain"},
		{"format=json over prometheus accept", "/metrics?format=json", prometheusAccept, "application/json"},
	}
	m := New()
	m.Request(Record{Provider: "groq", Outcome: OutcomeOK})
	h := m.Handler(HandlerOptions{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hdr := http.Header{}
			if tt.accept != "" {
				hdr.Set("Accept", tt.accept)
			}
			res := get(t, h, tt.target, hdr)
			if res.StatusCode != http.StatusOK {
				t.Fatalf("status = %d", res.StatusCode)
			}
			ct := res.Header.Get("Content-Type")
			if !strings.HasPrefix(ct, tt.wantCT) {
				t.Errorf("Content-Type = %q, want %s", ct, tt.wantCT)
			}
			body := readBody(t, res)
			isJSON := strings.HasPrefix(body, `{"uptime":`)
			if isJSON != (tt.wantCT == "application/json") {
				t.Errorf("body starts %.40q", body)
			}
			if !isJSON && !strings.Contains(body, `ralf_requests_total{outcome="ok",provider="groq"} 1`) &&
				!strings.Contains(body, `ralf_requests_total{provider="groq",outcome="ok"} 1`) {
				t.Errorf("exposition lacks groq's request:\n%s", body)
			}
			if vary := res.Header.Values("Vary"); !strings.Contains(strings.Join(vary, ","), "Accept") {
				t.Errorf("Vary = %v, want Accept", vary)
			}
		})
	}
}

func TestHandlerMethods(t *testing.T) {
	m := New()
	h := m.Handler(HandlerOptions{})
	tests := []struct {
		method   string
		status   int
		wantBody bool
	}{
		{http.MethodGet, http.StatusOK, true},
		{http.MethodHead, http.StatusOK, false},
		{http.MethodPost, http.StatusMethodNotAllowed, true},
		{http.MethodDelete, http.StatusMethodNotAllowed, true},
	}
	for _, tt := range tests {
		t.Run(tt.method, func(t *testing.T) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(tt.method, "/metrics", nil))
			if rec.Code != tt.status {
				t.Errorf("status = %d, want %d", rec.Code, tt.status)
			}
			if (rec.Body.Len() > 0) != tt.wantBody {
				t.Errorf("body %q", rec.Body.String())
			}
			if tt.status == http.StatusMethodNotAllowed {
				if got := rec.Body.String(); got != `{"error":"Method not allowed","status":405}` {
					t.Errorf("body = %s", got)
				}
				if rec.Header().Get("Allow") != "GET, HEAD" {
					t.Errorf("Allow = %q", rec.Header().Get("Allow"))
				}
			}
		})
	}
}

func TestHandlerAuthorize(t *testing.T) {
	m := New()
	m.Request(Record{Provider: "groq", Outcome: OutcomeOK})
	h := m.Handler(HandlerOptions{Authorize: func(w http.ResponseWriter, r *http.Request) bool {
		if r.Header.Get("Authorization") == "Bearer master" {
			return true
		}
		apierr.Write(w, r, http.StatusUnauthorized, "API key required")
		return false
	}})
	tests := []struct {
		name   string
		target string
		auth   string
		status int
	}{
		{"json without key", "/metrics", "", http.StatusUnauthorized},
		{"prometheus without key", "/metrics?format=prometheus", "", http.StatusUnauthorized},
		{"json with key", "/metrics", "Bearer master", http.StatusOK},
		{"prometheus with key", "/metrics?format=prometheus", "Bearer master", http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hdr := http.Header{}
			if tt.auth != "" {
				hdr.Set("Authorization", tt.auth)
			}
			res := get(t, h, tt.target, hdr)
			body := readBody(t, res)
			if res.StatusCode != tt.status {
				t.Errorf("status = %d, want %d", res.StatusCode, tt.status)
			}
			if tt.status != http.StatusOK && strings.Contains(body, "groq") {
				t.Errorf("refused request got metrics: %s", body)
			}
		})
	}
}
