package config

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
)

var (
	nameRe   = regexp.MustCompile(`^[a-z0-9_-]+$`)
	headerRe = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
)

func (c *Config) validate(d *decoder, opts Options) {
	if _, port, err := net.SplitHostPort(c.Server.Listen); err != nil {
		d.errorf("server.listen", "must be host:port like \":3000\" or \"127.0.0.1:3000\", not %s", d.q("server.listen", c.Server.Listen))
	} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		d.errorf("server.listen", "invalid port in %s", d.q("server.listen", c.Server.Listen))
	}
	positive := func(path string, n int64) {
		if n <= 0 {
			d.errorf(path, "must be greater than 0")
		}
	}
	positive("server.max_body_bytes", c.Server.MaxBodyBytes)
	positive("server.shutdown_timeout", int64(c.Server.ShutdownTimeout))
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		d.errorf("log.level", "must be one of debug, info, warn, error, not %s", d.q("log.level", c.Log.Level))
	}
	switch c.Log.Format {
	case "json", "console":
	default:
		d.errorf("log.format", "must be json or console, not %s", d.q("log.format", c.Log.Format))
	}
	r := &c.Routing
	switch r.Strategy {
	case "round_robin", "weighted":
	default:
		d.errorf("routing.strategy", "must be round_robin or weighted, not %s", d.q("routing.strategy", r.Strategy))
	}
	positive("routing.max_attempts", int64(r.MaxAttempts))
	positive("routing.failure_threshold", int64(r.FailureThreshold))
	positive("routing.cooldown", int64(r.Cooldown))
	positive("routing.first_byte_timeout", int64(r.FirstByteTimeout))
	positive("routing.idle_timeout", int64(r.IdleTimeout))

	if len(c.Providers) == 0 {
		d.errorf("providers", "declare at least one provider")
	}
	seen := map[string]int{}
	enabled := 0
	for i := range c.Providers {
		p := &c.Providers[i]
		path := fmt.Sprintf("providers[%d]", i)
		switch {
		case p.Name == "":
			d.errorf(path+".name", "is required")
		case !nameRe.MatchString(p.Name):
			d.errorf(path+".name", "%s must match [a-z0-9_-]+", d.q(path+".name", p.Name))
		default:
			if j, dup := seen[p.Name]; dup {
				d.errorf(path+".name", "%s is already used by providers[%d]", d.q(path+".name", p.Name), j)
			} else {
				seen[p.Name] = i
			}
		}
		if p.Dialect == "" {
			p.Dialect = "openai"
		}
		if opts.KnownDialect != nil && !opts.KnownDialect(p.Dialect) {
			d.errorf(path+".dialect", "unknown dialect %s", d.q(path+".dialect", p.Dialect))
		}
		p.BaseURL = strings.TrimRight(p.BaseURL, "/")
		if u, err := url.Parse(p.BaseURL); p.BaseURL == "" {
			d.errorf(path+".base_url", "is required")
		} else if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			d.errorf(path+".base_url", "must be an absolute http(s) URL like https://api.groq.com/openai/v1")
		} else if u.RawQuery != "" || u.User != nil {
			d.errorf(path+".base_url", "must not carry a query or credentials: put the key in api_key")
		}
		if p.Model == "" {
			d.errorf(path+".model", "is required")
		}
		if p.Weight < 1 {
			d.errorf(path+".weight", "must be 1 or more")
		}
		positive(path+".timeout", int64(p.Timeout))
		for h := range p.Headers {
			switch {
			case !headerRe.MatchString(h):
				d.errorf(path+".headers", "%q is not a valid header name", h)
			case http.CanonicalHeaderKey(h) == "Host":
				d.errorf(path+".headers", "Host is taken from base_url and cannot be set here")
			case connectionHeaders[http.CanonicalHeaderKey(h)]:
				d.errorf(path+".headers", "%s is managed by ralf's connection to the upstream and cannot be set here", h)
			}
		}
		if p.Enabled {
			enabled++
		}
	}
	if len(c.Providers) > 0 && enabled == 0 {
		d.warnings = append(d.warnings, "no provider is enabled: set a provider's api_key (e.g. GROQ_API_KEY) — requests will get 503")
	}

	l := &c.Limits
	positive("limits.max_messages", int64(l.MaxMessages))
	positive("limits.max_message_chars", int64(l.MaxMessageChars))
	positive("limits.rate.requests", int64(l.Rate.Requests))
	positive("limits.rate.window", int64(l.Rate.Window))
	switch l.Rate.OnStoreError {
	case "allow", "deny":
	default:
		d.errorf("limits.rate.on_store_error", "must be allow or deny, not %s", d.q("limits.rate.on_store_error", l.Rate.OnStoreError))
	}

	if u, err := url.Parse(c.Store); err != nil || u.Scheme == "" {
		msg := "must be a URL like sqlite://data/ralf.db, redis://127.0.0.1:6379/0 or memory://"
		if strings.HasPrefix(c.Store, "redis") && strings.Contains(c.Store, "@") {
			msg += "; a password holding / # ? @ : % must be percent-encoded (/ as %2F, # as %23, ...)"
		}
		d.errorf("store", "%s", msg)
	} else if opts.KnownStore != nil && !opts.KnownStore(u.Scheme) {
		d.errorf("store", "unknown store %q (use sqlite://, redis:// or memory://)", u.Scheme+"://")
	} else if u.Scheme == "sqlite" && u.Host+u.Path == "" {
		d.errorf("store", "sqlite:// needs a path, like sqlite://data/ralf.db")
	} else if u.Scheme == "sqlite" && u.Host+u.Path == ":memory:" {
		d.errorf("store", "sqlite://:memory: is not a file; for a store in memory use memory://")
	} else if (u.Scheme == "redis" || u.Scheme == "rediss") && (u.Fragment != "" || strings.HasSuffix(c.Store, "#")) {
		// A # in a password starts a fragment: the rest of the URL, host included, is lost.
		d.errorf("store", "%s:// URL has a # in it: a password holding / # ? @ : %% must be percent-encoded (# as %%23, / as %%2F, ...)", u.Scheme)
	} else if (u.Scheme == "redis" || u.Scheme == "rediss") && u.Host == "" {
		d.errorf("store", "%s:// needs a host, like %s://127.0.0.1:6379/0", u.Scheme, u.Scheme)
	} else if db := strings.Trim(u.Path, "/"); (u.Scheme == "redis" || u.Scheme == "rediss") && db != "" {
		if n, err := strconv.Atoi(db); err != nil || n < 0 {
			d.errorf("store", "%s:// database must be a number, like %s://127.0.0.1:6379/0", u.Scheme, u.Scheme)
		}
	}

	for i, o := range c.CORS.AllowedOrigins {
		if o == "*" {
			continue
		}
		u, err := url.Parse(o)
		if err != nil || u.Scheme == "" || u.Host == "" || (u.Path != "" && u.Path != "/") || strings.Contains(u.Host, "*") {
			p := fmt.Sprintf("cors.allowed_origins[%d]", i)
			if _, item := d.envTmpl[p]; !item {
				if _, list := d.envTmpl["cors.allowed_origins"]; list {
					p = "cors.allowed_origins" // one variable gave the whole list
				}
			}
			d.errorf(p, "%s must be \"*\" or an origin like https://app.example.com (no wildcards: list each origin)", d.q(p, o))
		}
	}
	if c.Auth.ProtectMetrics && c.Auth.MasterKey == "" {
		d.warnings = append(d.warnings, "auth.protect_metrics is on but auth.master_key is empty: /metrics answers 403 to everyone")
	}
	if c.Auth.Enabled && c.Auth.MasterKey == "" && len(c.Auth.Keys) == 0 {
		d.warnings = append(d.warnings, "auth is on but no client key is configured: create managed keys with `ralf keys create NAME` or set auth.keys")
	}
	for i, k := range c.Auth.Keys {
		if c.Auth.MasterKey != "" && k == c.Auth.MasterKey {
			d.errorf(fmt.Sprintf("auth.keys[%d]", i), "must differ from the master key")
		}
	}
}

// connectionHeaders describe the connection or the body's framing: ralf's HTTP
// client writes them itself.
var connectionHeaders = map[string]bool{"Content-Length": true, "Transfer-Encoding": true, "Connection": true,
	"Trailer": true, "Upgrade": true, "Keep-Alive": true, "Te": true}

// Redacted returns a deep copy safe to print: every secret is replaced.
func (c *Config) Redacted() *Config {
	cp := *c
	cp.Providers = make([]Provider, len(c.Providers))
	for i, p := range c.Providers {
		if p.APIKey != "" {
			p.APIKey = "[redacted]"
		}
		h := make(map[string]string, len(p.Headers))
		for k, v := range p.Headers {
			lk := strings.ToLower(k)
			if strings.Contains(lk, "auth") || strings.Contains(lk, "key") || strings.Contains(lk, "token") {
				v = "[redacted]"
			}
			h[k] = v
		}
		p.Headers = h
		p.Params = deepCopy(p.Params).(map[string]any)
		cp.Providers[i] = p
	}
	if cp.Auth.MasterKey != "" {
		cp.Auth.MasterKey = "[redacted]"
	}
	cp.Auth.Keys = make([]string, len(c.Auth.Keys))
	for i := range cp.Auth.Keys {
		cp.Auth.Keys[i] = "[redacted]"
	}
	if u, err := url.Parse(c.Store); err == nil && u.User != nil {
		u.User = url.User("[redacted]")
		cp.Store = u.String()
	}
	cp.CORS.AllowedOrigins = append([]string(nil), c.CORS.AllowedOrigins...)
	cp.Warnings = append([]string(nil), c.Warnings...)
	return &cp
}

// deepCopy copies the maps and lists of a decoded YAML value, so a redacted copy
// shares nothing mutable with the live config.
func deepCopy(v any) any {
	switch x := v.(type) {
	case map[string]any:
		if x == nil {
			return x
		}
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = deepCopy(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = deepCopy(e)
		}
		return out
	}
	return v
}

// LoadDotEnv loads KEY=VALUE lines from path into the environment without overriding
// variables already set (as Bun does for the seed gateways). A missing file is fine.
func LoadDotEnv(path string) error {
	data, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return err
	}
	vars, err := ParseDotEnv(data)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	for _, kv := range vars {
		if _, set := os.LookupEnv(kv[0]); !set {
			if err := os.Setenv(kv[0], kv[1]); err != nil {
				return err
			}
		}
	}
	return nil
}

// ParseDotEnv parses .env content: KEY=VALUE, optional "export ", # comments, single
// or double quotes (double quotes understand \n).
func ParseDotEnv(data []byte) ([][2]string, error) {
	var out [][2]string
	data = bytes.TrimPrefix(data, []byte("\ufeff")) // a byte order mark, as some editors write
	sc := bufio.NewScanner(bytes.NewReader(data))
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		line = strings.TrimPrefix(line, "export ")
		k, v, ok := strings.Cut(line, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" || strings.ContainsAny(k, " \t") {
			return nil, fmt.Errorf("line %d: expected KEY=VALUE", n)
		}
		v = strings.TrimSpace(v)
		if q, ok := quoted(v); ok {
			v = q
		} else if i := strings.Index(v, " #"); i >= 0 {
			v = strings.TrimSpace(v[:i])
		}
		out = append(out, [2]string{k, v})
	}
	return out, sc.Err()
}

// quoted reads a value in single or double quotes, followed by nothing or by a
// comment (KEY="sk-abc" # prod). Double quotes understand \n, \" and \\.
func quoted(v string) (string, bool) {
	if len(v) < 2 || (v[0] != '"' && v[0] != '\'') {
		return "", false
	}
	end := -1
	for i := 1; i < len(v); i++ {
		if v[0] == '"' && v[i] == '\\' {
			i++
			continue
		}
		if v[i] == v[0] {
			end = i
			break
		}
	}
	if end < 0 {
		return "", false
	}
	if rest := strings.TrimSpace(v[end+1:]); rest != "" && rest[0] != '#' {
		return "", false
	}
	if v[0] == '\'' {
		return v[1:end], true
	}
	return strings.NewReplacer(`\n`, "\n", `\"`, `"`, `\\`, `\`).Replace(v[1:end]), true
}
