// Package reload watches gateway.yaml and hands changed content to the caller,
// which parses, validates and swaps it in.
//
// It watches the file's directory rather than the file: editors save by writing
// a temporary file and renaming it over the original, and Kubernetes ConfigMaps
// swap a "..data" symlink, and both replace the inode a file watch would hold.
// Events are debounced, content is deduplicated by sha256, and SIGHUP forces a
// reload. viper.WatchConfig is deliberately not used: it races and may exit the
// process.
package reload

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/zap"
)

// DefaultDebounce is the quiet period used when Options.Debounce is not set.
const DefaultDebounce = 150 * time.Millisecond

// Triggers passed to Options.Apply.
const (
	TriggerFile   = "file"
	TriggerSIGHUP = "sighup"
)

// maxHops bounds symlink chains, like the kernel's ELOOP limit.
const maxHops = 40

// Options configures Run.
type Options struct {
	// Path is the config file; relative paths are made absolute at start.
	Path string
	// Debounce is how long the directory must stay quiet before the file is
	// read; DefaultDebounce when zero or negative.
	Debounce time.Duration
	// Logger receives reload logs; zap.NewNop() when nil.
	Logger *zap.Logger
	// SIGHUP makes Run reload on SIGHUP, even when the content is unchanged.
	SIGHUP bool
	// Apply receives the new content, its sha256 and the trigger ("file" or
	// "sighup"). It is called from Run's goroutine, never concurrently. Run
	// logs its result at debug level only, so Apply reports success and failure
	// itself; a failed content is not offered again until it changes (or on
	// SIGHUP). A panic in Apply is recovered, logged and treated as a failure.
	Apply func(data []byte, hash [32]byte, trigger string) error
	// InitialHash is the sha256 of the content already loaded, so the first
	// event with the same content is skipped. A file that differs from it when
	// the watch starts (edited during start-up) is applied then.
	InitialHash [32]byte
	// Unchanged, when set, runs when a change event left the content as it was
	// (a touch, a chmod, a save without edits): metrics count these.
	Unchanged func()
	// Ready, when set, runs once the watches and the SIGHUP handler are in place:
	// a change made after it is seen.
	Ready func()

	// ready and settled let tests in this package synchronise on the watcher
	// instead of sleeping.
	ready   func()
	settled func(outcome)
}

// outcome says what a reload attempt did; used by tests.
type outcome string

const (
	outcomeApplied   outcome = "applied"
	outcomeFailed    outcome = "failed"
	outcomeUnchanged outcome = "unchanged"
	outcomeMissing   outcome = "missing"
	outcomeReadError outcome = "read-error"
)

// Run watches opts.Path until ctx is done, then returns nil. It returns an
// error only when it cannot start: bad options, or a directory it cannot watch
// while opts.SIGHUP is off. With opts.SIGHUP on, a failed file watch is logged
// and Run keeps reloading on SIGHUP alone.
func Run(ctx context.Context, opts Options) error {
	if opts.Path == "" {
		return errors.New("reload: empty config path")
	}
	if opts.Apply == nil {
		return errors.New("reload: nil Apply")
	}
	path, err := filepath.Abs(opts.Path)
	if err != nil {
		return fmt.Errorf("reload: config path: %w", err)
	}
	debounce := opts.Debounce
	if debounce <= 0 {
		debounce = DefaultDebounce
	}
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	log = log.With(zap.String("path", path))

	w := &watcher{
		opts:   opts,
		log:    log,
		path:   path,
		dir:    filepath.Dir(path),
		extra:  map[string]bool{},
		names:  map[string]bool{},
		last:   opts.InitialHash,
		settle: opts.settled,
	}
	fw, err := startWatch(w.dir)
	if err != nil {
		if !opts.SIGHUP {
			return err
		}
		// Typically the inotify instance limit of a crowded node. Returning
		// would also drop the SIGHUP handler and let a later `kill -HUP`
		// terminate the process, so degrade to SIGHUP-only reloads.
		log.Error("cannot watch config file, reload on SIGHUP only", zap.Error(err))
	} else {
		defer fw.Close()
		w.fw = fw
		w.resync()
	}
	var events <-chan fsnotify.Event
	var watchErrs <-chan error
	if w.fw != nil {
		events, watchErrs = w.fw.Events, w.fw.Errors
	}

	var hup chan os.Signal
	if opts.SIGHUP {
		hup = make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
	}

	// Stopped until the first relevant event. Go ≥ 1.23 timers drop a stale
	// tick on Stop/Reset, so Reset alone re-arms the debounce correctly.
	timer := time.NewTimer(debounce)
	timer.Stop()
	defer timer.Stop()
	// An edit made while the gateway was starting, before the watch began, sent
	// its event to nobody: compare the file with what was loaded once now.
	if data, err := os.ReadFile(w.path); err == nil && sha256.Sum256(data) != w.last {
		timer.Reset(debounce)
	}

	log.Debug("config watcher started", zap.Duration("debounce", debounce), zap.Bool("sighup", opts.SIGHUP))
	if opts.Ready != nil {
		opts.Ready()
	}
	if opts.ready != nil {
		opts.ready()
	}
	for {
		select {
		case <-ctx.Done():
			log.Debug("config watcher stopped")
			return nil
		case ev, ok := <-events:
			if !ok {
				return errors.New("reload: watcher closed")
			}
			if w.relevant(ev) {
				timer.Reset(debounce)
			}
		case err, ok := <-watchErrs:
			if !ok {
				return errors.New("reload: watcher closed")
			}
			// An overflowed event queue may have hidden our file's event: re-check.
			log.Warn("config watcher error", zap.Error(err))
			timer.Reset(debounce)
		case <-timer.C:
			w.reload(TriggerFile, false)
		case <-hup:
			log.Info("SIGHUP received, reloading config")
			timer.Stop()
			w.reload(TriggerSIGHUP, true)
		}
	}
}

// startWatch creates an fsnotify watcher on dir.
func startWatch(dir string) (*fsnotify.Watcher, error) {
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("reload: create watcher: %w", err)
	}
	if err := fw.Add(dir); err != nil {
		fw.Close()
		return nil, fmt.Errorf("reload: watch %s: %w", dir, err)
	}
	return fw, nil
}

// watcher is Run's state; it is only touched from Run's goroutine.
type watcher struct {
	opts   Options
	log    *zap.Logger
	fw     *fsnotify.Watcher // nil in SIGHUP-only mode
	path   string            // absolute config path as given
	dir    string            // its directory, always watched
	lost   bool              // the directory's watch went with it (moved or removed)
	parent string            // watched while lost, to see the directory come back
	extra  map[string]bool   // other directories the path resolves through
	names  map[string]bool   // every path the config path resolves through
	last   [32]byte          // hash of the content last tried (applied or not)
	settle func(outcome)
}

// relevant reports whether an event may concern the config file: the file
// itself, a hop of its symlink chain, a Kubernetes "..data"-style entry next to
// it, or a watched directory going away. Chmod is kept: the hash dedupe makes
// a touch free, and a permission fix may make an unreadable file readable.
func (w *watcher) relevant(ev fsnotify.Event) bool {
	name := filepath.Clean(ev.Name)
	if name == w.dir && w.fw != nil {
		// The directory itself was moved away or deleted: its watch no longer sees
		// what is at its path. resync watches the path again once it exists (its
		// parent's watch tells when it is created).
		if ev.Has(fsnotify.Remove|fsnotify.Rename) && !w.lost {
			w.lost = true
			w.log.Warn("config directory moved or removed; watching for it to come back (SIGHUP also reloads)",
				zap.String("dir", w.dir))
		}
		return true
	}
	if w.names[name] || w.extra[name] {
		return true
	}
	return filepath.Dir(name) == w.dir && strings.HasPrefix(filepath.Base(name), "..")
}

// resync recomputes the symlink chain of the config path and watches the
// directories it passes through, so editing the target of a symlink is seen.
// Kubernetes' hidden directories inside the config directory (..data, the
// timestamped ..2026_…) are not watched: their swap shows up as a "..data" event
// in the config directory itself. It also watches the config directory again
// after it was replaced.
func (w *watcher) resync() {
	if w.fw == nil {
		return
	}
	if w.lost {
		_ = w.fw.Remove(w.dir) // a moved directory's watch would still follow it
		if err := w.fw.Add(w.dir); err == nil {
			w.lost = false
			if w.parent != "" && !w.extra[w.parent] {
				_ = w.fw.Remove(w.parent)
			}
			w.parent = ""
			w.log.Info("config directory is back, watching it again", zap.String("dir", w.dir))
		} else if p := filepath.Dir(w.dir); w.parent == "" && p != w.dir {
			if w.extra[p] || w.fw.Add(p) == nil { // already watched as a symlink hop, or now
				w.parent = p
			}
		}
	}
	base := realDir(w.dir)
	names := map[string]bool{w.path: true}
	want := map[string]bool{}
	for _, hop := range chain(w.path) {
		names[hop] = true
		d := realDir(filepath.Dir(hop))
		names[filepath.Join(d, filepath.Base(hop))] = true
		if d != w.dir && !hiddenWithin(base, d) {
			want[d] = true
		}
	}
	w.names = names
	for d := range w.extra {
		if !want[d] {
			if d != w.parent { // still watched for the config directory's return
				// The kernel may already have dropped it (directory removed).
				_ = w.fw.Remove(d)
			}
			delete(w.extra, d)
		}
	}
	for d := range want {
		if w.extra[d] {
			continue
		}
		if err := w.fw.Add(d); err != nil {
			w.log.Debug("cannot watch symlink target directory", zap.String("dir", d), zap.Error(err))
			continue
		}
		w.extra[d] = true
	}
}

// reload reads the file and calls Apply when its content is new, or always
// when force is set (SIGHUP).
func (w *watcher) reload(trigger string, force bool) {
	o := w.try(trigger, force)
	if w.settle != nil {
		w.settle(o)
	}
}

func (w *watcher) try(trigger string, force bool) outcome {
	w.resync()
	log := w.log.With(zap.String("trigger", trigger))
	data, err := os.ReadFile(w.path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			// Usually the window between an editor's rm/rename and the new
			// file: the next event brings it back.
			if force {
				log.Warn("config file not found, nothing to reload")
			} else {
				log.Debug("config file missing, waiting for it to reappear")
			}
			return outcomeMissing
		}
		log.Warn("cannot read config file", zap.Error(err))
		return outcomeReadError
	}
	sum := sha256.Sum256(data)
	log = log.With(zap.String("sha256", hex.EncodeToString(sum[:6])))
	if !force && sum == w.last {
		log.Debug("config unchanged")
		if w.opts.Unchanged != nil {
			w.opts.Unchanged()
		}
		return outcomeUnchanged
	}
	// Remembered before Apply so a broken file is not re-applied on every
	// touch until its content changes.
	w.last = sum
	// Apply's result is logged at debug only: the caller reports it with
	// context it alone has (generation, validation errors, /health).
	if err := w.apply(data, sum, trigger); err != nil {
		log.Debug("config apply failed", zap.Error(err))
		return outcomeFailed
	}
	log.Debug("config applied")
	return outcomeApplied
}

// apply calls Options.Apply, turning a panic into an error so a bug in
// building a new generation cannot take down the one serving.
func (w *watcher) apply(data []byte, sum [32]byte, trigger string) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("reload: apply panicked: %v", r)
			w.log.Error("config reload panicked, previous config keeps serving", zap.Error(err)) // no stack trace in a log line
		}
	}()
	return w.opts.Apply(data, sum, trigger)
}

// chain returns path followed by every symlink target it resolves through,
// each absolute and clean. A path component that is itself a symlink is not
// expanded: the kernel follows it when the directory is watched.
func chain(path string) []string {
	hops := []string{path}
	p := path
	for range maxHops {
		fi, err := os.Lstat(p)
		if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
			break
		}
		target, err := os.Readlink(p)
		if err != nil {
			break
		}
		if !filepath.IsAbs(target) {
			target = filepath.Join(filepath.Dir(p), target)
		}
		p = filepath.Clean(target)
		hops = append(hops, p)
	}
	return hops
}

// realDir resolves symlinks in dir, or returns it unchanged when it cannot.
func realDir(dir string) string {
	if r, err := filepath.EvalSymlinks(dir); err == nil {
		return r
	}
	return dir
}

// hiddenWithin reports whether dir is base or below one of its ".."-named entries,
// as Kubernetes' ..data and ..2026_… directories are.
func hiddenWithin(base, dir string) bool {
	if !within(base, dir) {
		return false
	}
	rel, _ := filepath.Rel(base, dir)
	return rel == "." || strings.HasPrefix(rel, "..")
}

// within reports whether dir is base or below it. Note that "..2026_x" is a
// legitimate child name, so only ".." itself or "../" means outside.
func within(base, dir string) bool {
	rel, err := filepath.Rel(base, dir)
	if err != nil {
		return false
	}
	return rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}
