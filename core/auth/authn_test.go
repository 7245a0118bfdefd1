package auth

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/ralf-gateway/ralf/core/config"
)

const (
	testStatic  = "static-key-one-0123456789"
	testStatic2 = "static-key-two-0123456789"
	testMaster  = "master-key-very-long-and-random-42"
)

// echoClient answers 200 with the Client it was given, as JSON.
var echoClient = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	c, ok := ClientFrom(r.Context())
	if !ok {
		http.Error(w, "no client", http.StatusTeapot)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(c)
})

type reqSpec struct {
	method  string
	path    string
	headers map[string]string
	body    string
}

func do(h http.Handler, rs reqSpec) *httptest.ResponseRecorder {
	if rs.method == "" {
		rs.method = http.MethodPost
	}
	if rs.path == "" {
		rs.path = "/chat"
	}
	r := httptest.NewRequest(rs.method, rs.path, strings.NewReader(rs.body))
	r.RemoteAddr = "203.0.113.7:5555"
	for k, v := range rs.headers {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func bearer(k string) map[string]string { return map[string]string{"Authorization": "Bearer " + k} }

func TestAuthenticate(t *testing.T) {
	ctx := context.Background()
	st := newFakeStore(false)
	keys, _ := newTestKeys(t, st, KeysOptions{})
	managed, mk := mustCreate(t, keys, "mobile app")
	revoked, rk := mustCreate(t, keys, "old")
	if err := keys.Revoke(ctx, rk.ID); err != nil {
		t.Fatal(err)
	}
	on := config.Auth{Enabled: true, MasterKey: testMaster, Keys: []string{testStatic, " " + testStatic2 + " "}}

	tests := []struct {
		name     string
		cfg      config.Auth
		req      reqSpec
		down     bool
		status   int
		wantErr  string // substring of the body on errors
		wantKind string
		wantName string
		wantID   string
	}{
		{name: "auth off is anonymous by IP", cfg: config.Auth{}, req: reqSpec{headers: map[string]string{"X-Forwarded-For": "1.2.3.4"}},
			status: 200, wantKind: KindAnonymous},
		{name: "missing key", cfg: on, status: 401, wantErr: `"error":"API key required. Provide it via Authorization: Bearer <key> or X-API-Key header","status":401`},
		{name: "missing key on /v1 is OpenAI shaped", cfg: on, req: reqSpec{path: "/v1/chat/completions"}, status: 401, wantErr: `"code":"missing_api_key"`},
		{name: "empty bearer", cfg: on, req: reqSpec{headers: map[string]string{"Authorization": "Bearer   "}}, status: 401},
		{name: "static bearer", cfg: on, req: reqSpec{headers: bearer(testStatic)}, status: 200, wantKind: KindStatic, wantName: "static-1"},
		{name: "static lowercase bearer", cfg: on, req: reqSpec{headers: map[string]string{"Authorization": "bearer " + testStatic2}}, status: 200, wantKind: KindStatic, wantName: "static-2"},
		{name: "static X-API-Key", cfg: on, req: reqSpec{headers: map[string]string{"X-API-Key": testStatic}}, status: 200, wantKind: KindStatic, wantName: "static-1"},
		{name: "static prefix is not the key", cfg: on, req: reqSpec{headers: bearer(testStatic[:10])}, status: 403, wantErr: `"error":"Invalid API key","status":403`},
		{name: "static key plus a char", cfg: on, req: reqSpec{headers: bearer(testStatic + "x")}, status: 403},
		{name: "unknown key", cfg: on, req: reqSpec{headers: bearer("sk_nope")}, status: 403, wantErr: "Invalid API key"},
		{name: "unknown key on /v1", cfg: on, req: reqSpec{path: "/v1/chat/completions", headers: bearer("nope")}, status: 403, wantErr: `"code":"invalid_api_key"`},
		{name: "master key is not a client key", cfg: on, req: reqSpec{headers: bearer(testMaster)}, status: 403, wantErr: "Invalid API key"},
		{name: "managed key", cfg: on, req: reqSpec{headers: bearer(managed)}, status: 200, wantKind: KindManaged, wantName: "mobile app", wantID: mk.ID},
		{name: "managed key via X-API-Key", cfg: on, req: reqSpec{headers: map[string]string{"X-API-Key": managed}}, status: 200, wantKind: KindManaged, wantName: "mobile app"},
		{name: "revoked key", cfg: on, req: reqSpec{headers: bearer(revoked)}, status: 403, wantErr: "Invalid API key"},
		{name: "unknown key with store down", cfg: on, req: reqSpec{headers: bearer("sk_unseen")}, down: true, status: 503, wantErr: "key store unavailable"},
		{name: "static key with store down", cfg: on, req: reqSpec{headers: bearer(testStatic)}, down: true, status: 200, wantKind: KindStatic},
		{name: "oversized key", cfg: on, req: reqSpec{headers: bearer("sk_" + strings.Repeat("a", 600))}, status: 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st.down.Store(tt.down)
			defer st.down.Store(false)
			w := do(Authenticate(tt.cfg, keys, zap.NewNop())(echoClient), tt.req)
			if w.Code != tt.status {
				t.Fatalf("status = %d, want %d; body %s", w.Code, tt.status, w.Body)
			}
			if tt.status != 200 {
				if !strings.Contains(w.Body.String(), tt.wantErr) {
					t.Errorf("body = %s, want it to contain %s", w.Body, tt.wantErr)
				}
				if ct := w.Header().Get("Content-Type"); ct != "application/json" {
					t.Errorf("error content type = %q", ct)
				}
				return
			}
			var c Client
			if err := json.NewDecoder(w.Body).Decode(&c); err != nil {
				t.Fatal(err)
			}
			if c.Kind != tt.wantKind || (tt.wantName != "" && c.Name != tt.wantName) || (tt.wantID != "" && c.KeyID != tt.wantID) {
				t.Errorf("client = %+v, want kind %s name %q id %q", c, tt.wantKind, tt.wantName, tt.wantID)
			}
			if c.IP != "203.0.113.7" {
				t.Errorf("client IP = %q, want the RemoteAddr host (X-Forwarded-For not trusted)", c.IP)
			}
		})
	}
}

func TestAuthenticatePreflightPasses(t *testing.T) {
	for _, enabled := range []bool{false, true} {
		reached := false
		h := Authenticate(config.Auth{Enabled: enabled, Keys: []string{testStatic}}, nil, nil)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			reached = true
			if _, ok := ClientFrom(r.Context()); ok {
				t.Error("preflight got a client: it must pass untouched")
			}
		}))
		w := do(h, reqSpec{method: http.MethodOptions})
		if !reached || w.Code != 200 {
			t.Errorf("enabled=%v: OPTIONS reached=%v status=%d, want passed through", enabled, reached, w.Code)
		}
	}
}

func TestRequireMaster(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "admin") })
	on := config.Auth{Enabled: true, MasterKey: testMaster, Keys: []string{testStatic}}
	tests := []struct {
		name    string
		cfg     config.Auth
		headers map[string]string
		status  int
		wantMsg string
	}{
		{"no master key configured", config.Auth{Enabled: true, Keys: []string{testStatic}}, bearer(testStatic), 403, "Admin API disabled: set auth.master_key (MASTER_API_KEY)"},
		{"no master key configured, no header", config.Auth{}, nil, 403, "Admin API disabled"},
		{"missing", on, nil, 401, "Master key required"},
		{"client key", on, bearer(testStatic), 403, `"error":"Master key required","status":403`},
		{"wrong key", on, map[string]string{"X-API-Key": testMaster + "x"}, 403, "Master key required"},
		{"master bearer", on, bearer(testMaster), 200, "admin"},
		{"master X-API-Key", on, map[string]string{"X-API-Key": testMaster}, 200, "admin"},
		{"master with auth off", config.Auth{MasterKey: testMaster}, bearer(testMaster), 200, "admin"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := do(RequireMaster(tt.cfg)(ok), reqSpec{method: http.MethodGet, path: "/admin/keys", headers: tt.headers})
			if w.Code != tt.status || !strings.Contains(w.Body.String(), tt.wantMsg) {
				t.Errorf("got %d %s, want %d containing %q", w.Code, w.Body, tt.status, tt.wantMsg)
			}
		})
	}
}

func TestStaticMatch(t *testing.T) {
	s := newStaticSet([]string{"alpha", "", "beta", "alphabet"})
	tests := []struct {
		key  string
		want int
	}{
		{"alpha", 0}, {"beta", 1}, {"alphabet", 2}, {"alph", -1}, {"alphabets", -1}, {"", -1}, {"BETA", -1},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			if got := s.match(digest(tt.key)); got != tt.want {
				t.Errorf("match(%q) = %d, want %d", tt.key, got, tt.want)
			}
		})
	}
	for _, id := range s.ids {
		for _, k := range []string{"alpha", "beta", "alphabet"} {
			if strings.Contains(id, k) {
				t.Errorf("static key id %q contains the key", id)
			}
		}
	}
}
