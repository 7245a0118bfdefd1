package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/ralf-gateway/ralf/core/auth"
	"github.com/ralf-gateway/ralf/core/config"
	"github.com/ralf-gateway/ralf/core/gateway"
	"github.com/ralf-gateway/ralf/core/metrics"
	"github.com/ralf-gateway/ralf/core/mock"
	"github.com/ralf-gateway/ralf/core/reload"
	"github.com/ralf-gateway/ralf/core/store"
	"github.com/ralf-gateway/ralf/plugins/store/sqlite"
)

func cmdServe(ctx context.Context, args []string, stderr io.Writer) error {
	path, _, err := configFlag("serve", args, stderr)
	if err != nil {
		return err
	}
	cfg, err := loadConfig(path)
	if err != nil {
		fmt.Fprintf(stderr, "ralf: %s is invalid:\n", path)
		printErrors(stderr, err)
		return exitError(1)
	}
	return serve(ctx, cfg, path, stderr, nil)
}

// reloadDebounce is how long the config directory must stay quiet before a reload
// (0 = the watcher's default); tests shorten it.
var reloadDebounce time.Duration

// serve runs the gateway until ctx is done, then shuts down gracefully. path "" means
// no file to watch (demo). ready, when set, is told the address once listening.
func serve(ctx context.Context, cfg *config.Config, path string, stderr io.Writer, ready func(addr string)) error {
	log, lvl, stopLog, err := newServeLogger(cfg.Log, stderr)
	if err != nil {
		return err
	}
	defer stopLog()
	for _, w := range cfg.Warnings {
		log.Warn(w)
	}

	m := metrics.New()
	st, err := store.Open(cfg.Store, log.Named("store"))
	if err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	defer st.Close()
	keys := auth.NewKeys(st, log.Named("keys"), auth.KeysOptions{OnStoreError: m.StoreError})
	defer keys.Close()

	gw, err := gateway.New(cfg, gateway.Deps{Logger: log, Metrics: m, Store: st, Keys: keys})
	if err != nil {
		return err
	}
	defer gw.Close()

	ln, err := net.Listen("tcp", cfg.Server.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	// Requests derive from base: cancelled with gateway.ErrShuttingDown when the shutdown
	// timeout is reached, the streams still running end with an error event.
	base, abort := context.WithCancelCause(context.Background())
	defer abort(nil)
	srv := &http.Server{
		BaseContext:       func(net.Listener) context.Context { return base },
		Handler:           gw,
		ReadHeaderTimeout: 10 * time.Second,
		// Go's default is 1 MiB a connection, before any key is checked: a few hundred
		// unauthenticated connections could hold hundreds of MB. 64 KiB is 8 times
		// nginx's default and far above any real request's headers.
		MaxHeaderBytes: maxHeaderBytes,
		IdleTimeout:    120 * time.Second,
		ErrorLog:       zap.NewStdLog(log.Named("http")),
	}
	warnExposure(log, cfg, ln.Addr())
	if addr := os.Getenv("RALF_PPROF"); addr != "" {
		startPprof(addr, log)
	}
	log.Info("ralf listening", zap.String("addr", ln.Addr().String()), zap.String("version", version),
		zap.Strings("providers", enabledNames(cfg)), zap.Bool("auth", cfg.Auth.Enabled))
	_ = log.Sync()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	watchDone := make(chan struct{})
	watching := make(chan struct{})
	if path != "" {
		// Until the watcher registers its own handler, a SIGHUP must not kill the process.
		signal.Ignore(syscall.SIGHUP)
		go func() {
			defer close(watchDone)
			err := reload.Run(ctx, reload.Options{
				Path:        path,
				Debounce:    reloadDebounce,
				Logger:      log.Named("reload"),
				SIGHUP:      true,
				InitialHash: cfg.Hash,
				Ready:       func() { close(watching) },
				Unchanged:   func() { m.Reload(metrics.ReloadUnchanged) },
				Apply: func(data []byte, hash [32]byte, trigger string) error {
					return applyReload(gw, m, lvl, log, path, data, hash, trigger)
				},
			})
			if err != nil {
				log.Error("config watcher stopped: edit + SIGHUP reload unavailable", zap.Error(err))
			}
		}()
	} else {
		close(watchDone)
		close(watching)
	}

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	if ready != nil {
		select { // edits made once ready has run are seen
		case <-watching:
		case <-watchDone:
		}
		ready(ln.Addr().String())
	}
	select {
	case err := <-serveErr:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	// A second SIGINT or SIGTERM ends the wait at once (the first one ended ctx).
	again := make(chan os.Signal, 1)
	signal.Notify(again, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(again)
	timeout := gw.Config().Server.ShutdownTimeout
	log.Info("shutting down: no new connections, waiting for in-flight requests (a second signal ends them now)",
		zap.Duration("timeout", timeout))
	sctx, scancel := context.WithTimeout(context.Background(), timeout)
	defer scancel()
	go func() {
		select {
		case <-again:
			log.Warn("second signal: ending the in-flight requests now")
			scancel()
		case <-sctx.Done():
		}
	}()
	if err := srv.Shutdown(sctx); err != nil {
		why := "shutdown timeout reached"
		if !errors.Is(err, context.DeadlineExceeded) {
			why = "second signal"
		}
		log.Warn(why + ": ending the in-flight requests with an error")
		abort(gateway.ErrShuttingDown)
		// Handlers send their error and return; a second Shutdown waits for their
		// connections to finish the answers (Close right after the handlers would cut
		// the end of the response). A client that does not read is cut by Close, which
		// does not wait for handlers: let them unwind before the store closes.
		ectx, ecancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer ecancel()
		if srv.Shutdown(ectx) != nil {
			_ = srv.Close()
		}
		if !gw.Wait(5 * time.Second) {
			log.Warn("requests still running after the shutdown timeout")
		}
	}
	cancel()
	<-watchDone
	log.Info("stopped")
	return nil
}

// maxHeaderBytes bounds a request's header section (larger: 431).
const maxHeaderBytes = 64 << 10

// applyReload parses and applies a changed file; a bad file changes nothing.
func applyReload(gw *gateway.Gateway, m *metrics.Metrics, lvl zap.AtomicLevel, log *zap.Logger, path string, data []byte, hash [32]byte, trigger string) error {
	cfg, err := config.Parse(data, loadOptions())
	if err == nil {
		cfg.Path, cfg.Hash = path, hash
		err = gw.Apply(cfg)
	}
	if err != nil {
		gw.ReloadFailed(err)
		m.Reload(metrics.ReloadError)
		log.Error("config reload failed: still serving the previous config", zap.String("trigger", trigger),
			zap.String("path", path), zap.Error(err))
		return err
	}
	for _, w := range cfg.Warnings {
		log.Warn(w)
	}
	_ = lvl.UnmarshalText([]byte(cfg.Log.Level))
	m.Reload(metrics.ReloadOK)
	log.Info("config reloaded", zap.String("trigger", trigger), zap.Int64("generation", gw.Generation()))
	return nil
}

func enabledNames(cfg *config.Config) []string {
	var out []string
	for _, p := range cfg.Providers {
		if p.Enabled {
			out = append(out, p.Name)
		}
	}
	return out
}

// warnExposure warns loudly when the gateway listens beyond loopback with auth off.
func warnExposure(log *zap.Logger, cfg *config.Config, addr net.Addr) {
	if cfg.Auth.Enabled {
		return
	}
	if ta, ok := addr.(*net.TCPAddr); ok && ta.IP.IsLoopback() {
		return
	}
	log.Warn("AUTH IS OFF and ralf listens beyond loopback: anyone who can reach " + addr.String() +
		" can spend your provider quota. Set auth.enabled: true (REQUIRE_AUTH=true) with client keys, or listen on 127.0.0.1.")
}

func cmdDemo(ctx context.Context, args []string, stderr io.Writer) error {
	if len(args) > 0 {
		fmt.Fprintf(stderr, "ralf demo takes no arguments (PORT sets the port)\n")
		return exitError(2)
	}
	mk, err := mock.Start(mock.Options{})
	if err != nil {
		return fmt.Errorf("start mock upstream: %w", err)
	}
	defer mk.Close()
	cfg, err := config.Parse([]byte(demoConfig(mk.URL())), config.Options{
		KnownDialect: loadOptions().KnownDialect, KnownStore: loadOptions().KnownStore,
		// The demo is the same with any environment, except the port and log level.
		Getenv: func(k string) (string, bool) {
			if k == "PORT" || k == "DEBUG" {
				return os.LookupEnv(k)
			}
			return "", false
		},
	})
	if err != nil {
		return fmt.Errorf("demo config: %w", err)
	}
	return serve(ctx, cfg, "", stderr, func(addr string) {
		port := addr[strings.LastIndex(addr, ":")+1:]
		fmt.Fprintf(stderr, "\nralf demo: gateway on http://localhost:%s with a built-in mock upstream at %s (no provider key needed)\n"+
			"try:\n  curl -N localhost:%s/chat -d '{\"messages\":[{\"role\":\"user\",\"content\":\"Hello\"}]}'\n"+
			"  curl localhost:%s/v1/chat/completions -H 'Content-Type: application/json' -d '{\"model\":\"auto\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]}'\n"+
			"  curl localhost:%s/health\n\n", port, mk.URL(), port, port, port)
	})
}

func demoConfig(mockURL string) string {
	return `server:
  listen: "127.0.0.1:3000"
log:
  level: info
  format: console
providers:
  - name: mock-openai
    dialect: openai
    base_url: ` + mockURL + `/v1
    model: mock+slow=25ms
  - name: mock-gemini
    dialect: gemini
    base_url: ` + mockURL + `/v1beta
    model: mock-gemini+slow=25ms
auth:
  enabled: false
limits:
  rate:
    enabled: false
store: memory://
`
}

// parseInterspersed parses fs's flags wherever they stand among the arguments
// (ralf keys create NAME --config FILE) and returns the other arguments; after
// "--" everything is an argument.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var rest []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		left := fs.Args()
		if len(left) == 0 {
			return rest, nil
		}
		if len(args) > len(left) && args[len(args)-len(left)-1] == "--" {
			return append(rest, left...), nil
		}
		rest, args = append(rest, left[0]), left[1:]
	}
}

func cmdMock(ctx context.Context, args []string, stderr io.Writer) error {
	fs := newFlagSet("mock", stderr)
	addr := fs.String("listen", "127.0.0.1:9100", "address to listen on")
	if err := fs.Parse(args); err != nil {
		return exitError(2)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "ralf mock: unexpected arguments: %s\n", strings.Join(fs.Args(), " "))
		return exitError(2)
	}
	log, _, err := newLogger(config.Log{Level: "info", Format: "console"}, stderr)
	if err != nil {
		return err
	}
	err = mock.Run(ctx, *addr, log)
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

func cmdKeys(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("keys", stderr)
	def := os.Getenv("RALF_CONFIG")
	if def == "" {
		def = "gateway.yaml"
	}
	path := fs.String("config", def, "path to gateway.yaml (its store: setting is used)")
	fs.StringVar(path, "c", def, "shorthand for --config")
	args, err := parseInterspersed(fs, args)
	if err != nil {
		return exitError(2)
	}
	cfg, err := loadConfig(*path)
	if err != nil {
		fmt.Fprintf(stderr, "ralf: %s is invalid:\n", *path)
		printErrors(stderr, err)
		return exitError(1)
	}
	log, _, err := newLogger(config.Log{Level: "warn", Format: "console"}, stderr)
	if err != nil {
		return err
	}
	if strings.HasPrefix(cfg.Store, "memory:") {
		fmt.Fprintf(stderr, "ralf keys: %s uses store: memory://, whose keys live only inside a running gateway; "+
			"use the admin API (/admin/keys) there, or a sqlite:// or redis:// store\n", *path)
		return exitError(2)
	}
	sub := ""
	if len(args) > 0 {
		sub = args[0]
	}
	switch sub {
	case "create", "list", "ls", "revoke", "rm", "delete":
	default:
		// help, or a usage error, before the store is opened: a typo must not create a database.
		return keysUsage(stderr, auth.KeysCommand(ctx, args, nil, stdout))
	}
	// A relative sqlite path is the working directory's: run from elsewhere, ralf keys
	// would quietly work on another, new database than the gateway's.
	newDB, relative := "", ""
	if u, err := url.Parse(cfg.Store); err == nil && u.Scheme == "sqlite" {
		if p, err := sqlite.PathFromURL(u); err == nil {
			if !filepath.IsAbs(p) {
				relative = fmt.Sprintf(" (store: %s is relative to the working directory)", cfg.Store)
			}
			if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
				abs, _ := filepath.Abs(p)
				if sub != "create" {
					fmt.Fprintf(stderr, "ralf keys: there is no key database at %s%s: the gateway creates it when it starts", abs, relative)
					if relative != "" {
						fmt.Fprint(stderr, "; run ralf keys in the gateway's working directory, or give store an absolute path")
					}
					fmt.Fprintln(stderr)
					return exitError(1)
				}
				newDB = abs
			}
		}
	}
	st, err := store.Open(cfg.Store, log)
	if err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	defer st.Close()
	if newDB != "" {
		fmt.Fprintf(stderr, "ralf keys: created a new key database at %s%s\n", newDB, relative)
	}
	keys := auth.NewKeys(st, log, auth.KeysOptions{})
	defer keys.Close()
	return keysUsage(stderr, auth.KeysCommand(ctx, args, keys, stdout))
}

// keysUsage prints the usage for a usage error of ralf keys.
func keysUsage(stderr io.Writer, err error) error {
	if errors.Is(err, auth.ErrUsage) {
		fmt.Fprintf(stderr, "ralf keys: %v\nusage: ralf keys [--config FILE] create NAME | list | revoke ID|KEY\n", err)
		return exitError(2)
	}
	return err
}

// startPprof serves net/http/pprof on addr (e.g. 127.0.0.1:6060) for profiling; it is
// off unless RALF_PPROF is set, and never on the gateway's own listener.
func startPprof(addr string, log *zap.Logger) {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	go func() {
		log.Info("pprof listening", zap.String("addr", addr))
		if err := http.ListenAndServe(addr, mux); err != nil {
			log.Warn("pprof stopped", zap.Error(err))
		}
	}()
}
