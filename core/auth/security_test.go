package auth

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/mux"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/ralf-gateway/ralf/core/config"
	"github.com/ralf-gateway/ralf/core/middleware"
)

// TestNoSecretLeaks drives full request flows (CORS, access log, auth, rate
// limit, admin API, store outages with a backend that quotes its input in
// errors) and checks that no key of any kind shows up in a log line, an error
// body, a header, or a listing. The one answer allowed to hold a secret is the
// creation of that very key.
func TestNoSecretLeaks(t *testing.T) {
	ctx := context.Background()
	core, logs := observer.New(zapcore.DebugLevel)
	log := zap.New(core)
	st := newFakeStore(false)
	keys := NewKeys(st, log.Named("keys"), KeysOptions{FlushInterval: time.Hour, OnStoreError: func(string) {}})
	defer keys.Close()

	cfg := config.Config{
		Auth:   config.Auth{Enabled: true, MasterKey: testMaster, Keys: []string{testStatic, testStatic2}},
		Limits: config.Limits{Rate: config.Rate{Enabled: true, Requests: 2, Window: time.Minute}},
		CORS:   config.CORS{AllowedOrigins: []string{"https://app.example.com"}},
	}
	authn := Authenticate(cfg.Auth, keys, log.Named("auth"))
	limit := RateLimit(cfg.Limits.Rate, st, log.Named("ratelimit"), RateHooks{})
	chat := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"ok":true}`))
	})
	r := mux.NewRouter()
	r.Handle("/chat", middleware.Chain(chat, authn, limit))
	r.Handle("/v1/chat/completions", middleware.Chain(chat, authn, limit))
	r.PathPrefix("/admin/keys").Handler(RequireMaster(cfg.Auth)(AdminHandler(keys)))
	h := middleware.Chain(r, middleware.AccessLog(log.Named("access"), nil, middleware.Secrets{}), CORS(cfg.CORS))

	secrets := []string{testStatic, testStatic2, testMaster}
	var created []string
	var leaks []string
	check := func(what string, w *httptest.ResponseRecorder, allowed string) {
		t.Helper()
		var hdr strings.Builder
		for k, v := range w.Header() {
			fmt.Fprintf(&hdr, "%s: %s\n", k, strings.Join(v, ","))
		}
		for _, s := range append(append([]string(nil), secrets...), created...) {
			if s == allowed {
				continue
			}
			if strings.Contains(w.Body.String(), s) || strings.Contains(hdr.String(), s) {
				leaks = append(leaks, fmt.Sprintf("%s: answer %d contains a secret: %s", what, w.Code, w.Body))
			}
		}
	}
	send := func(method, path, key, body string) *httptest.ResponseRecorder {
		hs := map[string]string{"Origin": "https://app.example.com"}
		if key != "" {
			hs["Authorization"] = "Bearer " + key
		}
		return do(h, reqSpec{method: method, path: path, headers: hs, body: body})
	}

	// The admin API creates managed keys; each creation answer holds its own secret only.
	for _, name := range []string{"web", "mobile", "doomed"} {
		w := send(http.MethodPost, "/admin/keys", testMaster, `{"name":"`+name+`"}`)
		if w.Code != 200 {
			t.Fatalf("create: %d %s", w.Code, w.Body)
		}
		var c struct{ APIKey string }
		_ = json.Unmarshal(w.Body.Bytes(), &c)
		check("create "+name, w, c.APIKey)
		created = append(created, c.APIKey)
	}
	web, mobile, doomed := created[0], created[1], created[2]
	unknownManaged := "sk_0123456789abcdef0123456789abcdef"
	unseen := "sk_fedcba9876543210fedcba9876543210" // first tried during the outage
	secrets = append(secrets, unknownManaged, unseen, "not-a-key-at-all-1234")

	flows := []struct {
		name      string
		method    string
		path      string
		key, body string
		status    int
	}{
		{"static", "POST", "/chat", testStatic, "", 200},
		{"static 2 on /v1", "POST", "/v1/chat/completions", testStatic2, "", 200},
		{"managed", "POST", "/chat", web, "", 200},
		{"managed on /v1", "POST", "/v1/chat/completions", mobile, "", 200},
		{"master on /chat", "POST", "/chat", testMaster, "", 403},
		{"master on /v1", "POST", "/v1/chat/completions", testMaster, "", 403},
		{"unknown managed", "POST", "/chat", unknownManaged, "", 403},
		{"garbage", "POST", "/chat", "not-a-key-at-all-1234", "", 403},
		{"static until limited", "POST", "/chat", testStatic, "", 200},
		{"static limited", "POST", "/chat", testStatic, "", 429},
		{"admin with static key", "GET", "/admin/keys", testStatic, "", 403},
		{"admin with managed key", "GET", "/admin/keys", web, "", 403},
		{"admin list", "GET", "/admin/keys", testMaster, "", 200},
		{"revoke by secret", "DELETE", "/admin/keys", testMaster, `{"key":"` + doomed + `"}`, 200},
		{"revoked key", "POST", "/chat", doomed, "", 403},
		{"revoke unknown secret", "DELETE", "/admin/keys", testMaster, `{"key":"` + unknownManaged + `"}`, 404},
		{"list after", "GET", "/admin/keys", testMaster, "", 200},
	}
	for _, f := range flows {
		w := send(f.method, f.path, f.key, f.body)
		if w.Code != f.status {
			t.Errorf("%s: status %d, want %d (%s)", f.name, w.Code, f.status, w.Body)
		}
		check(f.name, w, "")
	}

	// Store outage with a backend whose errors quote the secret.
	st.down.Store(true)
	st.echo.Store(true)
	for _, f := range []struct {
		name, method, path, key, body string
		status                        int
	}{
		{"outage: unknown key", "POST", "/chat", unseen, "", 503},
		{"outage: known key served", "POST", "/chat", mobile, "", 200},
		{"outage: revoke by secret", "DELETE", "/admin/keys", testMaster, `{"key":"` + web + `"}`, 503},
	} {
		w := send(f.method, f.path, f.key, f.body)
		if w.Code != f.status {
			t.Errorf("%s: status %d, want %d (%s)", f.name, w.Code, f.status, w.Body)
		}
		check(f.name, w, "")
	}
	st.down.Store(false)
	_ = keys.Flush(ctx)

	if logs.Len() == 0 {
		t.Fatal("no log lines captured: the test would prove nothing")
	}
	var sawClientName bool
	for _, e := range logs.All() {
		line := e.Message + " " + fmt.Sprint(e.ContextMap())
		for _, s := range append(append([]string(nil), secrets...), created...) {
			if strings.Contains(line, s) {
				leaks = append(leaks, "log line contains a secret: "+line)
			}
		}
		if e.ContextMap()["client"] == "web" {
			sawClientName = true
		}
	}
	if !sawClientName {
		t.Error("access log lacks the client key name for a managed key")
	}
	for _, l := range leaks {
		t.Error(l)
	}
}
