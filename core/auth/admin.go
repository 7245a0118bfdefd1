package auth

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/ralf-gateway/ralf/core/store"
)

// maxNameLen is the longest key name accepted, in characters.
const maxNameLen = 100

// adminTimeout bounds one admin store operation.
const adminTimeout = 10 * time.Second

// AdminHandler serves /admin/keys: POST {"name"} creates a key (its secret is in
// this answer only), GET lists keys (prefixes only), DELETE {"key"} or {"id"}
// (or ?id=, or /admin/keys/ID) revokes one. It must sit behind RequireMaster.
func AdminHandler(keys *Keys) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rest, ok := strings.CutPrefix(r.URL.Path, "/admin/keys")
		if !ok || (rest != "" && !strings.HasPrefix(rest, "/")) {
			// Not echoed: what follows /admin/keys may be a client key sent by mistake.
			adminError(w, http.StatusNotFound, "Not found: "+r.Method+" /admin/keys…")
			return
		}
		pathID := strings.Trim(rest, "/")
		if pathID != "" && r.Method != http.MethodDelete {
			// Not echoed: what follows /admin/keys/ may be a client key sent by mistake.
			adminError(w, http.StatusNotFound, "Not found: "+r.Method+" /admin/keys/{id} (only DELETE takes an id)")
			return
		}
		switch r.Method {
		case http.MethodPost:
			adminCreate(w, r, keys)
		case http.MethodGet, http.MethodHead:
			adminList(w, r, keys)
		case http.MethodDelete:
			adminRevoke(w, r, keys, pathID)
		default:
			w.Header().Set("Allow", "GET, POST, DELETE")
			adminError(w, http.StatusMethodNotAllowed, "Method "+r.Method+" not allowed on /admin/keys")
		}
	})
}

func adminCreate(w http.ResponseWriter, r *http.Request, keys *Keys) {
	var in struct {
		Name string `json:"name"`
	}
	if err := decodeBody(w, r, &in, false); err != nil {
		adminError(w, decodeStatus(err), err.Error())
		return
	}
	name := strings.TrimSpace(in.Name)
	switch {
	case name == "":
		adminError(w, http.StatusBadRequest, "name is required")
		return
	case utf8.RuneCountInString(name) > maxNameLen:
		adminError(w, http.StatusBadRequest, "name must be at most 100 characters")
		return
	case strings.IndexFunc(name, unicode.IsControl) >= 0:
		// Names end up in log lines and terminal tables.
		adminError(w, http.StatusBadRequest, "name must not contain control characters")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), adminTimeout)
	defer cancel()
	secret, k, err := keys.Create(ctx, name)
	if err != nil {
		adminError(w, http.StatusServiceUnavailable, msgStoreDown)
		return
	}
	w.Header().Set("Cache-Control", "no-store") // the secret must not sit in any cache
	writeAdminJSON(w, http.StatusOK, struct {
		Success bool   `json:"success"`
		APIKey  string `json:"apiKey"`
		ID      string `json:"id"`
		Name    string `json:"name"`
	}{true, secret, k.ID, k.Name})
}

func adminList(w http.ResponseWriter, r *http.Request, keys *Keys) {
	ctx, cancel := context.WithTimeout(r.Context(), adminTimeout)
	defer cancel()
	list, err := keys.List(ctx)
	if err != nil {
		adminError(w, http.StatusServiceUnavailable, msgStoreDown)
		return
	}
	if list == nil {
		list = []store.Key{}
	}
	writeAdminJSON(w, http.StatusOK, struct {
		Success bool        `json:"success"`
		Keys    []store.Key `json:"keys"`
	}{true, list})
}

func adminRevoke(w http.ResponseWriter, r *http.Request, keys *Keys, pathID string) {
	target := pathID
	if target == "" {
		target = strings.TrimSpace(r.URL.Query().Get("id"))
	}
	if target == "" {
		var in struct {
			Key string `json:"key"`
			ID  string `json:"id"`
		}
		if err := decodeBody(w, r, &in, true); err != nil {
			adminError(w, decodeStatus(err), err.Error())
			return
		}
		target = strings.TrimSpace(in.Key)
		if target == "" {
			target = strings.TrimSpace(in.ID)
		}
	}
	if target == "" {
		adminError(w, http.StatusBadRequest, `give the key to revoke as {"key":"sk_..."} or {"id":"..."}`)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), adminTimeout)
	defer cancel()
	switch err := keys.Revoke(ctx, target); {
	case err == nil:
		writeAdminJSON(w, http.StatusOK, struct {
			Success bool `json:"success"`
		}{true})
	case errors.Is(err, store.ErrNotFound):
		adminError(w, http.StatusNotFound, "API key not found")
	default:
		adminError(w, http.StatusServiceUnavailable, msgStoreDown)
	}
}

// maxAdminBody bounds an admin request's body: it holds a name or a key.
const maxAdminBody = 64 << 10

var errBodyTooLarge = errors.New("request body too large (at most 64 KiB)")

// decodeStatus is the status for a decodeBody error: 413 for a body too large.
func decodeStatus(err error) int {
	if err == errBodyTooLarge {
		return http.StatusRequestEntityTooLarge
	}
	return http.StatusBadRequest
}

// decodeBody reads a small JSON object; an empty body is fine when allowEmpty.
// Its errors never quote the body, which may hold a secret.
func decodeBody(w http.ResponseWriter, r *http.Request, v any, allowEmpty bool) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxAdminBody))
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return errBodyTooLarge
	}
	if err != nil {
		return errors.New("request body unreadable")
	}
	if len(strings.TrimSpace(string(body))) == 0 {
		if allowEmpty {
			return nil
		}
		return errors.New("request body must be a JSON object")
	}
	if err := json.Unmarshal(body, v); err != nil {
		return errors.New("invalid JSON body: expected a JSON object")
	}
	return nil
}

func adminError(w http.ResponseWriter, status int, msg string) {
	writeAdminJSON(w, status, struct {
		Success bool   `json:"success"`
		Error   string `json:"error"`
	}{false, msg})
}

func writeAdminJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
