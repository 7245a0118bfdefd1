package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func envOf(kv ...string) func(string) (string, bool) {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

var dialects = func(d string) bool { return d == "openai" || d == "gemini" }
var stores = func(s string) bool { return s == "sqlite" || s == "redis" || s == "rediss" || s == "memory" }

func parse(t *testing.T, yaml string, kv ...string) (*Config, error) {
	t.Helper()
	return Parse([]byte(yaml), Options{Getenv: envOf(kv...), KnownDialect: dialects, KnownStore: stores})
}

const minimal = "providers:\n  - {name: a, base_url: \"http://127.0.0.1:8000/v1/\", model: m}\n"

func TestDefaults(t *testing.T) {
	c, err := parse(t, minimal)
	if err != nil {
		t.Fatal(err)
	}
	p := c.Providers[0]
	if c.Server.Listen != ":3000" || c.Server.MaxBodyBytes != 1<<20 || c.Routing.MaxAttempts != 3 ||
		c.Routing.Cooldown != 30*time.Second || c.Limits.Rate.Requests != 10 || c.Store != "sqlite://data/ralf.db" ||
		c.CORS.AllowedOrigins[0] != "*" || c.Log.Format != "json" || c.Limits.Rate.OnStoreError != "allow" {
		t.Fatalf("defaults: %+v", c)
	}
	if p.Dialect != "openai" || p.Weight != 1 || p.Timeout != 120*time.Second || !p.Enabled || p.BaseURL != "http://127.0.0.1:8000/v1" {
		t.Fatalf("provider defaults: %+v", p)
	}
}

func TestEveryErrorWithItsPath(t *testing.T) {
	_, err := parse(t, `
server: {listen: "nope", max_body_bytes: 0}
log: {level: loud}
routing: {strategy: random, cooldown: 3x, max_attempts: 0}
providers:
  - {name: groq, base_url: "https://api.groq.com/openai/v1", model: m, modle: x, headers: {host: h, transfer-encoding: chunked}}
  - {name: groq, base_url: "ftp://x", model: m, dialect: klingon, weight: 0}
  - {name: "Bad Name", base_url: "http://h/v1", timeout: soon}
limits: {rate: {on_store_error: maybe}}
store: "mongo://x"
cors: {allowed_origins: ["not an origin"]}
bogus: 1
`)
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{
		`server.listen:`, `server.max_body_bytes: must be greater than 0`, `log.level:`,
		`routing.strategy:`, `routing.cooldown: invalid duration "3x"`, `routing.max_attempts:`,
		`providers[0].modle: unknown key (did you mean "model"?)`,
		`providers[1].name: "groq" is already used by providers[0]`, `providers[1].base_url:`,
		`providers[1].dialect: unknown dialect "klingon"`, `providers[1].weight:`,
		`providers[2].name:`, `providers[2].model: is required`, `providers[2].timeout: invalid duration`,
		`limits.rate.on_store_error:`, `store: unknown store`, `cors.allowed_origins[0]:`, `bogus: unknown key`,
		`providers[0].headers: Host is taken from base_url`, `providers[0].headers: transfer-encoding is managed by ralf`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
}

func TestYAMLSyntaxErrorHasLine(t *testing.T) {
	_, err := parse(t, "providers:\n  - name: a\n   base_url: x\n")
	if err == nil || !strings.Contains(err.Error(), "line") {
		t.Fatalf("err %v", err)
	}
}

func TestEnvExpansion(t *testing.T) {
	c, err := parse(t, `
server: {listen: "${HOST:-127.0.0.1}:${P:-4000}"}
providers:
  - name: a
    base_url: ${BASE}
    model: ${MODEL:-default-model}
    api_key: ${KEY}
    headers: {X-Title: "${TITLE:-ralf}"}
    params: {thinkingConfig: {thinkingBudget: 0}, note: "${NOTE}"}
auth: {enabled: "${REQUIRE:-false}", keys: "${KEYS}"}
limits: {rate: {window: "${W:-2m}"}}
`, "BASE", "http://x/v1", "KEY", "sk-1", "KEYS", "a, b,,c", "NOTE", "hi", "REQUIRE", "true")
	if err != nil {
		t.Fatal(err)
	}
	p := c.Providers[0]
	if c.Server.Listen != "127.0.0.1:4000" || p.BaseURL != "http://x/v1" || p.Model != "default-model" || p.APIKey != "sk-1" {
		t.Fatalf("%+v %+v", c.Server, p)
	}
	if p.Headers["X-Title"] != "ralf" {
		t.Fatalf("header names keep their case: %v", p.Headers)
	}
	if tc, ok := p.Params["thinkingConfig"].(map[string]any); !ok || tc["thinkingBudget"] != 0 || p.Params["note"] != "hi" {
		t.Fatalf("params keep their case and expand: %#v", p.Params)
	}
	if !c.Auth.Enabled || strings.Join(c.Auth.Keys, "|") != "a|b|c" || c.Limits.Rate.Window != 2*time.Minute {
		t.Fatalf("auth %+v window %v", c.Auth, c.Limits.Rate.Window)
	}
	c, err = parse(t, minimal+"auth: {keys: [k1, k2]}\n")
	if err != nil || strings.Join(c.Auth.Keys, "|") != "k1|k2" {
		t.Fatalf("list form: %v %v", c.Auth.Keys, err)
	}
}

func TestEmptyKeySkipsProviderWithWarning(t *testing.T) {
	c, err := parse(t, `
providers:
  - {name: groq, base_url: "https://api.groq.com/openai/v1", model: m, api_key: "${GROQ_API_KEY}"}
  - {name: local, base_url: "http://127.0.0.1:8000/v1", model: m}
  - {name: off, base_url: "http://127.0.0.1:8000/v1", model: m, enabled: false}
`)
	if err != nil {
		t.Fatal(err)
	}
	if c.Providers[0].Enabled || !c.Providers[1].Enabled || c.Providers[2].Enabled {
		t.Fatalf("enabled: %v %v %v", c.Providers[0].Enabled, c.Providers[1].Enabled, c.Providers[2].Enabled)
	}
	if len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0], "GROQ_API_KEY") || !strings.Contains(c.Warnings[0], "groq") {
		t.Fatalf("warnings %v", c.Warnings)
	}
}

func TestSeedEnvOverrides(t *testing.T) {
	c, err := parse(t, "server: {listen: \"127.0.0.1:3000\"}\n"+minimal+"auth: {enabled: false}\n",
		"PORT", "8080", "DEBUG", "true", "CORS_ORIGINS", "https://a.example, https://b.example",
		"REQUIRE_AUTH", "true", "MASTER_API_KEY", "master-x", "PUBLIC_API_KEYS", "k1,k2",
		"RATE_LIMIT_ENABLED", "false", "RATE_LIMIT_MAX", "99", "RATE_LIMIT_WINDOW_MS", "1500")
	if err != nil {
		t.Fatal(err)
	}
	if c.Server.Listen != "127.0.0.1:8080" || c.Log.Level != "debug" || len(c.CORS.AllowedOrigins) != 2 ||
		!c.Auth.Enabled || c.Auth.MasterKey != "master-x" || len(c.Auth.Keys) != 2 || c.Limits.Rate.Enabled ||
		c.Limits.Rate.Requests != 99 || c.Limits.Rate.Window != 1500*time.Millisecond {
		t.Fatalf("%+v", c)
	}
	_, err = parse(t, minimal, "RATE_LIMIT_MAX", "lots", "PORT", "http")
	if err == nil || !strings.Contains(err.Error(), "RATE_LIMIT_MAX") || !strings.Contains(err.Error(), "PORT") {
		t.Fatalf("bad env values: %v", err)
	}
}

func TestSecretsNeverInErrors(t *testing.T) {
	_, err := parse(t, `
providers:
  - {name: a, base_url: "not-a-url", model: m, api_key: "${K}", timeout: "${K}"}
auth: {master_key: "${M}", keys: ["${M}"], enabled: "${K}"}
`, "K", "sk-secret-123", "M", "master-secret-456")
	if err == nil {
		t.Fatal("accepted")
	}
	// timeout and enabled get the key's value on purpose: the message must still not show it.
	for _, s := range []string{"sk-secret-123", "master-secret-456"} {
		if strings.Contains(err.Error(), s) {
			t.Fatalf("secret %q in error: %v", s, err)
		}
	}
}

func TestRedacted(t *testing.T) {
	c, err := parse(t, minimal+"auth: {master_key: m-secret, keys: [k-secret]}\n", "X", "")
	if err != nil {
		t.Fatal(err)
	}
	c.Providers[0].APIKey = "sk-secret"
	r := c.Redacted()
	s := strings.Join([]string{r.Providers[0].APIKey, r.Auth.MasterKey, strings.Join(r.Auth.Keys, ",")}, " ")
	if strings.Contains(s, "secret") || c.Providers[0].APIKey != "sk-secret" {
		t.Fatalf("redacted %q; original changed: %v", s, c.Providers[0].APIKey)
	}
}

func TestDotEnv(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, ".env")
	os.WriteFile(f, []byte("# comment\nexport RALF_T_A=1\nRALF_T_B=\"two words\"\nRALF_T_C='x # y'\nRALF_T_D=v # note\nRALF_T_SET=new\n"), 0o600)
	t.Setenv("RALF_T_SET", "old")
	for _, k := range []string{"RALF_T_A", "RALF_T_B", "RALF_T_C", "RALF_T_D"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	if err := LoadDotEnv(f); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{"RALF_T_A": "1", "RALF_T_B": "two words", "RALF_T_C": "x # y", "RALF_T_D": "v", "RALF_T_SET": "old"} {
		if got := os.Getenv(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if err := LoadDotEnv(filepath.Join(dir, "missing")); err != nil {
		t.Fatal(err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add(minimal)
	f.Add("providers: [{name: a}]\nserver: {listen: 5}\nauth: {keys: {a: 1}}")
	f.Add("${")
	f.Fuzz(func(t *testing.T, s string) {
		_, _ = Parse([]byte(s), Options{Getenv: envOf()})
	})
}

// TestParamsFromTheEnvironmentAreTyped: an unquoted param that is one ${VAR} and
// nothing else is sent as the number or boolean its value reads as; a quoted one, or
// one with other text, stays a string, as YAML reads the same text in the file.
func TestParamsFromTheEnvironmentAreTyped(t *testing.T) {
	c, err := parse(t, `
providers:
  - name: a
    base_url: http://x/v1
    model: m
    params:
      temperature: ${TEMP:-0.7}
      max_tokens: ${MAX}
      stream_options:
        include_usage: ${USAGE}
      user: "id-${ID}"
      quoted: "${ID}"
      stop: ${STOP}
      seed: ${SEED}
      big_seed: ${BIG_SEED}
      n: ${BIG}
      list: [1, "${ID}"]
`, "MAX", "256", "USAGE", "true", "ID", "42", "STOP", "END", "SEED", "NaN", "BIG", "1e3", "BIG_SEED", "18446744073709551615")
	if err != nil {
		t.Fatal(err)
	}
	p := c.Providers[0].Params
	want := map[string]any{"temperature": 0.7, "max_tokens": int64(256), "user": "id-42", "quoted": "42", "stop": "END",
		"seed": "NaN", "n": 1000.0, "big_seed": uint64(18446744073709551615)}
	for k, v := range want {
		if p[k] != v {
			t.Errorf("params.%s = %#v, want %#v", k, p[k], v)
		}
	}
	if so := p["stream_options"].(map[string]any); so["include_usage"] != true {
		t.Errorf("stream_options.include_usage = %#v", so["include_usage"])
	}
	if l := p["list"].([]any); l[1] != "42" {
		t.Errorf("a quoted list item = %#v, want the string", l[1])
	}
}

// TestParamsWithNumericKeys: YAML reads {50256: -100} with an integer key; JSON
// wants strings, so the keys become strings instead of failing at the first request.
func TestParamsWithNumericKeys(t *testing.T) {
	c, err := parse(t, "providers:\n  - {name: a, base_url: http://x/v1, model: m, params: {logit_bias: {50256: -100, 1: 5}}}\n")
	if err != nil {
		t.Fatal(err)
	}
	lb, ok := c.Providers[0].Params["logit_bias"].(map[string]any)
	if !ok || lb["50256"] != -100 || lb["1"] != 5 {
		t.Fatalf("logit_bias = %#v", c.Providers[0].Params["logit_bias"])
	}
}

// TestDotEnvQuotedWithComment: a quoted value keeps only what is inside its quotes
// when a comment follows, and a byte order mark does not hide the first variable.
func TestDotEnvQuotedWithComment(t *testing.T) {
	got, err := ParseDotEnv([]byte("\ufeffA=1\nB=\"sk-abc\" # prod\nC='x y'   #c\nD=\"a \\\" # b\" # c\nE=\"x\"y\nF='unterminated\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := [][2]string{{"A", "1"}, {"B", "sk-abc"}, {"C", "x y"}, {"D", `a " # b`}, {"E", `"x"y`}, {"F", "'unterminated"}}
	if len(got) != len(want) {
		t.Fatalf("got %q", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("line %d: got %q, want %q", i+1, got[i], want[i])
		}
	}
}

// TestBadOriginsFromTheEnvironmentAreNotEchoed: an invalid origin that came from a
// variable is named by the variable, as every other value from the environment.
func TestBadOriginsFromTheEnvironmentAreNotEchoed(t *testing.T) {
	for _, c := range []struct {
		yaml string
		env  []string
		name string
	}{
		{minimal + "cors: {allowed_origins: \"${MY_ORIGINS}\"}\n", []string{"MY_ORIGINS", "https://ok.example, secret-value"}, "${MY_ORIGINS}"},
		{minimal + "cors: {allowed_origins: [\"${ONE}\"]}\n", []string{"ONE", "secret-value"}, "${ONE}"},
		{minimal, []string{"CORS_ORIGINS", "secret-value"}, "${CORS_ORIGINS}"},
		{minimal + "cors: {allowed_origins: [\"${ONE}\"]}\n", []string{"ONE", "https://ok.example", "CORS_ORIGINS", "secret-value"}, "${CORS_ORIGINS}"},
	} {
		_, err := parse(t, c.yaml, c.env...)
		if err == nil || strings.Contains(err.Error(), "secret-value") || !strings.Contains(err.Error(), c.name) {
			t.Errorf("env %v: error %v; want it to name %s and not echo the value", c.env, err, c.name)
		}
	}
	if _, err := parse(t, minimal+"cors: {allowed_origins: [bad]}\n"); err == nil || !strings.Contains(err.Error(), `"bad"`) {
		t.Errorf("a value written in the file is quoted: %v", err)
	}
	if _, err := parse(t, minimal+"cors: {allowed_origins: [\"https://*.example.com\"]}\n"); err == nil || !strings.Contains(err.Error(), "no wildcards") {
		t.Errorf("a wildcard origin never matches a browser's Origin and must be refused: %v", err)
	}
}

func TestProtectMetricsWithoutMasterKeyWarns(t *testing.T) {
	c, err := parse(t, minimal+"auth: {protect_metrics: true}\n")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(c.Warnings, "\n"), "/metrics answers 403 to everyone") {
		t.Fatalf("warnings %q", c.Warnings)
	}
}

// TestParamsStringsThroughAnchors: a value YAML reads as a string stays one through
// anchors, aliases and merge keys, and when tagged !!str or written as a block scalar.
func TestParamsStringsThroughAnchors(t *testing.T) {
	c, err := parse(t, `
providers:
  - name: a
    base_url: http://x/v1
    model: m
    params: &p
      user: &u "${ID}"
      n: ${ID}
  - name: b
    base_url: http://x/v1
    model: m
    params: *p
  - name: c
    base_url: http://x/v1
    model: m
    params:
      <<: *p
      other: *u
      tagged: !!str ${ID}
      block: >-
        ${ID}
`, "ID", "42")
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []map[string]any{
		{"user": "42", "n": int64(42)},
		{"user": "42", "n": int64(42)},
		{"user": "42", "n": int64(42), "other": "42", "tagged": "42", "block": "42"},
	} {
		for k, v := range want {
			if got := c.Providers[i].Params[k]; got != v {
				t.Errorf("providers[%d].params.%s = %#v, want %#v", i, k, got, v)
			}
		}
	}
	// Outside params, nothing of the marking shows.
	c, err = parse(t, "providers:\n  - {name: a, base_url: \"${BASE}\", model: m, headers: {X-T: \"${ID}\"}}\n", "BASE", "http://x/v1", "ID", "42")
	if err != nil || c.Providers[0].BaseURL != "http://x/v1" || c.Providers[0].Headers["X-T"] != "42" {
		t.Fatalf("%+v %v", c.Providers, err)
	}
}

// TestAliasAsKeyCarriesNoMark: a value aliased into a key's place is a plain key,
// in params and in error messages alike.
func TestAliasAsKeyCarriesNoMark(t *testing.T) {
	c, err := parse(t, `
providers:
  - name: a
    base_url: http://x/v1
    model: &k "${TEAM:-blue}"
    params: {*k : 1}
`)
	if err != nil {
		t.Fatal(err)
	}
	if c.Providers[0].Params["${TEAM:-blue}"] != 1 {
		t.Fatalf("params %q", c.Providers[0].Params)
	}
	_, err = parse(t, "providers:\n  - {name: a, base_url: http://x/v1, model: &k \"${HDR}\", headers: {*k : blue}}\n")
	if err == nil || strings.Contains(err.Error(), "\x00") || !strings.Contains(err.Error(), `"${HDR}" is not a valid header name`) {
		t.Fatalf("error %q", err)
	}
}

func TestSQLiteMemoryRefused(t *testing.T) {
	if _, err := parse(t, minimal+"store: \"sqlite://:memory:\"\n"); err == nil || !strings.Contains(err.Error(), "use memory://") {
		t.Fatalf("err %v", err)
	}
}
