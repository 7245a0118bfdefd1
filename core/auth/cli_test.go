package auth

import (
	"bytes"
	"context"
	"errors"
	"regexp"
	"strings"
	"testing"
)

func TestKeysCommand(t *testing.T) {
	ctx := context.Background()
	st := newFakeStore(false)
	keys, _ := newTestKeys(t, st, KeysOptions{})

	var out bytes.Buffer
	if err := KeysCommand(ctx, []string{"create", "my", "app"}, keys, &out); err != nil {
		t.Fatal(err)
	}
	secret := regexp.MustCompile(`sk_[0-9a-f]+`).FindString(out.String())
	id := regexp.MustCompile(`id ([0-9a-f]+)`).FindStringSubmatch(out.String())
	if secret == "" || id == nil || !strings.Contains(out.String(), `"my app"`) {
		t.Fatalf("create output = %q, want the name, the id and the secret", out.String())
	}
	if _, err := keys.Authenticate(ctx, secret); err != nil {
		t.Fatalf("printed secret does not authenticate: %v", err)
	}

	out.Reset()
	if err := KeysCommand(ctx, []string{"list"}, keys, &out); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "ID") || !strings.Contains(lines[1], id[1]) || !strings.Contains(lines[1], "my app") {
		t.Fatalf("list output = %q", out.String())
	}
	for _, col := range []string{"KEY", "NAME", "CREATED", "LAST USED", "REQUESTS", "ENABLED"} {
		if !strings.Contains(lines[0], col) {
			t.Errorf("list header lacks %s: %q", col, lines[0])
		}
	}
	if strings.Contains(out.String(), secret) {
		t.Fatal("list prints a full secret")
	}
	if !strings.Contains(lines[1], "true") || !regexp.MustCompile(`\s1\s+true`).MatchString(lines[1]) {
		t.Errorf("list row = %q, want 1 request, enabled", lines[1])
	}

	out.Reset()
	if err := KeysCommand(ctx, []string{"revoke", id[1]}, keys, &out); err != nil {
		t.Fatal(err)
	}
	if _, err := keys.Authenticate(ctx, secret); err == nil {
		t.Error("revoked key still authenticates")
	}
	out.Reset()
	_ = KeysCommand(ctx, []string{"list"}, keys, &out)
	if !strings.Contains(out.String(), "false") {
		t.Errorf("list after revoke = %q, want enabled false", out.String())
	}

	err := KeysCommand(ctx, []string{"revoke", "sk_not_a_real_key_999"}, keys, &out)
	if err == nil || strings.Contains(err.Error(), "sk_not_a_real_key_999") {
		t.Errorf("revoke unknown: err = %v, want an error that does not echo the key", err)
	}

	usage := [][]string{nil, {"create"}, {"create", "  "}, {"list", "x"}, {"revoke"}, {"revoke", "a", "b"}, {"frobnicate"}, {"create", strings.Repeat("x", 101)}}
	for _, args := range usage {
		t.Run(strings.Join(args, "_"), func(t *testing.T) {
			if err := KeysCommand(ctx, args, keys, &out); !errors.Is(err, ErrUsage) {
				t.Errorf("KeysCommand(%q) err = %v, want ErrUsage", args, err)
			}
		})
	}

	st.down.Store(true)
	if err := KeysCommand(ctx, []string{"list"}, keys, &out); err == nil {
		t.Error("list with store down: want an error")
	}
}

func TestKeysCommandEmptyList(t *testing.T) {
	keys, _ := newTestKeys(t, newFakeStore(false), KeysOptions{})
	var out bytes.Buffer
	if err := KeysCommand(context.Background(), []string{"list"}, keys, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "No keys") {
		t.Errorf("empty list output = %q", out.String())
	}
}
