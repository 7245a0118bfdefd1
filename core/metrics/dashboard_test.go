package metrics

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/ralf-gateway/ralf/core/fixtures"
)

type dashPanel struct {
	ID      int    `json:"id"`
	Type    string `json:"type"`
	Title   string `json:"title"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
	GridPos struct{ H, W, X, Y int } `json:"gridPos"`
}

// TestGrafanaDashboard keeps configs/grafana-dashboard.json in step with the
// metrics: every ralf_ series a panel queries must be one this package exposes.
func TestGrafanaDashboard(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(fixtures.Root(t), "configs", "grafana-dashboard.json"))
	if err != nil {
		t.Fatalf("read dashboard: %v", err)
	}
	var dash struct {
		Title  string      `json:"title"`
		UID    string      `json:"uid"`
		Panels []dashPanel `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("dashboard is not valid JSON: %v", err)
	}
	if dash.Title == "" || dash.UID == "" || len(dash.Panels) == 0 {
		t.Fatalf("dashboard lacks title, uid or panels")
	}

	m, _ := knownTraffic(t)
	fams := scrape(t, m)
	exposed := func(name string) bool {
		for _, suffix := range []string{"", "_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(name, suffix); ok && fams[base] != nil {
				return true
			}
		}
		return false
	}

	metricName := regexp.MustCompile(`\bralf_[a-z_]+`)
	ids := map[int]bool{}
	queried := map[string]bool{}
	for _, p := range dash.Panels {
		t.Run(p.Title, func(t *testing.T) {
			if ids[p.ID] {
				t.Errorf("duplicate panel id %d", p.ID)
			}
			ids[p.ID] = true
			if p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X+p.GridPos.W > 24 {
				t.Errorf("bad gridPos %+v", p.GridPos)
			}
			if p.Type == "row" {
				return
			}
			if len(p.Targets) == 0 {
				t.Error("panel has no query")
			}
			for _, tg := range p.Targets {
				names := metricName.FindAllString(tg.Expr, -1)
				if len(names) == 0 {
					t.Errorf("query %q uses no ralf_ metric", tg.Expr)
				}
				for _, n := range names {
					queried[strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(n, "_bucket"), "_sum"), "_count")] = true
					if !exposed(n) {
						t.Errorf("query %q uses %s, which /metrics does not expose", tg.Expr, n)
					}
				}
			}
		})
	}
	for _, want := range []string{
		"ralf_requests_total", "ralf_time_to_first_token_seconds", "ralf_request_duration_seconds", "ralf_tokens_total",
		"ralf_inflight_streams", "ralf_rate_limited_total", "ralf_failovers_total", "ralf_config_reloads_total",
		"ralf_provider_up", "ralf_gateway_overhead_seconds",
	} {
		if !queried[want] {
			t.Errorf("no panel shows %s", want)
		}
	}
}
