package config

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"math"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/viper"
	"go.yaml.in/yaml/v3"
)

// Options tune a load. The zero value reads the process environment and accepts any
// dialect and store scheme.
type Options struct {
	// Getenv looks variables up for ${VAR} expansion and the seed overrides (default os.LookupEnv).
	Getenv func(string) (string, bool)
	// KnownDialect reports whether a dialect is registered (nil accepts any).
	KnownDialect func(string) bool
	// KnownStore reports whether a store URL scheme is registered (nil accepts any).
	KnownStore func(scheme string) bool
	// CheckProvider makes the checks the provider's dialect makes when it is built
	// (nil: none). It runs on each enabled provider whose settings have no other
	// error, so that every error is reported at once.
	CheckProvider func(i int, p Provider) error
}

// Load reads, parses and validates the file at path.
func Load(path string, opts Options) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	c, err := Parse(data, opts)
	if err != nil {
		return nil, err
	}
	c.Path = path
	return c, nil
}

// Parse parses and validates gateway.yaml content. The error joins every problem
// found, each prefixed with its path (providers[2].base_url: ...).
func Parse(data []byte, opts Options) (*Config, error) {
	if opts.Getenv == nil {
		opts.Getenv = os.LookupEnv
	}
	// A fresh viper per load: viper is not safe for concurrent use and keeps state.
	// It checks the syntax; the tree itself comes from yaml.v3 because viper folds
	// every key to lower case, which would corrupt header names and provider params
	// (Gemini's thinkingConfig, topK).
	v := viper.New()
	v.SetConfigType("yaml")
	if err := v.ReadConfig(bytes.NewReader(data)); err != nil {
		return nil, fmt.Errorf("yaml: %s", yamlMessage(err))
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("yaml: %s", yamlMessage(err))
	}
	markStringRefs(&doc)
	var raw map[string]any
	if doc.Kind != 0 { // not an empty file
		if err := doc.Decode(&raw); err != nil {
			return nil, fmt.Errorf("yaml: %s", yamlMessage(err))
		}
	}
	raw, _ = stringKeys(raw).(map[string]any)
	unmarkOutsideParams(raw)
	c := Defaults()
	d := &decoder{getenv: opts.Getenv}
	d.value("", raw, reflect.ValueOf(c).Elem())
	d.providerKeys(raw, c)
	d.seedEnv(c)
	c.validate(d, opts)
	if opts.CheckProvider != nil {
		d.checkProviders(c, opts.CheckProvider)
	}
	if len(d.errs) > 0 {
		return nil, errors.Join(d.errs...)
	}
	c.Hash = sha256.Sum256(data)
	c.Warnings = d.warnings
	return c, nil
}

// checkProviders runs check on each enabled provider that has no error yet.
func (d *decoder) checkProviders(c *Config, check func(int, Provider) error) {
	bad := make(map[string]bool, len(d.errs))
	for _, err := range d.errs {
		if i := strings.IndexAny(err.Error(), ".: "); i > 0 {
			bad[err.Error()[:i]] = true
		}
	}
	for i, p := range c.Providers {
		if p.Enabled && !bad[fmt.Sprintf("providers[%d]", i)] {
			if err := check(i, p); err != nil {
				d.errs = append(d.errs, err)
			}
		}
	}
}

func yamlMessage(err error) string {
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "While parsing config: ")
	msg = strings.TrimPrefix(msg, "yaml: ")
	return msg
}

// Defaults returns a Config with every default of SPEC §1 and no providers.
func Defaults() *Config {
	return &Config{
		Server:  Server{Listen: ":3000", MaxBodyBytes: 1 << 20, ShutdownTimeout: 30 * time.Second},
		Log:     Log{Level: "info", Format: "json"},
		Routing: Routing{Strategy: "round_robin", MaxAttempts: 3, FailureThreshold: 3, Cooldown: 30 * time.Second, FirstByteTimeout: 30 * time.Second, IdleTimeout: 60 * time.Second},
		Auth:    Auth{},
		Limits:  Limits{Rate: Rate{Enabled: true, Requests: 10, Window: 60 * time.Second, OnStoreError: "allow"}, MaxMessages: 50, MaxMessageChars: 10000},
		Store:   "sqlite://data/ralf.db",
		CORS:    CORS{AllowedOrigins: []string{"*"}},
	}
}

func providerDefaults() Provider {
	return Provider{Dialect: "openai", Weight: 1, Timeout: 120 * time.Second, Enabled: true}
}

// decoder converts the YAML tree into Config, collecting every error with its path.
type decoder struct {
	getenv func(string) (string, bool)
	// envTmpl maps the path of every value that came from ${VAR} expansion to its template:
	// errors about such a value name the variables and never echo the value (it may be a key).
	envTmpl  map[string]string
	errs     []error
	warnings []string
}

func (d *decoder) errorf(path, format string, a ...any) {
	d.errs = append(d.errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, a...)))
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

var durationType = reflect.TypeOf(time.Duration(0))

// value decodes raw into v. A missing or null value keeps the default already in v.
func (d *decoder) value(path string, raw any, v reflect.Value) {
	if raw == nil {
		return
	}
	if v.Type() == durationType {
		s, ok := d.scalar(path, raw)
		if !ok || s == "" {
			return
		}
		dur, err := time.ParseDuration(s)
		if err != nil {
			d.errorf(path, "invalid duration %s (use a number with a unit, like 30s or 500ms)", d.q(path, s))
			return
		}
		v.SetInt(int64(dur))
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		m, ok := raw.(map[string]any)
		if !ok {
			d.errorf(path, "must be a mapping of keys, not %s", kindOf(raw))
			return
		}
		fields := fieldsByTag(v.Type())
		for _, k := range sortedKeys(m) {
			i, ok := fields[k]
			if !ok {
				d.errorf(join(path, k), "unknown key%s", suggest(k, fields))
				continue
			}
			d.value(join(path, k), m[k], v.Field(i))
		}
	case reflect.Slice:
		if v.Type().Elem().Kind() == reflect.String {
			v.Set(reflect.ValueOf(d.stringList(path, raw)))
			return
		}
		list, ok := raw.([]any)
		if !ok {
			d.errorf(path, "must be a list, not %s", kindOf(raw))
			return
		}
		out := reflect.MakeSlice(v.Type(), len(list), len(list))
		for i, item := range list {
			if v.Type().Elem() == reflect.TypeOf(Provider{}) {
				out.Index(i).Set(reflect.ValueOf(providerDefaults()))
			}
			d.value(fmt.Sprintf("%s[%d]", path, i), item, out.Index(i))
		}
		v.Set(out)
	case reflect.Map:
		m, ok := raw.(map[string]any)
		if !ok {
			d.errorf(path, "must be a mapping, not %s", kindOf(raw))
			return
		}
		out := reflect.MakeMapWithSize(v.Type(), len(m))
		for _, k := range sortedKeys(m) {
			if v.Type().Elem().Kind() == reflect.String {
				s, ok := d.scalar(join(path, k), m[k])
				if ok {
					out.SetMapIndex(reflect.ValueOf(k), reflect.ValueOf(s))
				}
				continue
			}
			out.SetMapIndex(reflect.ValueOf(k), reflect.ValueOf(d.expandAny(m[k])))
		}
		v.Set(out)
	case reflect.String:
		if s, ok := d.scalar(path, raw); ok {
			v.SetString(s)
		}
	case reflect.Bool:
		switch b := raw.(type) {
		case bool:
			v.SetBool(b)
		default:
			s, ok := d.scalar(path, raw)
			if !ok || s == "" {
				return
			}
			pb, err := strconv.ParseBool(strings.ToLower(s))
			if err != nil {
				d.errorf(path, "must be true or false, not %s", d.q(path, s))
				return
			}
			v.SetBool(pb)
		}
	case reflect.Int, reflect.Int64:
		switch n := raw.(type) {
		case int:
			v.SetInt(int64(n))
		case float64:
			if n != float64(int64(n)) {
				d.errorf(path, "must be a whole number, not %v", n)
				return
			}
			v.SetInt(int64(n))
		default:
			s, ok := d.scalar(path, raw)
			if !ok || s == "" {
				return
			}
			i, err := strconv.ParseInt(strings.ReplaceAll(s, "_", ""), 10, 64)
			if err != nil {
				d.errorf(path, "must be a whole number, not %s", d.q(path, s))
				return
			}
			v.SetInt(i)
		}
	case reflect.Interface:
		v.Set(reflect.ValueOf(d.expandAny(raw)))
	}
}

// q quotes the bad value at path for an error message, unless it came from the
// environment: then it names the variables instead.
func (d *decoder) q(path, s string) string {
	if tmpl, ok := d.envTmpl[path]; ok {
		refs := envRefs(tmpl)
		for i := range refs {
			refs[i] = "${" + refs[i] + "}"
		}
		return "the value of " + strings.Join(refs, ", ")
	}
	return strconv.Quote(s)
}

// setEnvTmpl records that the value at path came from the environment through tmpl.
func (d *decoder) setEnvTmpl(path, tmpl string) {
	if d.envTmpl == nil {
		d.envTmpl = map[string]string{}
	}
	d.envTmpl[path] = tmpl
}

// scalar returns a scalar as an env-expanded string.
func (d *decoder) scalar(path string, raw any) (string, bool) {
	switch s := raw.(type) {
	case string:
		if strings.Contains(s, "${") && len(envRefs(s)) > 0 {
			d.setEnvTmpl(path, s)
		}
		return d.expand(path, s), true
	case bool, int, int64, uint64, float64:
		return fmt.Sprint(s), true
	}
	d.errorf(path, "must be a single value, not %s", kindOf(raw))
	return "", false
}

// stringList accepts a YAML list or a comma-separated string (as env vars give).
func (d *decoder) stringList(path string, raw any) []string {
	out := []string{}
	switch x := raw.(type) {
	case []any:
		for i, item := range x {
			s, ok := d.scalar(fmt.Sprintf("%s[%d]", path, i), item)
			if ok {
				out = append(out, splitList(s)...)
			}
		}
	default:
		s, ok := d.scalar(path, raw)
		if ok {
			out = append(out, splitList(s)...)
		}
	}
	return out
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// stringKeys turns the mappings yaml.v3 gives with keys that are not all strings
// (logit_bias: {50256: -100}) into string-keyed ones, as JSON needs.
func stringKeys(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if key, marked := strings.CutPrefix(k, stringMark); marked {
				// A marked value used as a key through an alias: keys stay as written.
				delete(x, k)
				x[key] = stringKeys(e)
				continue
			}
			x[k] = stringKeys(e)
		}
	case map[any]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			key := strings.TrimPrefix(fmt.Sprint(k), stringMark)
			if k == nil {
				key = "null" // as YAML writes it
			}
			out[key] = stringKeys(e)
		}
		return out
	case []any:
		for i, e := range x {
			x[i] = stringKeys(e)
		}
	}
	return v
}

// expandAny expands env references in every string of a free-form value (params).
// A value that is one reference and nothing else, written as a plain YAML scalar,
// takes the type its text reads as (a number, true or false), as the same text
// written in the file would: temperature: ${TEMP:-0.7} sends 0.7, not "0.7". One
// YAML reads as a string (quoted, !!str, a block scalar) stays a string.
func (d *decoder) expandAny(raw any) any {
	switch x := raw.(type) {
	case string:
		if str, ok := strings.CutPrefix(x, stringMark); ok {
			return d.expand("", str)
		}
		s := d.expand("", x)
		if s != x && strings.HasPrefix(x, "${") && strings.IndexByte(x, '}') == len(x)-1 {
			return typedScalar(s)
		}
		return s
	case []any:
		out := make([]any, len(x))
		for i := range x {
			out[i] = d.expandAny(x[i])
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, v := range x {
			out[k] = d.expandAny(v)
		}
		return out
	}
	return raw
}

// stringMark prefixes, while the file is decoded, a value with a ${VAR} that YAML
// reads as a string whatever it holds: quoted, tagged or a block scalar.
const stringMark = "\x00str:"

// markStringRefs marks such values in the parsed file. Marking the nodes themselves
// carries the mark through anchors, aliases and merge keys, which share them.
func markStringRefs(n *yaml.Node) {
	switch n.Kind {
	case yaml.DocumentNode, yaml.SequenceNode:
		for _, c := range n.Content {
			markStringRefs(c)
		}
	case yaml.MappingNode:
		for i := 1; i < len(n.Content); i += 2 { // values, not keys
			markStringRefs(n.Content[i])
		}
	case yaml.ScalarNode:
		explicit := yaml.DoubleQuotedStyle | yaml.SingleQuotedStyle | yaml.LiteralStyle | yaml.FoldedStyle | yaml.TaggedStyle
		if n.Style&explicit != 0 && n.ShortTag() == "!!str" && strings.Contains(n.Value, "${") {
			n.Value = stringMark + n.Value
		}
	}
}

// unmarkOutsideParams removes the marks from every value but the providers'
// params, the one free-form part of the file, where expandAny reads them.
func unmarkOutsideParams(raw map[string]any) {
	for k, v := range raw {
		list, ok := v.([]any)
		if k != "providers" || !ok {
			raw[k] = unmark(v)
			continue
		}
		for i, item := range list {
			p, ok := item.(map[string]any)
			if !ok {
				list[i] = unmark(item)
				continue
			}
			for pk, pv := range p {
				if pk != "params" {
					p[pk] = unmark(pv)
				}
			}
		}
	}
}

func unmark(v any) any {
	switch x := v.(type) {
	case string:
		return strings.TrimPrefix(x, stringMark)
	case []any:
		for i := range x {
			x[i] = unmark(x[i])
		}
	case map[string]any:
		for k, e := range x {
			x[k] = unmark(e)
		}
	}
	return v
}

// expand replaces ${VAR} and ${VAR:-default}; "$${" is a literal "${".
func (d *decoder) expand(path, s string) string {
	if !strings.Contains(s, "${") {
		return s
	}
	var b strings.Builder
	for {
		i := strings.Index(s, "${")
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		if i > 0 && s[i-1] == '$' {
			b.WriteString(s[:i-1] + "${")
			s = s[i+2:]
			continue
		}
		end := strings.IndexByte(s[i:], '}')
		if end < 0 {
			if path != "" {
				d.errorf(path, "unclosed ${ in value")
			}
			b.WriteString(s)
			return b.String()
		}
		b.WriteString(s[:i])
		ref := s[i+2 : i+end]
		name, def, hasDef := strings.Cut(ref, ":-")
		val, ok := d.getenv(name)
		if (!ok || val == "") && hasDef {
			val = def
		}
		b.WriteString(val)
		s = s[i+end+1:]
	}
}

// envRefs lists the variables a template refers to.
func envRefs(s string) []string {
	var out []string
	for {
		i := strings.Index(s, "${")
		if i < 0 {
			return out
		}
		end := strings.IndexByte(s[i:], '}')
		if end < 0 {
			return out
		}
		name, _, _ := strings.Cut(s[i+2:i+end], ":-")
		out = append(out, name)
		s = s[i+end+1:]
	}
}

// typedScalar reads s as an integer, a finite number or a boolean when it is one, and
// leaves it a string otherwise. Nothing else is parsed: a value can't inject YAML.
func typedScalar(s string) any {
	if i, err := strconv.ParseInt(s, 10, 64); err == nil {
		return i
	}
	if u, err := strconv.ParseUint(s, 10, 64); err == nil {
		return u // a seed past int64
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil && !math.IsInf(f, 0) && !math.IsNaN(f) &&
		strings.Trim(s, "0123456789.eE+-") == "" {
		return f
	}
	switch s {
	case "true":
		return true
	case "false":
		return false
	}
	return s
}

// providerKeys disables a provider whose api_key is written but expands to "".
func (d *decoder) providerKeys(raw map[string]any, c *Config) {
	list, _ := raw["providers"].([]any)
	for i, item := range list {
		m, _ := item.(map[string]any)
		if i >= len(c.Providers) || m == nil {
			continue
		}
		tmpl, written := m["api_key"].(string)
		p := &c.Providers[i]
		if !written || p.APIKey != "" || !p.Enabled {
			continue
		}
		p.Enabled = false
		what := "api_key is empty"
		if refs := envRefs(tmpl); len(refs) > 0 {
			what = fmt.Sprintf("api_key is empty (%s unset?)", strings.Join(refs, ", "))
		}
		d.warnings = append(d.warnings, fmt.Sprintf("providers[%d] (%s): %s, provider skipped", i, p.Name, what))
	}
}

// seedEnv applies the seed gateways' environment variables over the file.
func (d *decoder) seedEnv(c *Config) {
	get := func(k string) (string, bool) {
		v, ok := d.getenv(k)
		return strings.TrimSpace(v), ok && strings.TrimSpace(v) != ""
	}
	if v, ok := get("PORT"); ok {
		if n, err := strconv.Atoi(v); err != nil || n < 0 || n > 65535 {
			d.errorf("PORT", "must be a port number, not %q", v)
		} else {
			host := ""
			if i := strings.LastIndex(c.Server.Listen, ":"); i >= 0 {
				host = c.Server.Listen[:i]
			}
			c.Server.Listen = host + ":" + v
		}
	}
	if v, ok := get("DEBUG"); ok {
		if b, err := strconv.ParseBool(strings.ToLower(v)); err == nil && b {
			c.Log.Level = "debug"
		}
	}
	if v, ok := get("CORS_ORIGINS"); ok {
		c.CORS.AllowedOrigins = splitList(v)
		for p := range d.envTmpl { // the file's list, and where its items came from, are gone
			if strings.HasPrefix(p, "cors.allowed_origins[") {
				delete(d.envTmpl, p)
			}
		}
		d.setEnvTmpl("cors.allowed_origins", "${CORS_ORIGINS}")
	}
	boolEnv := func(k string, dst *bool) {
		if v, ok := get(k); ok {
			b, err := strconv.ParseBool(strings.ToLower(v))
			if err != nil {
				d.errorf(k, "must be true or false, not %q", v)
				return
			}
			*dst = b
		}
	}
	boolEnv("REQUIRE_AUTH", &c.Auth.Enabled)
	boolEnv("RATE_LIMIT_ENABLED", &c.Limits.Rate.Enabled)
	if v, ok := get("MASTER_API_KEY"); ok {
		c.Auth.MasterKey = v
	}
	if v, ok := get("PUBLIC_API_KEYS"); ok {
		c.Auth.Keys = splitList(v)
	}
	if v, ok := get("RATE_LIMIT_MAX"); ok {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			d.errorf("RATE_LIMIT_MAX", "must be a whole number greater than 0, not %q", v)
		} else {
			c.Limits.Rate.Requests = n
		}
	}
	if v, ok := get("RATE_LIMIT_WINDOW_MS"); ok {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 || n > int64(time.Duration(1<<63-1)/time.Millisecond) {
			d.errorf("RATE_LIMIT_WINDOW_MS", "must be milliseconds as a whole number greater than 0, not %q", v)
		} else {
			c.Limits.Rate.Window = time.Duration(n) * time.Millisecond
		}
	}
}

func fieldsByTag(t reflect.Type) map[string]int {
	out := map[string]int{}
	for i := 0; i < t.NumField(); i++ {
		tag := t.Field(i).Tag.Get("mapstructure")
		if tag != "" && tag != "-" {
			out[tag] = i
		}
	}
	return out
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func kindOf(raw any) string {
	switch raw.(type) {
	case map[string]any:
		return "a mapping"
	case map[any]any:
		return "a mapping with non-text keys"
	case []any:
		return "a list"
	case string:
		return "a string"
	case int, int64, uint64, float64:
		return "a number"
	case bool:
		return "a boolean"
	}
	return fmt.Sprintf("%T", raw)
}

// suggest names a known key close to a misspelt one.
func suggest(k string, fields map[string]int) string {
	best, bestD := "", 3
	for f := range fields {
		if dd := distance(k, f); dd < bestD {
			best, bestD = f, dd
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}
