// Command ralf is a config-first LLM gateway: one gateway.yaml, a round-robin ring of
// providers with failover, streamed answers on POST /chat and an OpenAI-compatible /v1.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/ralf-gateway/ralf/core/config"
	"github.com/ralf-gateway/ralf/core/gateway"
	"github.com/ralf-gateway/ralf/core/llm"
	"github.com/ralf-gateway/ralf/core/store"
	_ "github.com/ralf-gateway/ralf/plugins/all"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `ralf — a config-first LLM gateway

Usage:
  ralf [serve] [--config gateway.yaml]   run the gateway (env RALF_CONFIG; default gateway.yaml)
  ralf serve gateway.yaml                the same, with the file as the argument
  ralf check [[--config] gateway.yaml]   validate a config file and list every error
  ralf demo                              run the gateway with a built-in mock upstream (no provider key needed)
  ralf mock [--listen 127.0.0.1:9100]    run the mock upstream alone (OpenAI under /v1, Gemini under /v1beta)
  ralf keys create NAME | list | revoke ID|KEY   manage client API keys in the configured store
  ralf version                           print the version
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		var ee exitError
		if errors.As(err, &ee) {
			os.Exit(int(ee))
		}
		fmt.Fprintln(os.Stderr, "ralf:", err)
		os.Exit(1)
	}
}

// exitError is an exit status whose message was already printed.
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := "serve"
	if len(args) > 0 && len(args[0]) > 0 && (args[0][0] != '-' || topLevelFlag(args[0])) {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		return cmdServe(ctx, args, stderr)
	case "check":
		return cmdCheck(args, stdout, stderr)
	case "demo":
		return cmdDemo(ctx, args, stderr)
	case "mock":
		return cmdMock(ctx, args, stderr)
	case "keys":
		return cmdKeys(ctx, args, stdout, stderr)
	case "version", "--version", "-version", "-v":
		if len(args) > 0 {
			return noArguments("version", stderr)
		}
		fmt.Fprintf(stdout, "ralf %s (%s, %s/%s)\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return nil
	case "help", "-h", "-help", "--help":
		if len(args) > 0 {
			return noArguments("help", stderr)
		}
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprintf(stderr, "ralf: unknown command %q\n\n%s", cmd, usage)
	return exitError(2)
}

func noArguments(cmd string, stderr io.Writer) error {
	fmt.Fprintf(stderr, "ralf %s takes no arguments\n", cmd)
	return exitError(2)
}

// topLevelFlag reports whether arg asks for the version or the usage: any other
// flag in first place belongs to serve, the default command.
func topLevelFlag(arg string) bool {
	switch arg {
	case "-v", "-version", "--version", "-h", "-help", "--help":
		return true
	}
	return false
}

// configFlag parses --config (default $RALF_CONFIG, then gateway.yaml). The file may
// also be given as the one argument (ralf check deploy/gateway.yaml); anything more
// is an error, never silently ignored.
func configFlag(name string, args []string, stderr io.Writer) (string, *flag.FlagSet, error) {
	fs := flag.NewFlagSet("ralf "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	def := os.Getenv("RALF_CONFIG")
	if def == "" {
		def = "gateway.yaml"
	}
	path := fs.String("config", def, "path to gateway.yaml (env RALF_CONFIG)")
	fs.StringVar(path, "c", def, "shorthand for --config")
	if err := fs.Parse(args); err != nil {
		return "", nil, exitError(2)
	}
	switch fs.NArg() {
	case 0:
	case 1:
		given := false
		fs.Visit(func(f *flag.Flag) { given = given || f.Name == "config" || f.Name == "c" })
		if given {
			fmt.Fprintf(stderr, "ralf %s: give the config file with --config or as an argument, not both\n", name)
			return "", nil, exitError(2)
		}
		*path = fs.Arg(0)
	default:
		fmt.Fprintf(stderr, "ralf %s: unexpected arguments after %s: %s\n", name, fs.Arg(0), strings.Join(fs.Args()[1:], " "))
		return "", nil, exitError(2)
	}
	return *path, fs, nil
}

func loadOptions() config.Options {
	return config.Options{KnownDialect: llm.Known, KnownStore: store.Known, CheckProvider: gateway.CheckProvider}
}

// loadConfig loads .env then the file.
func loadConfig(path string) (*config.Config, error) {
	if err := config.LoadDotEnv(".env"); err != nil {
		return nil, fmt.Errorf("load .env: %w", err)
	}
	return config.Load(path, loadOptions())
}

func cmdCheck(args []string, stdout, stderr io.Writer) error {
	path, _, err := configFlag("check", args, stderr)
	if err != nil {
		return err
	}
	cfg, err := loadConfig(path) // the dialects' checks too (loadOptions)
	if err != nil {
		fmt.Fprintf(stderr, "%s: invalid\n", path)
		printErrors(stderr, err)
		return exitError(1)
	}
	for _, w := range cfg.Warnings {
		fmt.Fprintf(stderr, "warning: %s\n", w)
	}
	enabled := 0
	for _, p := range cfg.Providers {
		if p.Enabled {
			enabled++
		}
	}
	fmt.Fprintf(stdout, "%s: ok (%d providers, %d enabled)\n", path, len(cfg.Providers), enabled)
	return nil
}

// printErrors prints each joined error on its own line.
func printErrors(w io.Writer, err error) {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			printErrors(w, e)
		}
		return
	}
	fmt.Fprintf(w, "  %s\n", err)
}

// newLogger builds the zap logger of the log block. Sampling is off: every request
// gets its access log line.
func newLogger(l config.Log, stderr io.Writer) (*zap.Logger, zap.AtomicLevel, error) {
	log, lvl, _, err := buildLogger(l, stderr, false)
	return log, lvl, err
}

// newServeLogger is newLogger writing in batches: one write per 200 ms (or 64 KiB)
// instead of one per access-log line, which a busy gateway notices. Lines at warn and
// above are written at once; stop flushes what is left.
func newServeLogger(l config.Log, stderr io.Writer) (*zap.Logger, zap.AtomicLevel, func(), error) {
	return buildLogger(l, stderr, true)
}

func buildLogger(l config.Log, stderr io.Writer, buffered bool) (*zap.Logger, zap.AtomicLevel, func(), error) {
	lvl := zap.NewAtomicLevel()
	if err := lvl.UnmarshalText([]byte(l.Level)); err != nil {
		return nil, lvl, nil, fmt.Errorf("log.level: %w", err)
	}
	ec := zap.NewProductionEncoderConfig()
	ec.TimeKey = "ts"
	ec.EncodeTime = zapcore.ISO8601TimeEncoder
	var enc zapcore.Encoder
	if l.Format == "console" {
		ec.EncodeLevel = zapcore.CapitalLevelEncoder
		if isTerminal(stderr) { // colour codes only for a person's terminal, never into a file or a log shipper
			ec.EncodeLevel = zapcore.CapitalColorLevelEncoder
		}
		enc = zapcore.NewConsoleEncoder(ec)
	} else {
		enc = zapcore.NewJSONEncoder(ec)
	}
	if !buffered {
		core := zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(stderr)), lvl)
		return zap.New(core, zap.ErrorOutput(zapcore.AddSync(stderr))), lvl, func() {}, nil
	}
	// struct{io.Writer} hides *os.File's Sync: flushing the buffer is a write, never an
	// fsync (which could stall every logging request behind a slow disk).
	ws := &zapcore.BufferedWriteSyncer{WS: zapcore.AddSync(struct{ io.Writer }{stderr}), Size: 64 << 10, FlushInterval: 200 * time.Millisecond}
	core := &flushOnWarn{Core: zapcore.NewCore(enc, ws, lvl), ws: ws}
	return zap.New(core, zap.ErrorOutput(zapcore.AddSync(stderr))), lvl, func() { _ = ws.Stop() }, nil
}

// flushOnWarn flushes the buffered writer after each line at warn and above.
type flushOnWarn struct {
	zapcore.Core
	ws *zapcore.BufferedWriteSyncer
}

func (f *flushOnWarn) With(fields []zapcore.Field) zapcore.Core {
	return &flushOnWarn{Core: f.Core.With(fields), ws: f.ws}
}

func (f *flushOnWarn) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if f.Enabled(e.Level) {
		return ce.AddCore(e, f)
	}
	return ce
}

func (f *flushOnWarn) Write(e zapcore.Entry, fields []zapcore.Field) error {
	err := f.Core.Write(e, fields)
	if e.Level >= zapcore.WarnLevel {
		_ = f.ws.Sync()
	}
	return err
}

func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("ralf "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// isTerminal says whether w is a character device (a terminal), not a file or a pipe.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
