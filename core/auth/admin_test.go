package auth

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/ralf-gateway/ralf/core/config"
)

func TestAdminHandler(t *testing.T) {
	ctx := context.Background()
	st := newFakeStore(false)
	keys, _ := newTestKeys(t, st, KeysOptions{})
	h := RequireMaster(config.Auth{Enabled: true, MasterKey: testMaster})(AdminHandler(keys))
	m := bearer(testMaster)

	// Create.
	w := do(h, reqSpec{method: http.MethodPost, path: "/admin/keys", headers: m, body: `{"name":"  web app "}`})
	if w.Code != 200 {
		t.Fatalf("create: %d %s", w.Code, w.Body)
	}
	var created struct {
		Success bool   `json:"success"`
		APIKey  string `json:"apiKey"`
		ID      string `json:"id"`
		Name    string `json:"name"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &created); err != nil {
		t.Fatal(err)
	}
	if !created.Success || !strings.HasPrefix(created.APIKey, "sk_") || created.ID == "" || created.Name != "web app" {
		t.Fatalf("create answer = %+v", created)
	}
	if cc := w.Header().Get("Cache-Control"); cc != "no-store" {
		t.Errorf("create Cache-Control = %q, want no-store", cc)
	}
	if _, err := keys.Authenticate(ctx, created.APIKey); err != nil {
		t.Fatalf("created key does not authenticate: %v", err)
	}
	second := do(h, reqSpec{method: http.MethodPost, path: "/admin/keys", headers: m, body: `{"name":"second"}`})
	var sec struct{ APIKey, ID string }
	_ = json.Unmarshal(second.Body.Bytes(), &sec)
	third := do(h, reqSpec{method: http.MethodPost, path: "/admin/keys", headers: m, body: `{"name":"third"}`})
	var thr struct{ APIKey, ID string }
	_ = json.Unmarshal(third.Body.Bytes(), &thr)

	// List: prefixes only.
	w = do(h, reqSpec{method: http.MethodGet, path: "/admin/keys", headers: m})
	if w.Code != 200 {
		t.Fatalf("list: %d %s", w.Code, w.Body)
	}
	if strings.Contains(w.Body.String(), created.APIKey) || strings.Contains(w.Body.String(), sec.APIKey) {
		t.Fatalf("listing contains a full secret: %s", w.Body)
	}
	var listed struct {
		Success bool             `json:"success"`
		Keys    []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &listed); err != nil {
		t.Fatal(err)
	}
	if !listed.Success || len(listed.Keys) != 3 {
		t.Fatalf("list = %s", w.Body)
	}
	for _, f := range []string{"id", "key", "name", "createdAt", "lastUsed", "requestCount", "enabled"} {
		if _, ok := listed.Keys[0][f]; !ok {
			t.Errorf("listed key lacks %q: %v", f, listed.Keys[0])
		}
	}
	// Times as the seeds wrote them (JavaScript's toISOString): UTC, milliseconds.
	for _, f := range []string{"createdAt", "lastUsed"} {
		if v, _ := listed.Keys[0][f].(string); !isoMillis.MatchString(v) {
			t.Errorf("%s = %v, want like 2026-11-23T03:17:49.123Z", f, listed.Keys[0][f])
		}
	}
	if got := listed.Keys[0]["requestCount"]; got != float64(1) {
		t.Errorf("requestCount = %v, want 1 (the authentication above)", got)
	}

	// Revoke.
	tests := []struct {
		name   string
		req    reqSpec
		status int
		want   string
		gone   string // secret that must now fail
	}{
		{"by key in body", reqSpec{body: `{"key":"` + created.APIKey + `"}`}, 200, `{"success":true}`, created.APIKey},
		{"by id in body", reqSpec{body: `{"id":"` + sec.ID + `"}`}, 200, `{"success":true}`, sec.APIKey},
		{"by query id", reqSpec{path: "/admin/keys?id=" + thr.ID}, 200, `{"success":true}`, thr.APIKey},
		{"unknown", reqSpec{body: `{"id":"nope"}`}, 404, `{"success":false,"error":"API key not found"}`, ""},
		{"unknown secret is not echoed", reqSpec{body: `{"key":"sk_secret_value_1234"}`}, 404, `API key not found`, ""},
		{"nothing given", reqSpec{body: `{}`}, 400, `"success":false`, ""},
		{"bad json", reqSpec{body: `{"id":`}, 400, `"success":false`, ""},
	}
	for _, tt := range tests {
		t.Run("revoke "+tt.name, func(t *testing.T) {
			tt.req.method = http.MethodDelete
			if tt.req.path == "" {
				tt.req.path = "/admin/keys"
			}
			tt.req.headers = m
			w := do(h, tt.req)
			if w.Code != tt.status || !strings.Contains(w.Body.String(), tt.want) {
				t.Fatalf("got %d %s, want %d %s", w.Code, w.Body, tt.status, tt.want)
			}
			if strings.Contains(w.Body.String(), "sk_secret_value_1234") {
				t.Errorf("answer echoes the secret: %s", w.Body)
			}
			if tt.gone != "" {
				if _, err := keys.Authenticate(ctx, tt.gone); err == nil {
					t.Error("revoked key still authenticates")
				}
			}
		})
	}

	bad := []struct {
		name   string
		req    reqSpec
		status int
		want   string
	}{
		{"create without name", reqSpec{method: http.MethodPost, body: `{}`}, 400, "name is required"},
		{"create blank name", reqSpec{method: http.MethodPost, body: `{"name":"   "}`}, 400, "name is required"},
		{"create long name", reqSpec{method: http.MethodPost, body: `{"name":"` + strings.Repeat("é", 101) + `"}`}, 400, "at most 100"},
		{"create 100 chars ok", reqSpec{method: http.MethodPost, body: `{"name":"` + strings.Repeat("é", 100) + `"}`}, 200, `"success":true`},
		{"create control chars", reqSpec{method: http.MethodPost, body: `{"name":"a\nb"}`}, 400, "control"},
		{"create bad json", reqSpec{method: http.MethodPost, body: `name=x`}, 400, `"success":false`},
		{"create empty body", reqSpec{method: http.MethodPost}, 400, `"success":false`},
		{"wrong method", reqSpec{method: http.MethodPut, body: `{}`}, 405, `"success":false`},
		{"unknown sub path", reqSpec{method: http.MethodGet, path: "/admin/keys/x"}, 404, `"success":false`},
		{"other prefix", reqSpec{method: http.MethodGet, path: "/admin/keysx"}, 404, `"success":false`},
		{"client key refused", reqSpec{method: http.MethodGet, headers: bearer(created.APIKey)}, 403, "Master key required"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			if tt.req.path == "" {
				tt.req.path = "/admin/keys"
			}
			if tt.req.headers == nil {
				tt.req.headers = m
			}
			w := do(h, tt.req)
			if w.Code != tt.status || !strings.Contains(w.Body.String(), tt.want) {
				t.Fatalf("got %d %s, want %d %s", w.Code, w.Body, tt.status, tt.want)
			}
			if tt.status == 405 && w.Header().Get("Allow") == "" {
				t.Error("405 without Allow header")
			}
		})
	}

	t.Run("revoke by path id", func(t *testing.T) {
		w := do(h, reqSpec{method: http.MethodPost, path: "/admin/keys", headers: m, body: `{"name":"p"}`})
		var c struct{ APIKey, ID string }
		_ = json.Unmarshal(w.Body.Bytes(), &c)
		w = do(h, reqSpec{method: http.MethodDelete, path: "/admin/keys/" + c.ID, headers: m})
		if w.Code != 200 {
			t.Fatalf("got %d %s", w.Code, w.Body)
		}
		if _, err := keys.Authenticate(ctx, c.APIKey); err == nil {
			t.Error("revoked key still authenticates")
		}
	})

	t.Run("store down", func(t *testing.T) {
		st.down.Store(true)
		defer st.down.Store(false)
		for _, rs := range []reqSpec{
			{method: http.MethodGet},
			{method: http.MethodPost, body: `{"name":"x"}`},
			{method: http.MethodDelete, body: `{"id":"x"}`},
		} {
			rs.path, rs.headers = "/admin/keys", m
			w := do(h, rs)
			if w.Code != 503 || !strings.Contains(w.Body.String(), "key store unavailable") {
				t.Errorf("%s with store down: %d %s, want 503", rs.method, w.Code, w.Body)
			}
		}
	})
}

func TestAdminBodyTooLarge(t *testing.T) {
	keys, _ := newTestKeys(t, newFakeStore(false), KeysOptions{})
	h := RequireMaster(config.Auth{Enabled: true, MasterKey: testMaster})(AdminHandler(keys))
	big := `{"name":"` + strings.Repeat("x", 70<<10) + `"}`
	for _, method := range []string{http.MethodPost, http.MethodDelete} {
		w := do(h, reqSpec{method: method, path: "/admin/keys", headers: bearer(testMaster), body: big})
		if w.Code != http.StatusRequestEntityTooLarge || !strings.Contains(w.Body.String(), "too large") {
			t.Errorf("%s with a 70 KiB body: %d %s, want 413", method, w.Code, w.Body)
		}
	}
	if w := do(h, reqSpec{method: http.MethodPost, path: "/admin/keys", headers: bearer(testMaster), body: `{"name":`}); w.Code != 400 {
		t.Errorf("bad JSON: %d %s, want 400", w.Code, w.Body)
	}
}
