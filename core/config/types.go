// Package config loads gateway.yaml: strict decoding with a fresh viper per load,
// ${VAR} / ${VAR:-default} expansion, .env and seed environment overrides, defaults,
// and validation that reports every error with its path.
package config

import "time"

// Config is one parsed and validated gateway.yaml.
type Config struct {
	Server    Server     `mapstructure:"server"`
	Log       Log        `mapstructure:"log"`
	Routing   Routing    `mapstructure:"routing"`
	Providers []Provider `mapstructure:"providers"`
	Auth      Auth       `mapstructure:"auth"`
	Limits    Limits     `mapstructure:"limits"`
	Store     string     `mapstructure:"store"` // sqlite://PATH | redis://HOST:PORT/DB | memory://
	CORS      CORS       `mapstructure:"cors"`

	// Path is the file it was loaded from ("" when parsed from bytes).
	Path string `mapstructure:"-"`
	// Hash is the sha256 of the raw file bytes (reload skips unchanged content).
	Hash [32]byte `mapstructure:"-"`
	// Warnings are non-fatal findings (e.g. a provider skipped because its key is empty).
	Warnings []string `mapstructure:"-"`
}

// Server is the listener block.
type Server struct {
	Listen          string        `mapstructure:"listen"`           // default ":3000"; env PORT overrides the port
	MaxBodyBytes    int64         `mapstructure:"max_body_bytes"`   // default 1 MiB
	ShutdownTimeout time.Duration `mapstructure:"shutdown_timeout"` // default 30s
}

// Log is the logging block.
type Log struct {
	Level  string `mapstructure:"level"`  // debug|info|warn|error, default info; DEBUG=true → debug
	Format string `mapstructure:"format"` // json|console, default json
}

// Routing is the ring and failover block.
type Routing struct {
	Strategy         string        `mapstructure:"strategy"`           // round_robin (default) | weighted
	MaxAttempts      int           `mapstructure:"max_attempts"`       // default 3
	FailureThreshold int           `mapstructure:"failure_threshold"`  // default 3
	Cooldown         time.Duration `mapstructure:"cooldown"`           // default 30s
	FirstByteTimeout time.Duration `mapstructure:"first_byte_timeout"` // default 30s
	IdleTimeout      time.Duration `mapstructure:"idle_timeout"`       // default 60s
}

// Provider is one upstream.
type Provider struct {
	Name    string            `mapstructure:"name"`     // unique, [a-z0-9_-]+
	Dialect string            `mapstructure:"dialect"`  // default openai
	BaseURL string            `mapstructure:"base_url"` // absolute http(s) URL, no trailing slash after load
	Model   string            `mapstructure:"model"`
	APIKey  string            `mapstructure:"api_key"` // after expansion; never logged
	Weight  int               `mapstructure:"weight"`  // default 1
	Timeout time.Duration     `mapstructure:"timeout"` // default 120s
	Headers map[string]string `mapstructure:"headers"`
	Params  map[string]any    `mapstructure:"params"`
	// Enabled is false when the file says enabled: false, or when api_key was given
	// but expanded to "" (a warning says so). Disabled providers are not in the ring.
	Enabled bool `mapstructure:"enabled"` // default true
}

// Auth is the client authentication block.
type Auth struct {
	Enabled        bool     `mapstructure:"enabled"` // env REQUIRE_AUTH
	ProtectMetrics bool     `mapstructure:"protect_metrics"`
	MasterKey      string   `mapstructure:"master_key"` // env MASTER_API_KEY
	Keys           []string `mapstructure:"keys"`       // YAML list or comma-separated string; env PUBLIC_API_KEYS
}

// Limits is the request limits block.
type Limits struct {
	Rate            Rate `mapstructure:"rate"`
	MaxMessages     int  `mapstructure:"max_messages"`      // default 50
	MaxMessageChars int  `mapstructure:"max_message_chars"` // default 10000
}

// Rate is the per-client rate limit.
type Rate struct {
	Enabled  bool          `mapstructure:"enabled"`  // env RATE_LIMIT_ENABLED
	Requests int           `mapstructure:"requests"` // env RATE_LIMIT_MAX; default 10
	Window   time.Duration `mapstructure:"window"`   // env RATE_LIMIT_WINDOW_MS; default 60s
	// OnStoreError is what the limiter does when the store cannot answer: allow (default) | deny.
	OnStoreError string `mapstructure:"on_store_error"`
}

// CORS is the cross-origin block.
type CORS struct {
	AllowedOrigins []string `mapstructure:"allowed_origins"` // env CORS_ORIGINS (comma-separated); default ["*"]
}
