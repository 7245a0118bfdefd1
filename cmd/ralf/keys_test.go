package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ralf-gateway/ralf/core/mock"
)

// stopRalf sends SIGTERM and waits for a clean exit.
func stopRalf(t *testing.T, p *proc) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, p.logs.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("no exit after SIGTERM:\n%s", p.logs.String())
	}
}

// keysCmd runs `ralf keys --config path args...` in-process.
func keysCmd(t *testing.T, path string, args ...string) (string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := run(ctx, append([]string{"keys", "--config", path}, args...), &out, &errb)
	return out.String() + errb.String(), err
}

type listedKey struct {
	ID           string `json:"id"`
	Name         string `json:"name"`
	Key          string `json:"key"`
	RequestCount int64  `json:"requestCount"`
	Enabled      bool   `json:"enabled"`
}

func adminList(t *testing.T, url string) (string, []listedKey) {
	t.Helper()
	status, body := call(t, "GET", url+"/admin/keys", masterKey, "")
	var l struct {
		Keys []listedKey `json:"keys"`
	}
	if status != 200 || json.Unmarshal([]byte(body), &l) != nil {
		t.Fatalf("GET /admin/keys: %d %s", status, body)
	}
	return body, l.Keys
}

// TestKeysSurviveRestart: with a sqlite store, a key created over HTTP outlives the
// process with its usage; `ralf keys` works on the same file, and a key it revokes
// is refused by the next gateway.
func TestKeysSurviveRestart(t *testing.T) {
	mk, err := mock.Start(mock.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer mk.Close()
	dir := t.TempDir()
	db := filepath.Join(dir, "data", "ralf.db")
	cfgPath := filepath.Join(dir, "gateway.yaml")
	if err := os.WriteFile(cfgPath, []byte(`
server: {listen: "127.0.0.1:3000", shutdown_timeout: 5s}
log: {level: info}
providers:
  - {name: up, base_url: "`+mk.URL()+`/v1", model: "mock+chunks=2"}
auth: {enabled: true, master_key: `+masterKey+`}
limits: {rate: {enabled: false}}
store: sqlite://`+filepath.ToSlash(db)+`
`), 0o644); err != nil {
		t.Fatal(err)
	}

	// First process: create a key over HTTP and use it.
	p1 := startRalf(t, dir, nil)
	status, body := call(t, "POST", p1.url+"/admin/keys", masterKey, `{"name":"survivor"}`)
	var created struct {
		APIKey string `json:"apiKey"`
		ID     string `json:"id"`
	}
	if status != 200 || json.Unmarshal([]byte(body), &created) != nil || !strings.HasPrefix(created.APIKey, "sk_") || created.ID == "" {
		t.Fatalf("create: %d %s", status, body)
	}
	for i := 0; i < 2; i++ {
		if s, b := call(t, "POST", p1.url+"/chat", created.APIKey, chatBody); s != 200 {
			t.Fatalf("use before restart: %d %s", s, b)
		}
	}
	stopRalf(t, p1)
	if fi, err := os.Stat(db); err != nil {
		t.Fatalf("no sqlite file after the first run: %v", err)
	} else if fi.Mode().Perm()&0o077 != 0 {
		t.Errorf("sqlite file mode %v: readable by others", fi.Mode().Perm())
	}

	// `ralf keys list` reads the same file: the key, its prefix, the usage flushed on
	// shutdown, never the secret.
	out, err := keysCmd(t, cfgPath, "list")
	if err != nil {
		t.Fatalf("keys list: %v\n%s", err, out)
	}
	if !strings.Contains(out, created.ID) || !strings.Contains(out, "survivor") || strings.Contains(out, created.APIKey) {
		t.Fatalf("keys list output:\n%s", out)
	}
	if m := regexp.MustCompile(created.ID + `\s+\S+\s+survivor\s+\S+\s+\S+\s+(\d+)\s+true`).FindStringSubmatch(out); m == nil || m[1] != "2" {
		t.Fatalf("keys list does not show 2 requests for the key:\n%s", out)
	}

	// Second process on the same file: the key still works and is listed by prefix.
	p2 := startRalf(t, dir, nil)
	if s, b := call(t, "POST", p2.url+"/chat", created.APIKey, chatBody); s != 200 {
		t.Fatalf("after restart: %d %s", s, b)
	}
	raw, keys := adminList(t, p2.url)
	if strings.Contains(raw, created.APIKey) {
		t.Fatalf("GET /admin/keys shows the whole secret: %s", raw)
	}
	if len(keys) != 1 || keys[0].ID != created.ID || keys[0].Name != "survivor" || !keys[0].Enabled ||
		keys[0].RequestCount < 2 || keys[0].Key == "" || !strings.HasPrefix(created.APIKey, strings.TrimRight(keys[0].Key, "…")) {
		t.Fatalf("GET /admin/keys after restart: %s", raw)
	}

	// `ralf keys create` prints the new secret once; the running gateway accepts it.
	out, err = keysCmd(t, cfgPath, "create", "cli", "app")
	if err != nil {
		t.Fatalf("keys create: %v\n%s", err, out)
	}
	cliKey := regexp.MustCompile(`sk_[A-Za-z0-9_-]+`).FindString(out)
	if cliKey == "" || strings.Count(out, cliKey) != 1 || !strings.Contains(out, `"cli app"`) {
		t.Fatalf("keys create output:\n%s", out)
	}
	if s, b := call(t, "POST", p2.url+"/chat", cliKey, chatBody); s != 200 {
		t.Fatalf("key made by `ralf keys create`: %d %s", s, b)
	}
	if out, err := keysCmd(t, cfgPath, "list"); err != nil || strings.Contains(out, cliKey) || !strings.Contains(out, "cli app") {
		t.Fatalf("keys list after create (%v):\n%s", err, out)
	}

	// Revoke from the command line while the gateway runs; the next gateway refuses it.
	if out, err := keysCmd(t, cfgPath, "revoke", created.ID); err != nil || !strings.Contains(out, "Revoked") {
		t.Fatalf("keys revoke: %v\n%s", err, out)
	}
	stopRalf(t, p2)
	p3 := startRalf(t, dir, nil)
	if s, b := call(t, "POST", p3.url+"/chat", created.APIKey, chatBody); s != 403 {
		t.Fatalf("revoked key after restart: %d %s, want 403", s, b)
	}
	if s, b := call(t, "POST", p3.url+"/chat", cliKey, chatBody); s != 200 {
		t.Fatalf("the other key after restart: %d %s", s, b)
	}
	_, keys = adminList(t, p3.url)
	for _, k := range keys {
		if k.ID == created.ID && k.Enabled {
			t.Fatalf("revoked key listed as enabled: %+v", k)
		}
	}
	if out, err := keysCmd(t, cfgPath, "revoke", "no-such-id"); err == nil || strings.Contains(out, "Revoked") {
		t.Fatalf("revoking an unknown id: %v\n%s", err, out)
	}
	stopRalf(t, p3)

	// No secret in any process's log.
	for _, p := range []*proc{p1, p2, p3} {
		for _, s := range []string{masterKey, created.APIKey, cliKey} {
			if strings.Contains(p.logs.String(), s) {
				t.Fatalf("a secret is in the gateway's log:\n%s", p.logs.String())
			}
		}
	}
}

// TestKeysFlagsAnywhere: --config (or -c) after the subcommand names the config, as
// before it; it never becomes part of a key's name or leaves the key in another store.
func TestKeysFlagsAnywhere(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	other := filepath.Join(dir, "other.yaml")
	os.WriteFile("gateway.yaml", []byte("providers:\n  - {name: m, base_url: \"http://127.0.0.1:1/v1\", model: m}\nstore: sqlite://cwd.db\n"), 0o600)
	os.WriteFile(other, []byte("providers:\n  - {name: m, base_url: \"http://127.0.0.1:1/v1\", model: m}\nstore: sqlite://other.db\n"), 0o600)
	run1 := func(args ...string) string {
		t.Helper()
		var out, errb bytes.Buffer
		if err := run(context.Background(), append([]string{"keys"}, args...), &out, &errb); err != nil {
			t.Fatalf("ralf keys %q: %v %s", args, err, errb.String())
		}
		return out.String()
	}
	if out := run1("create", "mobile", "app", "--config", other); !strings.Contains(out, `Created key "mobile app"`) {
		t.Fatalf("create: %s", out)
	}
	run1("create", "web", "-c", other)
	if out := run1("list", "--config", other); !strings.Contains(out, "mobile app") || !strings.Contains(out, "web") {
		t.Fatalf("the keys are not in other.yaml's store:\n%s", out)
	}
	// No key went to the current directory's store: there is none. Listing it says
	// so (a relative path is the working directory's), instead of "No keys."
	var out, errb bytes.Buffer
	err := run(context.Background(), []string{"keys", "list"}, &out, &errb)
	if abs, _ := filepath.Abs("cwd.db"); err == nil || !strings.Contains(errb.String(), "there is no key database at "+abs) {
		t.Fatalf("list without a database: %v %q", err, errb.String())
	}
	if _, err := os.Stat("cwd.db"); err == nil {
		t.Fatal("list created a database")
	}
	// A typo, or no subcommand, is a usage error (exit 2), and creates nothing either.
	for _, args := range [][]string{{"keys", "lst"}, {"keys"}} {
		errb.Reset()
		err := run(context.Background(), args, &out, &errb)
		if code, ok := err.(exitError); !ok || code != 2 || !strings.Contains(errb.String(), "usage: ralf keys") {
			t.Fatalf("%q: %v %q, want the usage and exit 2", args, err, errb.String())
		}
		if _, err := os.Stat("cwd.db"); err == nil {
			t.Fatalf("%q created a database", args)
		}
	}
	// Creating one says where it is.
	out.Reset()
	errb.Reset()
	if err := run(context.Background(), []string{"keys", "create", "--", "-dash"}, &out, &errb); err != nil || !strings.Contains(out.String(), `Created key "-dash"`) {
		t.Fatalf("after --: %v %s %s", err, out.String(), errb.String())
	}
	if !strings.Contains(errb.String(), "created a new key database at ") {
		t.Fatalf("a new database made without a word: %q", errb.String())
	}
}
