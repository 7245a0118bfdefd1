package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ralf-gateway/ralf/core/fixtures"
)

const okProvider = "providers:\n  - {name: a, base_url: \"http://127.0.0.1:8000/v1\", model: m}\n"

// TestRules checks that every validation rule rejects with its path, one case at a time.
func TestRules(t *testing.T) {
	cases := []struct {
		name, yaml string
		env        []string
		want       string
	}{
		{"yaml syntax has line", okProvider + "store: memory://\nlog: level: x\n", nil, "yaml: line 4: mapping values are not allowed"},
		{"duplicate key has line", okProvider + "store: memory://\nstore: memory://\n", nil, "line 4"},
		{"top level not a mapping", "- a\n- b\n", nil, "yaml:"},
		{"no providers", "store: memory://\n", nil, "providers: declare at least one provider"},
		{"providers not a list", "providers: {name: a}\n", nil, "providers: must be a list"},
		{"unknown top key", okProvider + "bogus: 1\n", nil, "bogus: unknown key"},
		{"unknown nested key", okProvider + "limits: {rate: {reqests: 5}}\n", nil, `limits.rate.reqests: unknown key (did you mean "requests"?)`},
		{"unknown provider key", "providers:\n  - {name: a, base_url: \"http://h/v1\", model: m}\n  - {name: b, base_url: \"http://h/v1\", modle: m}\n", nil, `providers[1].modle: unknown key (did you mean "model"?)`},
		{"keys are case-sensitive", okProvider + "Server: {listen: \":1\"}\n", nil, "Server: unknown key"},
		{"block not a mapping", okProvider + "server: 3\n", nil, "server: must be a mapping of keys, not a number"},
		{"listen", okProvider + "server: {listen: \"nope\"}\n", nil, `server.listen: must be host:port`},
		{"listen port", okProvider + "server: {listen: \":99999\"}\n", nil, `server.listen: invalid port`},
		{"max_body_bytes", okProvider + "server: {max_body_bytes: 0}\n", nil, "server.max_body_bytes: must be greater than 0"},
		{"shutdown_timeout", okProvider + "server: {shutdown_timeout: -1s}\n", nil, "server.shutdown_timeout: must be greater than 0"},
		{"log level", okProvider + "log: {level: loud}\n", nil, `log.level: must be one of debug, info, warn, error, not "loud"`},
		{"log format", okProvider + "log: {format: xml}\n", nil, `log.format: must be json or console, not "xml"`},
		{"strategy", okProvider + "routing: {strategy: random}\n", nil, `routing.strategy: must be round_robin or weighted, not "random"`},
		{"max_attempts", okProvider + "routing: {max_attempts: 0}\n", nil, "routing.max_attempts: must be greater than 0"},
		{"failure_threshold", okProvider + "routing: {failure_threshold: 0}\n", nil, "routing.failure_threshold: must be greater than 0"},
		{"cooldown syntax", okProvider + "routing: {cooldown: 3x}\n", nil, `routing.cooldown: invalid duration "3x"`},
		{"cooldown zero", okProvider + "routing: {cooldown: 0s}\n", nil, "routing.cooldown: must be greater than 0"},
		{"first_byte_timeout", okProvider + "routing: {first_byte_timeout: 0s}\n", nil, "routing.first_byte_timeout: must be greater than 0"},
		{"idle_timeout", okProvider + "routing: {idle_timeout: 0s}\n", nil, "routing.idle_timeout: must be greater than 0"},
		{"int not a number", okProvider + "routing: {max_attempts: many}\n", nil, `routing.max_attempts: must be a whole number, not "many"`},
		{"int fraction", okProvider + "routing: {max_attempts: 1.5}\n", nil, "routing.max_attempts: must be a whole number"},
		{"bool", okProvider + "auth: {enabled: maybe}\n", nil, `auth.enabled: must be true or false, not "maybe"`},
		{"name required", "providers:\n  - {base_url: \"http://h/v1\", model: m}\n", nil, "providers[0].name: is required"},
		{"name charset", "providers:\n  - {name: Groq, base_url: \"http://h/v1\", model: m}\n", nil, `providers[0].name: "Groq" must match [a-z0-9_-]+`},
		{"name unique", "providers:\n  - {name: a, base_url: \"http://h/v1\", model: m}\n  - {name: a, base_url: \"http://h/v1\", model: m}\n", nil, `providers[1].name: "a" is already used by providers[0]`},
		{"dialect", "providers:\n  - {name: a, dialect: klingon, base_url: \"http://h/v1\", model: m}\n", nil, `providers[0].dialect: unknown dialect "klingon"`},
		{"base_url required", "providers:\n  - {name: a, model: m}\n", nil, "providers[0].base_url: is required"},
		{"base_url scheme", "providers:\n  - {name: a, base_url: \"ftp://h/v1\", model: m}\n", nil, "providers[0].base_url: must be an absolute http(s) URL"},
		{"base_url relative", "providers:\n  - {name: a, base_url: \"/v1\", model: m}\n", nil, "providers[0].base_url: must be an absolute http(s) URL"},
		{"base_url no host", "providers:\n  - {name: a, base_url: \"http:///v1\", model: m}\n", nil, "providers[0].base_url: must be an absolute http(s) URL"},
		{"model required", "providers:\n  - {name: a, base_url: \"http://h/v1\"}\n", nil, "providers[0].model: is required"},
		{"weight zero", "providers:\n  - {name: a, base_url: \"http://h/v1\", model: m, weight: 0}\n", nil, "providers[0].weight: must be 1 or more"},
		{"timeout", "providers:\n  - {name: a, base_url: \"http://h/v1\", model: m, timeout: 0s}\n", nil, "providers[0].timeout: must be greater than 0"},
		{"header name", "providers:\n  - {name: a, base_url: \"http://h/v1\", model: m, headers: {\"Bad Header\": x}}\n", nil, `providers[0].headers: "Bad Header" is not a valid header name`},
		{"headers values are text", "providers:\n  - {name: a, base_url: \"http://h/v1\", model: m, headers: {X-A: [1]}}\n", nil, "providers[0].headers.X-A: must be a single value, not a list"},
		{"max_messages", okProvider + "limits: {max_messages: 0}\n", nil, "limits.max_messages: must be greater than 0"},
		{"max_message_chars", okProvider + "limits: {max_message_chars: -1}\n", nil, "limits.max_message_chars: must be greater than 0"},
		{"rate requests", okProvider + "limits: {rate: {requests: 0}}\n", nil, "limits.rate.requests: must be greater than 0"},
		{"rate window", okProvider + "limits: {rate: {window: 0s}}\n", nil, "limits.rate.window: must be greater than 0"},
		{"on_store_error", okProvider + "limits: {rate: {on_store_error: maybe}}\n", nil, `limits.rate.on_store_error: must be allow or deny, not "maybe"`},
		{"store scheme", okProvider + "store: mongo://x\n", nil, `store: unknown store "mongo://"`},
		{"store not a URL", okProvider + "store: data.db\n", nil, "store: must be a URL"},
		{"sqlite path", okProvider + "store: \"sqlite://\"\n", nil, "store: sqlite:// needs a path"},
		{"redis host", okProvider + "store: \"redis:///0\"\n", nil, "store: redis:// needs a host"},
		{"redis db", okProvider + "store: \"redis://h:6379/x\"\n", nil, "store: redis:// database must be a number"},
		{"rediss host", okProvider + "store: \"rediss:///0\"\n", nil, "store: rediss:// needs a host"},
		{"redis password with a #", okProvider + "store: \"redis://:pa#ss@h:6379/0\"\n", nil, "percent-encoded"},
		{"redis user and password with a #", okProvider + "store: \"redis://default:2024#Spring@h:6379/0\"\n", nil, "has a # in it: a password holding"},
		{"cors origin", okProvider + "cors: {allowed_origins: [\"*\", \"example.com\"]}\n", nil, `cors.allowed_origins[1]: "example.com" must be "*" or an origin`},
		{"cors origin with path", okProvider + "cors: {allowed_origins: [\"https://a.example/app\"]}\n", nil, "cors.allowed_origins[0]:"},
		{"unclosed expansion", "providers:\n  - {name: a, base_url: \"http://h/v1\", model: \"${M\"}\n", nil, "providers[0].model: unclosed ${ in value"},
		{"env value named not echoed", okProvider + "routing: {cooldown: \"${CD}\"}\n", []string{"CD", "soon"}, "routing.cooldown: invalid duration the value of ${CD}"},
		{"env PORT", okProvider, []string{"PORT", "http"}, `PORT: must be a port number, not "http"`},
		{"env REQUIRE_AUTH", okProvider, []string{"REQUIRE_AUTH", "yes please"}, "REQUIRE_AUTH: must be true or false"},
		{"env RATE_LIMIT_ENABLED", okProvider, []string{"RATE_LIMIT_ENABLED", "on"}, "RATE_LIMIT_ENABLED: must be true or false"},
		{"env RATE_LIMIT_MAX", okProvider, []string{"RATE_LIMIT_MAX", "0"}, "RATE_LIMIT_MAX: must be a whole number greater than 0"},
		{"env RATE_LIMIT_WINDOW_MS", okProvider, []string{"RATE_LIMIT_WINDOW_MS", "60s"}, "RATE_LIMIT_WINDOW_MS: must be milliseconds"},
		{"key equals master key", okProvider + "auth: {master_key: same, keys: [other, same]}\n", nil, "auth.keys[1]: must differ from the master key"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := Parse([]byte(tc.yaml), Options{Getenv: envOf(tc.env...), KnownDialect: dialects, KnownStore: stores})
			if err == nil {
				t.Fatalf("accepted: %+v", c)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error lacks %q:\n%v", tc.want, err)
			}
			if c != nil {
				t.Fatal("a config came back with an error")
			}
		})
	}
}

// TestValidForms checks accepted spellings and what they decode to.
func TestValidForms(t *testing.T) {
	cases := []struct {
		name, yaml string
		env        []string
		check      func(*Config) bool
	}{
		{"keys as comma string", okProvider + "auth: {keys: \" k1, k2 ,,k3 \"}\n", nil,
			func(c *Config) bool { return strings.Join(c.Auth.Keys, "|") == "k1|k2|k3" }},
		{"keys as list", okProvider + "auth: {keys: [k1, k2]}\n", nil,
			func(c *Config) bool { return strings.Join(c.Auth.Keys, "|") == "k1|k2" }},
		{"keys from env comma list", okProvider + "auth: {keys: \"${PUB}\"}\n", []string{"PUB", "a,b"},
			func(c *Config) bool { return strings.Join(c.Auth.Keys, "|") == "a|b" }},
		{"keys from unset env with empty default", okProvider + "auth: {keys: \"${PUB:-}\"}\n", nil,
			func(c *Config) bool { return len(c.Auth.Keys) == 0 }},
		{"origins as comma string", okProvider + "cors: {allowed_origins: \"https://a.example, http://localhost:5173\"}\n", nil,
			func(c *Config) bool {
				return strings.Join(c.CORS.AllowedOrigins, "|") == "https://a.example|http://localhost:5173"
			}},
		{"default used when unset", okProvider + "log: {level: \"${LVL:-warn}\"}\n", nil,
			func(c *Config) bool { return c.Log.Level == "warn" }},
		{"default used when empty", okProvider + "log: {level: \"${LVL:-warn}\"}\n", []string{"LVL", ""},
			func(c *Config) bool { return c.Log.Level == "warn" }},
		{"env wins over default", okProvider + "log: {level: \"${LVL:-warn}\"}\n", []string{"LVL", "error"},
			func(c *Config) bool { return c.Log.Level == "error" }},
		{"escaped dollar brace", "providers:\n  - {name: a, base_url: \"http://h/v1\", model: \"$${X}\"}\n", []string{"X", "no"},
			func(c *Config) bool { return c.Providers[0].Model == "${X}" }},
		{"expanded value cannot inject yaml", "providers:\n  - {name: a, base_url: \"http://h/v1\", model: \"${M}\"}\n", []string{"M", "m\nstore: x://"},
			func(c *Config) bool {
				return c.Providers[0].Model == "m\nstore: x://" && c.Store == "sqlite://data/ralf.db"
			}},
		{"bool as string", okProvider + "auth: {enabled: \"1\"}\nlimits: {rate: {enabled: \"false\"}}\n", nil,
			func(c *Config) bool { return c.Auth.Enabled && !c.Limits.Rate.Enabled }},
		{"int from env", okProvider + "routing: {max_attempts: \"${N}\"}\n", []string{"N", "5"},
			func(c *Config) bool { return c.Routing.MaxAttempts == 5 }},
		{"int64 from string", okProvider + "server: {max_body_bytes: \"2_000_000\"}\n", nil,
			func(c *Config) bool { return c.Server.MaxBodyBytes == 2000000 }},
		{"duration", okProvider + "routing: {cooldown: 1m30s}\n", nil,
			func(c *Config) bool { return c.Routing.Cooldown == 90*time.Second }},
		{"null keeps default", okProvider + "routing: {cooldown: null}\nserver:\n", nil,
			func(c *Config) bool { return c.Routing.Cooldown == 30*time.Second && c.Server.Listen == ":3000" }},
		{"trailing slashes trimmed", "providers:\n  - {name: a, base_url: \"https://h.example/v1//\", model: m}\n", nil,
			func(c *Config) bool { return c.Providers[0].BaseURL == "https://h.example/v1" }},
		{"weighted", "routing: {strategy: weighted}\nproviders:\n  - {name: a, base_url: \"http://h/v1\", model: m, weight: 5}\n", nil,
			func(c *Config) bool { return c.Routing.Strategy == "weighted" && c.Providers[0].Weight == 5 }},
		{"stores", okProvider + "store: \"redis://:pw@127.0.0.1:6379/2\"\n", nil,
			func(c *Config) bool { return c.Store == "redis://:pw@127.0.0.1:6379/2" }},
		{"sqlite absolute", okProvider + "store: \"sqlite:///var/lib/ralf/ralf.db\"\n", nil,
			func(c *Config) bool { return c.Store == "sqlite:///var/lib/ralf/ralf.db" }},
		{"memory", okProvider + "store: \"memory://\"\n", nil,
			func(c *Config) bool { return c.Store == "memory://" }},
		{"ipv6 listen with PORT", okProvider + "server: {listen: \"[::1]:3000\"}\n", []string{"PORT", "4000"},
			func(c *Config) bool { return c.Server.Listen == "[::1]:4000" }},
		{"PORT with default listen", okProvider, []string{"PORT", "8080"},
			func(c *Config) bool { return c.Server.Listen == ":8080" }},
		{"DEBUG other than true ignored", okProvider, []string{"DEBUG", "express:*"},
			func(c *Config) bool { return c.Log.Level == "info" }},
		{"empty seed env ignored", okProvider + "auth: {enabled: true, master_key: m}\n", []string{"REQUIRE_AUTH", "", "MASTER_API_KEY", ""},
			func(c *Config) bool { return c.Auth.Enabled && c.Auth.MasterKey == "m" }},
		{"headers keep case", "providers:\n  - {name: a, base_url: \"http://h/v1\", model: m, headers: {HTTP-Referer: \"https://x.example\"}}\n", nil,
			func(c *Config) bool { return c.Providers[0].Headers["HTTP-Referer"] == "https://x.example" }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := Parse([]byte(tc.yaml), Options{Getenv: envOf(tc.env...), KnownDialect: dialects, KnownStore: stores})
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(c) {
				t.Fatalf("unexpected result: %+v", c)
			}
		})
	}
}

func TestSeveralErrorsAllListed(t *testing.T) {
	_, err := parse(t, `
routing: {cooldown: 3x}
providers:
  - {name: a, base_url: "http://h/v1", model: m}
  - {name: b, base_url: "http://h/v1", model: m}
  - {name: c, base_url: "nope", model: m}
store: "mongo://"
`)
	if err == nil {
		t.Fatal("accepted")
	}
	lines := strings.Split(err.Error(), "\n")
	want := []string{"routing.cooldown: ", "providers[2].base_url: ", "store: "}
	if len(lines) != len(want) {
		t.Fatalf("want one line per error %v, got:\n%v", want, err)
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("line %d = %q, want prefix %q", i, lines[i], w)
		}
	}
	// errors.Join: each error is reachable on its own (ralf check prints them one per line).
	if u, ok := err.(interface{ Unwrap() []error }); !ok || len(u.Unwrap()) != 3 {
		t.Fatalf("not a joined error of 3: %T", err)
	}
}

func TestEmptyKeyWarnings(t *testing.T) {
	cases := []struct {
		name, key string
		env       []string
		enabled   bool
		warning   string
	}{
		{"unset var", "api_key: ${GROQ_API_KEY}", nil, false, "providers[0] (p): api_key is empty (GROQ_API_KEY unset?), provider skipped"},
		{"empty var", "api_key: ${GROQ_API_KEY}", []string{"GROQ_API_KEY", ""}, false, "GROQ_API_KEY unset?"},
		{"empty default", "api_key: ${GROQ_API_KEY:-}", nil, false, "GROQ_API_KEY unset?"},
		{"literal empty", "api_key: \"\"", nil, false, "providers[0] (p): api_key is empty, provider skipped"},
		{"set var", "api_key: ${GROQ_API_KEY}", []string{"GROQ_API_KEY", "gsk-x"}, true, ""},
		{"no key at all", "", nil, true, ""},
		{"null key", "api_key:", nil, true, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			y := "providers:\n  - name: p\n    base_url: http://h/v1\n    model: m\n    " + tc.key + "\n"
			c, err := parse(t, y, tc.env...)
			if err != nil {
				t.Fatal(err)
			}
			if c.Providers[0].Enabled != tc.enabled {
				t.Fatalf("enabled = %v, want %v", c.Providers[0].Enabled, tc.enabled)
			}
			all := strings.Join(c.Warnings, "\n")
			if tc.warning == "" && all != "" {
				t.Fatalf("unexpected warnings: %v", all)
			}
			if !strings.Contains(all, tc.warning) {
				t.Fatalf("warnings %q lack %q", all, tc.warning)
			}
			if !tc.enabled && !strings.Contains(all, "no provider is enabled") {
				t.Fatalf("zero enabled providers must warn: %q", all)
			}
		})
	}
}

func TestSecretsNeverInErrorsTable(t *testing.T) {
	const key, master, pub = "sk-SECRET-key-1", "MASTER-secret-2", "PUBLIC-secret-3"
	env := []string{"K", key, "MASTER_API_KEY", master, "PUBLIC_API_KEYS", pub + ",x"}
	cases := []struct {
		name, yaml string
		env        []string
	}{
		{"key in every typed field", `
server: {listen: "${K}", max_body_bytes: "${K}", shutdown_timeout: "${K}"}
log: {level: "${K}", format: "${K}"}
routing: {strategy: "${K}", max_attempts: "${K}", cooldown: "${K}"}
providers:
  - {name: "${K}", dialect: "${K}", base_url: "${K}", model: m, api_key: "${K}", weight: "${K}", timeout: "${K}"}
auth: {enabled: "${K}"}
limits: {rate: {on_store_error: "${K}", requests: "${K}"}}
store: "${K}"
`, env},
		{"keys equal master", okProvider + "auth: {master_key: \"${K}\", keys: [\"${K}\"]}\n", []string{"K", key}},
		{"env keys equal env master", okProvider, []string{"MASTER_API_KEY", master, "PUBLIC_API_KEYS", "x," + master}},
		{"store with password", okProvider + "store: \"mongo://u:${K}@h/0\"\n", env},
		{"base_url with key", "providers:\n  - {name: a, base_url: \"https://h/v1?key=${K}\", model: m}\n", env},
		{"bad yaml", "providers: [\n  api_key: ${K}\n", env},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := parse(t, tc.yaml, tc.env...)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, s := range []string{key, master, pub} {
				if strings.Contains(err.Error(), s) {
					t.Fatalf("secret %q in error:\n%v", s, err)
				}
			}
		})
	}
}

// TestShippedConfigs loads gateway.yaml and every configs/*.yaml as users will run them.
func TestShippedConfigs(t *testing.T) {
	root := fixtures.Root(t)
	files, err := filepath.Glob(filepath.Join(root, "configs", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 4 {
		t.Fatalf("want the 4 example configs, found %v", files)
	}
	files = append([]string{filepath.Join(root, "gateway.yaml")}, files...)
	allKeys := []string{"GROQ_API_KEY", "gk", "CEREBRAS_API_KEY", "ck", "OPENROUTER_API_KEY", "ok",
		"GEMINI_API_KEY", "gm", "HF_TOKEN", "hf", "MASTER_API_KEY", "master"}
	for _, f := range files {
		for _, withKeys := range []bool{false, true} {
			name := filepath.Base(f) + map[bool]string{false: "/no env", true: "/keys set"}[withKeys]
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				var env []string
				if withKeys {
					env = allKeys
				}
				c, err := Load(f, Options{Getenv: envOf(env...), KnownDialect: dialects, KnownStore: stores})
				if err != nil {
					t.Fatal(err)
				}
				raw, _ := os.ReadFile(f)
				if c.Path != f || c.Hash == ([32]byte{}) || len(c.Providers) == 0 {
					t.Fatalf("path %q hash %x providers %d", c.Path, c.Hash, len(c.Providers))
				}
				if again, _ := Parse(raw, Options{Getenv: envOf(env...)}); again == nil || again.Hash != c.Hash {
					t.Fatal("hash is not the sha256 of the file bytes")
				}
				disabled := 0
				for _, p := range c.Providers {
					if !p.Enabled {
						disabled++
						if withKeys {
							t.Errorf("provider %s disabled with its key set", p.Name)
						}
					}
				}
				if skipped := strings.Count(strings.Join(c.Warnings, "\n"), "provider skipped"); skipped != disabled {
					t.Errorf("%d providers disabled but %d skip warnings: %v", disabled, skipped, c.Warnings)
				}
				if withKeys && len(c.Warnings) != 0 {
					t.Errorf("warnings with every key set: %v", c.Warnings)
				}
			})
		}
	}
}

func TestGatewayYAMLSeedProviders(t *testing.T) {
	root := fixtures.Root(t)
	c, err := Load(filepath.Join(root, "gateway.yaml"), Options{Getenv: envOf("GEMINI_API_KEY", "gm"), KnownDialect: dialects, KnownStore: stores})
	if err != nil {
		t.Fatal(err)
	}
	want := []struct{ name, dialect, base, model string }{
		{"groq", "openai", "https://api.groq.com/openai/v1", "moonshotai/kimi-k2-instruct-0905"},
		{"cerebras", "openai", "https://api.cerebras.ai/v1", "zai-glm-4.6"},
		{"openrouter", "openai", "https://openrouter.ai/api/v1", "deepseek/deepseek-r1:free"},
		{"gemini", "gemini", "https://generativelanguage.googleapis.com/v1beta", "gemini-3-flash-preview"},
		{"huggingface", "openai", "https://router.huggingface.co/v1", "meta-llama/Llama-3.1-8B-Instruct"},
	}
	if len(c.Providers) != len(want) {
		t.Fatalf("%d providers", len(c.Providers))
	}
	for i, w := range want {
		p := c.Providers[i]
		if p.Name != w.name || p.Dialect != w.dialect || p.BaseURL != w.base || p.Model != w.model {
			t.Errorf("providers[%d] = %s %s %s %s, want %+v", i, p.Name, p.Dialect, p.BaseURL, p.Model, w)
		}
		if p.Enabled != (w.name == "gemini") {
			t.Errorf("%s enabled = %v with only GEMINI_API_KEY set", p.Name, p.Enabled)
		}
	}
	if len(c.Warnings) != 4 || c.Auth.Enabled || c.Auth.MasterKey != "" || len(c.Auth.Keys) != 0 ||
		!c.Limits.Rate.Enabled || c.Limits.Rate.Requests != 10 || c.Limits.Rate.Window != time.Minute ||
		!strings.HasPrefix(c.Store, "sqlite://") || strings.Join(c.CORS.AllowedOrigins, ",") != "*" {
		t.Fatalf("%+v", c)
	}
	c, err = Load(filepath.Join(root, "gateway.yaml"), Options{Getenv: envOf("REQUIRE_AUTH", "true", "PUBLIC_API_KEYS", "a,b", "MASTER_API_KEY", "m")})
	if err != nil || !c.Auth.Enabled || len(c.Auth.Keys) != 2 || c.Auth.MasterKey != "m" {
		t.Fatalf("auth from env: %+v %v", c.Auth, err)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "gateway.yaml"), Options{})
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("err = %v", err)
	}
}

func TestParseDotEnvForms(t *testing.T) {
	cases := []struct {
		name, in string
		want     [][2]string
		err      bool
	}{
		{"plain", "A=1", [][2]string{{"A", "1"}}, false},
		{"export", "export A=1", [][2]string{{"A", "1"}}, false},
		{"double quotes with newline", `A="x\ny"`, [][2]string{{"A", "x\ny"}}, false},
		{"single quotes literal", `A='x\n # y'`, [][2]string{{"A", `x\n # y`}}, false},
		{"inline comment", "A=v # note", [][2]string{{"A", "v"}}, false},
		{"hash inside value", "A=a#b", [][2]string{{"A", "a#b"}}, false},
		{"empty value", "A=", [][2]string{{"A", ""}}, false},
		{"equals in value", "A=b=c", [][2]string{{"A", "b=c"}}, false},
		{"comments and blanks", "# c\n\n  \nA=1\r\n", [][2]string{{"A", "1"}}, false},
		{"no equals", "JUSTTEXT", nil, true},
		{"space in key", "A B=1", nil, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseDotEnv([]byte(tc.in))
			if (err != nil) != tc.err {
				t.Fatalf("err = %v", err)
			}
			if !tc.err && (len(got) != len(tc.want) || (len(got) > 0 && got[0] != tc.want[0])) {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestRedactedDeepCopy(t *testing.T) {
	c, err := parse(t, `
providers:
  - {name: a, base_url: "http://h/v1", model: m, api_key: sk-1, headers: {Authorization: "Bearer sk-2", X-Title: ralf}, params: {n: {k: 1}}}
auth: {master_key: mk-3, keys: [ck-4]}
store: "redis://:pw-5@127.0.0.1:6379/0"
`)
	if err != nil {
		t.Fatal(err)
	}
	r := c.Redacted()
	dump := strings.Join([]string{r.Providers[0].APIKey, r.Providers[0].Headers["Authorization"], r.Auth.MasterKey, strings.Join(r.Auth.Keys, ","), r.Store}, " ")
	for _, s := range []string{"sk-1", "sk-2", "mk-3", "ck-4", "pw-5"} {
		if strings.Contains(dump, s) {
			t.Errorf("%q left in redacted copy: %s", s, dump)
		}
	}
	if r.Providers[0].Headers["X-Title"] != "ralf" {
		t.Error("non-secret header lost")
	}
	r.Providers[0].Params["n"].(map[string]any)["k"] = 2
	r.CORS.AllowedOrigins[0] = "changed"
	if c.Providers[0].Params["n"].(map[string]any)["k"] != 1 || c.CORS.AllowedOrigins[0] != "*" || c.Providers[0].APIKey != "sk-1" {
		t.Fatal("redacted copy shares state with the original")
	}
}
