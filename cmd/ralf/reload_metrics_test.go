package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/ralf-gateway/ralf/core/config"
	"github.com/ralf-gateway/ralf/core/gateway"
	"github.com/ralf-gateway/ralf/core/metrics"
)

// reloadCount reads ralf_config_reloads_total{result} from the metrics registry.
func reloadCount(t *testing.T, m *metrics.Metrics, result string) float64 {
	t.Helper()
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != "ralf_config_reloads_total" {
			continue
		}
		for _, mt := range f.GetMetric() {
			for _, lp := range mt.GetLabel() {
				if lp.GetName() == "result" && lp.GetValue() == result {
					return mt.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no ralf_config_reloads_total{result=%q}", result)
	return 0
}

// TestApplyReloadCountsReloads: reloads are counted here, once each, by result (gw.Apply
// itself counts nothing); a failed one shows in /health and changes nothing; a good one
// applies log.level.
func TestApplyReloadCountsReloads(t *testing.T) {
	const good = `
log: {level: %s}
providers:
  - {name: a, base_url: "http://127.0.0.1:1/v1", model: m}
store: memory://
`
	parse := func(level string) []byte { return []byte(strings.Replace(good, "%s", level, 1)) }
	cfg, err := config.Parse(parse("info"), loadOptions())
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.DebugLevel)
	log := zap.New(core)
	m := metrics.New()
	gw, err := gateway.New(cfg, gateway.Deps{Logger: log, Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Close()
	lvl := zap.NewAtomicLevelAt(zap.InfoLevel)
	health := func() string {
		rec := httptest.NewRecorder()
		gw.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/health", nil))
		return rec.Body.String()
	}

	steps := []struct {
		name             string
		data             []byte
		wantErr          bool
		ok, errs         float64
		gen              int64
		level            zapcore.Level
		healthHasLastErr bool
		logMessage       string
	}{
		{"good", parse("debug"), false, 1, 0, 2, zap.DebugLevel, false, "config reloaded"},
		{"invalid yaml", []byte("providers: [\n"), true, 1, 1, 2, zap.DebugLevel, true, "config reload failed: still serving the previous config"},
		{"invalid config", []byte("routing: {max_attempts: -1}\n" + string(parse("info"))), true, 1, 2, 2, zap.DebugLevel, true, "config reload failed: still serving the previous config"},
		{"good again", parse("warn"), false, 2, 2, 3, zap.WarnLevel, false, "config reloaded"},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			before := logs.FilterMessage(s.logMessage).Len()
			err := applyReload(gw, m, lvl, log, "gateway.yaml", s.data, [32]byte{}, "test")
			if (err != nil) != s.wantErr {
				t.Fatalf("applyReload: %v", err)
			}
			if got := reloadCount(t, m, metrics.ReloadOK); got != s.ok {
				t.Errorf("reloads ok %v, want %v", got, s.ok)
			}
			if got := reloadCount(t, m, metrics.ReloadError); got != s.errs {
				t.Errorf("reloads error %v, want %v", got, s.errs)
			}
			if gw.Generation() != s.gen {
				t.Errorf("generation %d, want %d", gw.Generation(), s.gen)
			}
			if lvl.Level() != s.level {
				t.Errorf("log level %v, want %v", lvl.Level(), s.level)
			}
			if h := health(); strings.Contains(h, `"lastError"`) != s.healthHasLastErr {
				t.Errorf("health %s", h)
			}
			if logs.FilterMessage(s.logMessage).Len() != before+1 {
				t.Errorf("no %q log line", s.logMessage)
			}
		})
	}
}
