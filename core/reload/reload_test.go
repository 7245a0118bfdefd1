package reload

import (
	"context"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// deadline guards against deadlocks only; nothing here asserts on speed.
const deadline = 15 * time.Second

// testDebounce is long enough that a truncate+write pair lands in one window
// even on a loaded machine, short enough to keep the suite quick.
const testDebounce = 200 * time.Millisecond

type applied struct {
	data    string
	hash    [32]byte
	trigger string
}

// harness runs Run in the background and records what it does.
type harness struct {
	t        *testing.T
	applies  chan applied
	outcomes chan outcome
	cancel   context.CancelFunc
	done     chan error

	mu      sync.Mutex
	history []applied
}

type harnessOpts struct {
	debounce time.Duration
	sighup   bool
	initial  string // content already loaded; its hash becomes InitialHash
	apply    func(data string) error
}

func start(t *testing.T, path string, ho harnessOpts) *harness {
	t.Helper()
	if ho.debounce == 0 {
		ho.debounce = testDebounce
	}
	h := &harness{
		t:        t,
		applies:  make(chan applied, 100),
		outcomes: make(chan outcome, 100),
		done:     make(chan error, 1),
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	ready := make(chan struct{})
	opts := Options{
		Path:     path,
		Debounce: ho.debounce,
		Logger:   zaptest.NewLogger(t),
		SIGHUP:   ho.sighup,
		Apply: func(data []byte, hash [32]byte, trigger string) error {
			a := applied{data: string(data), hash: hash, trigger: trigger}
			h.mu.Lock()
			h.history = append(h.history, a)
			h.mu.Unlock()
			h.applies <- a
			if ho.apply != nil {
				return ho.apply(string(data))
			}
			return nil
		},
		ready:   func() { close(ready) },
		settled: func(o outcome) { h.outcomes <- o },
	}
	if ho.initial != "" {
		opts.InitialHash = sha256.Sum256([]byte(ho.initial))
	}
	go func() { h.done <- Run(ctx, opts) }()
	t.Cleanup(h.stop)
	select {
	case <-ready:
	case err := <-h.done:
		t.Fatalf("Run returned before watching: %v", err)
	case <-time.After(deadline):
		t.Fatal("watcher never became ready")
	}
	return h
}

// stop cancels Run and checks it returns nil; safe to call twice.
func (h *harness) stop() {
	h.t.Helper()
	if h.cancel == nil {
		return
	}
	h.cancel()
	h.cancel = nil
	select {
	case err := <-h.done:
		if err != nil {
			h.t.Errorf("Run returned %v after cancel, want nil", err)
		}
	case <-time.After(deadline):
		h.t.Fatal("Run did not return after ctx cancel")
	}
}

// waitApply returns the next Apply call.
func (h *harness) waitApply() applied {
	h.t.Helper()
	select {
	case a := <-h.applies:
		return a
	case <-time.After(deadline):
		h.t.Fatal("timed out waiting for Apply")
		return applied{}
	}
}

// waitOutcome skips reload attempts until one ends with want.
func (h *harness) waitOutcome(want outcome) {
	h.t.Helper()
	timeout := time.After(deadline)
	for {
		select {
		case o := <-h.outcomes:
			if o == want {
				return
			}
		case <-timeout:
			h.t.Fatalf("timed out waiting for a reload attempt ending %q", want)
		}
	}
}

func (h *harness) applyCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.history)
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func mustDo(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestFileChanges covers the ways editors and tools replace a file: each must
// produce exactly one Apply carrying the new content.
func TestFileChanges(t *testing.T) {
	cases := []struct {
		name   string
		change func(t *testing.T, dir, path string, h *harness)
	}{
		{"write in place", func(t *testing.T, dir, path string, h *harness) {
			write(t, path, "v: 2\n")
		}},
		{"vim-style tmp file renamed over", func(t *testing.T, dir, path string, h *harness) {
			tmp := filepath.Join(dir, ".gateway.yaml.swp")
			write(t, tmp, "v: 2\n")
			mustDo(t, os.Rename(tmp, path))
		}},
		{"backup rename then new file", func(t *testing.T, dir, path string, h *harness) {
			mustDo(t, os.Rename(path, path+"~"))
			write(t, path, "v: 2\n")
			mustDo(t, os.Remove(path+"~"))
		}},
		{"rm then create later", func(t *testing.T, dir, path string, h *harness) {
			mustDo(t, os.Remove(path))
			// The debounce fires while the file is gone: no Apply, no error.
			h.waitOutcome(outcomeMissing)
			write(t, path, "v: 2\n")
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "gateway.yaml")
			write(t, path, "v: 1\n")
			h := start(t, path, harnessOpts{initial: "v: 1\n"})

			tc.change(t, dir, path, h)
			a := h.waitApply()
			if a.data != "v: 2\n" || a.trigger != TriggerFile {
				t.Fatalf("Apply(%q, %q), want new content with trigger file", a.data, a.trigger)
			}
			if a.hash != sha256.Sum256([]byte(a.data)) {
				t.Error("hash passed to Apply is not the sha256 of the data")
			}
			h.stop()
			if n := h.applyCount(); n != 1 {
				t.Errorf("Apply called %d times, want 1", n)
			}
		})
	}
}

// TestRelevant checks which directory events may concern the config file:
// unrelated files next to it must not cause reload attempts.
func TestRelevant(t *testing.T) {
	dir := t.TempDir()
	mustDo(t, os.Mkdir(filepath.Join(dir, "..2026_11_23_a"), 0o755))
	write(t, filepath.Join(dir, "..2026_11_23_a", "gateway.yaml"), "v: a\n")
	mustDo(t, os.Symlink("..2026_11_23_a", filepath.Join(dir, "..data")))
	path := filepath.Join(dir, "gateway.yaml")
	mustDo(t, os.Symlink(filepath.Join("..data", "gateway.yaml"), path))

	fw, err := fsnotify.NewWatcher()
	mustDo(t, err)
	defer fw.Close()
	w := &watcher{log: zap.NewNop(), fw: fw, path: path, dir: dir, extra: map[string]bool{}}
	w.resync()

	cases := []struct {
		name string
		ev   string
		want bool
	}{
		{"config file", "gateway.yaml", true},
		{"k8s data symlink", "..data", true},
		{"k8s tmp symlink", "..data_tmp", true},
		{"k8s timestamped dir", "..2026_11_23_b", true},
		{"sibling file", "other.yaml", false},
		{"editor swap file", ".gateway.yaml.swp", false},
		{"backup file", "gateway.yaml~", false},
		{"same name in a subdirectory", "sub/gateway.yaml", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ev := fsnotify.Event{Name: filepath.Join(dir, tc.ev), Op: fsnotify.Write}
			if got := w.relevant(ev); got != tc.want {
				t.Errorf("relevant(%s) = %v, want %v", tc.ev, got, tc.want)
			}
		})
	}
	if len(w.extra) != 0 {
		t.Errorf("k8s layout watches extra directories %v; the ..data swap is seen in the config dir", w.extra)
	}
}

// k8sUpdate swaps a ConfigMap volume's content the way the kubelet does.
func k8sUpdate(t *testing.T, dir, stamp, content string) {
	t.Helper()
	ts := filepath.Join(dir, stamp)
	mustDo(t, os.Mkdir(ts, 0o755))
	write(t, filepath.Join(ts, "gateway.yaml"), content)
	mustDo(t, os.Symlink(stamp, filepath.Join(dir, "..data_tmp")))
	mustDo(t, os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")))
}

func TestKubernetesConfigMap(t *testing.T) {
	dir := t.TempDir()
	mustDo(t, os.Mkdir(filepath.Join(dir, "..2026_11_23_a"), 0o755))
	write(t, filepath.Join(dir, "..2026_11_23_a", "gateway.yaml"), "v: a\n")
	mustDo(t, os.Symlink("..2026_11_23_a", filepath.Join(dir, "..data")))
	path := filepath.Join(dir, "gateway.yaml")
	mustDo(t, os.Symlink(filepath.Join("..data", "gateway.yaml"), path))

	h := start(t, path, harnessOpts{initial: "v: a\n"})

	k8sUpdate(t, dir, "..2026_11_23_b", "v: b\n")
	mustDo(t, os.RemoveAll(filepath.Join(dir, "..2026_11_23_a")))
	if a := h.waitApply(); a.data != "v: b\n" {
		t.Fatalf("first swap: Apply(%q), want v: b", a.data)
	}

	// A second swap proves the watch survived the first one.
	k8sUpdate(t, dir, "..2026_11_23_c", "v: c\n")
	mustDo(t, os.RemoveAll(filepath.Join(dir, "..2026_11_23_b")))
	if a := h.waitApply(); a.data != "v: c\n" {
		t.Fatalf("second swap: Apply(%q), want v: c", a.data)
	}
}

// TestSymlinkToOtherDirectory edits the target of a plain symlink in place:
// only the target's directory sees that event.
func TestSymlinkToOtherDirectory(t *testing.T) {
	confDir, realDir := t.TempDir(), t.TempDir()
	target := filepath.Join(realDir, "real.yaml")
	write(t, target, "v: 1\n")
	path := filepath.Join(confDir, "gateway.yaml")
	mustDo(t, os.Symlink(target, path))

	h := start(t, path, harnessOpts{initial: "v: 1\n"})
	write(t, target, "v: 2\n")
	if a := h.waitApply(); a.data != "v: 2\n" {
		t.Fatalf("Apply(%q), want v: 2", a.data)
	}

	// Repointing the symlink to a file in a third directory moves the watch.
	otherDir := t.TempDir()
	other := filepath.Join(otherDir, "other.yaml")
	write(t, other, "v: 3\n")
	mustDo(t, os.Symlink(other, path+".tmp"))
	mustDo(t, os.Rename(path+".tmp", path))
	if a := h.waitApply(); a.data != "v: 3\n" {
		t.Fatalf("after repoint: Apply(%q), want v: 3", a.data)
	}
	write(t, other, "v: 4\n")
	if a := h.waitApply(); a.data != "v: 4\n" {
		t.Fatalf("edit new target: Apply(%q), want v: 4", a.data)
	}
}

// TestBurstIsDebounced saves ten times within one debounce window.
func TestBurstIsDebounced(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "gateway.yaml")
	write(t, path, "v: 0\n")
	// A long window so ten local writes surely fit in it.
	h := start(t, path, harnessOpts{initial: "v: 0\n", debounce: 2 * time.Second})

	var last string
	for i := 1; i <= 10; i++ {
		last = strings.Repeat("#", i) + "\nv: 1\n"
		write(t, path, last)
	}
	if a := h.waitApply(); a.data != last {
		t.Fatalf("Apply(%q), want the last save %q", a.data, last)
	}
	h.stop()
	if n := h.applyCount(); n != 1 {
		t.Errorf("Apply called %d times for one burst, want 1", n)
	}
}

func TestUnchangedContentSkipped(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "gateway.yaml")
	write(t, path, "v: 1\n")
	h := start(t, path, harnessOpts{initial: "v: 1\n"})

	cases := []struct {
		name  string
		touch func()
	}{
		{"mtime touch", func() {
			now := time.Now()
			mustDo(t, os.Chtimes(path, now, now))
		}},
		{"rewrite same bytes", func() { write(t, path, "v: 1\n") }},
		{"chmod", func() { mustDo(t, os.Chmod(path, 0o600)) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.touch()
			h.waitOutcome(outcomeUnchanged)
			if n := h.applyCount(); n != 0 {
				t.Fatalf("Apply called %d times for unchanged content", n)
			}
		})
	}
}

func TestFailedApplyNotRetriedUntilChanged(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "gateway.yaml")
	write(t, path, "good: 1\n")
	h := start(t, path, harnessOpts{initial: "good: 1\n", apply: func(data string) error {
		if strings.HasPrefix(data, "bad") {
			return errors.New("providers[0].model: required")
		}
		return nil
	}})

	write(t, path, "bad\n")
	if a := h.waitApply(); a.data != "bad\n" {
		t.Fatalf("Apply(%q), want the bad file once", a.data)
	}
	h.waitOutcome(outcomeFailed)

	write(t, path, "bad\n")
	h.waitOutcome(outcomeUnchanged)
	if n := h.applyCount(); n != 1 {
		t.Fatalf("bad content applied %d times, want 1", n)
	}

	write(t, path, "good: 2\n")
	if a := h.waitApply(); a.data != "good: 2\n" {
		t.Fatalf("Apply(%q), want the fixed file", a.data)
	}
}

// TestApplyPanicKeepsWatching checks a panicking Apply neither crashes the
// process nor stops the watcher.
func TestApplyPanicKeepsWatching(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "gateway.yaml")
	write(t, path, "v: 1\n")
	h := start(t, path, harnessOpts{initial: "v: 1\n", apply: func(data string) error {
		if data == "boom\n" {
			panic("nil map")
		}
		return nil
	}})
	write(t, path, "boom\n")
	h.waitApply()
	h.waitOutcome(outcomeFailed)
	write(t, path, "v: 2\n")
	if a := h.waitApply(); a.data != "v: 2\n" {
		t.Fatalf("Apply(%q), want v: 2 after a panic", a.data)
	}
}

func TestRunCancel(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "gateway.yaml")
	write(t, path, "v: 1\n")
	h := start(t, path, harnessOpts{initial: "v: 1\n", sighup: true})
	// Cancel with a debounce armed: the pending reload must not run later.
	write(t, path, "v: 2\n")
	h.stop()
	goleak.VerifyNone(t)
}

func TestRunStartErrors(t *testing.T) {
	dir := t.TempDir()
	apply := func([]byte, [32]byte, string) error { return nil }
	cases := []struct {
		name string
		opts Options
	}{
		{"empty path", Options{Apply: apply}},
		{"nil apply", Options{Path: filepath.Join(dir, "gateway.yaml")}},
		{"missing directory", Options{Path: filepath.Join(dir, "nope", "gateway.yaml"), Apply: apply}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), deadline)
			defer cancel()
			tc.opts.Logger = zap.NewNop()
			if err := Run(ctx, tc.opts); err == nil {
				t.Fatal("Run returned nil, want a start error")
			}
			if ctx.Err() != nil {
				t.Fatal("Run blocked instead of failing at start")
			}
		})
	}
}

// TestMissingFileAtStart lets the file appear after Run started.
func TestMissingFileAtStart(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "gateway.yaml")
	h := start(t, path, harnessOpts{})
	write(t, path, "v: 1\n")
	if a := h.waitApply(); a.data != "v: 1\n" {
		t.Fatalf("Apply(%q), want v: 1", a.data)
	}
}

// TestSymlinkIntoSubdirectory: gateway.yaml -> conf.d/prod.yaml; editing the target,
// in place or by a rename, reloads (only Kubernetes' ".." directories are left to
// their "..data" event).
func TestSymlinkIntoSubdirectory(t *testing.T) {
	dir := t.TempDir()
	mustDo(t, os.Mkdir(filepath.Join(dir, "conf.d"), 0o755))
	target := filepath.Join(dir, "conf.d", "prod.yaml")
	write(t, target, "v: 1\n")
	path := filepath.Join(dir, "gateway.yaml")
	mustDo(t, os.Symlink("conf.d/prod.yaml", path))
	h := start(t, path, harnessOpts{initial: "v: 1\n"})
	write(t, target, "v: 2\n")
	if a := h.waitApply(); a.data != "v: 2\n" {
		t.Fatalf("Apply(%q), want v: 2", a.data)
	}
	write(t, target+".tmp", "v: 3\n")
	mustDo(t, os.Rename(target+".tmp", target))
	if a := h.waitApply(); a.data != "v: 3\n" {
		t.Fatalf("after a rename: Apply(%q), want v: 3", a.data)
	}
}

// replaceDir moves dir away and makes it again with a new config (v: 2), then
// edits it (v: 3): both must be applied.
func replaceDir(t *testing.T, h *harness, dir, path string) {
	t.Helper()
	mustDo(t, os.Rename(dir, dir+".old"))
	h.waitOutcome(outcomeMissing) // the first attempt finds no file
	mustDo(t, os.Mkdir(dir, 0o755))
	write(t, path, "v: 2\n")
	if a := h.waitApply(); a.data != "v: 2\n" {
		t.Fatalf("Apply(%q), want v: 2", a.data)
	}
	write(t, path, "v: 3\n")
	if a := h.waitApply(); a.data != "v: 3\n" {
		t.Fatalf("edit in the new directory: Apply(%q), want v: 3", a.data)
	}
}

// TestConfigDirectoryReplaced: the config directory moved away and created again
// (mv d d.old; mkdir d; cp ...) is watched again: later edits still reload.
func TestConfigDirectoryReplaced(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "conf")
	mustDo(t, os.Mkdir(dir, 0o755))
	path := filepath.Join(dir, "gateway.yaml")
	write(t, path, "v: 1\n")
	h := start(t, path, harnessOpts{initial: "v: 1\n"})
	replaceDir(t, h, dir, path)
	// Removed outright, then made again.
	mustDo(t, os.RemoveAll(dir))
	h.waitOutcome(outcomeMissing)
	mustDo(t, os.Mkdir(dir, 0o755))
	write(t, path, "v: 4\n")
	if a := h.waitApply(); a.data != "v: 4\n" {
		t.Fatalf("after rm -rf and mkdir: Apply(%q), want v: 4", a.data)
	}
}

// TestEditDuringStartupIsApplied: a file that changed between the gateway's first
// load and the start of the watch is applied without waiting for another edit.
func TestEditDuringStartupIsApplied(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gateway.yaml")
	write(t, path, "v: 2\n")
	h := start(t, path, harnessOpts{initial: "v: 1\n"}) // v: 1 was loaded, v: 2 came before the watch
	if a := h.waitApply(); a.data != "v: 2\n" {
		t.Fatalf("Apply(%q), want v: 2", a.data)
	}
}

// TestConfigDirectoryReplacedParentHoldsTheTarget: conf/gateway.yaml -> ../shared.yaml,
// so the parent is already watched for the symlink; conf replaced is still seen.
func TestConfigDirectoryReplacedParentHoldsTheTarget(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "conf")
	mustDo(t, os.Mkdir(dir, 0o755))
	write(t, filepath.Join(root, "shared.yaml"), "v: 1\n")
	path := filepath.Join(dir, "gateway.yaml")
	mustDo(t, os.Symlink("../shared.yaml", path))
	h := start(t, path, harnessOpts{initial: "v: 1\n"})
	replaceDir(t, h, dir, path)
}
