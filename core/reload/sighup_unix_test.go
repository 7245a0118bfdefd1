//go:build unix

package reload

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestSIGHUPForcesReload sends a real SIGHUP to the test process; Run's
// signal.Notify is registered before ready, so the default action (exit)
// cannot happen.
func TestSIGHUPForcesReload(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "gateway.yaml")
	write(t, path, "v: 1\n")
	h := start(t, path, harnessOpts{initial: "v: 1\n", sighup: true})

	for i := range 2 {
		mustDo(t, syscall.Kill(os.Getpid(), syscall.SIGHUP))
		a := h.waitApply()
		if a.data != "v: 1\n" || a.trigger != TriggerSIGHUP {
			t.Fatalf("SIGHUP #%d: Apply(%q, %q), want unchanged content with trigger sighup", i+1, a.data, a.trigger)
		}
	}
}

// TestSIGHUPOnlyWhenWatchFails checks that a directory that cannot be watched
// does not stop SIGHUP reloads (nor leave SIGHUP to kill the process).
func TestSIGHUPOnlyWhenWatchFails(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "not-yet")
	path := filepath.Join(dir, "gateway.yaml")
	h := start(t, path, harnessOpts{sighup: true})

	mustDo(t, os.Mkdir(dir, 0o755))
	write(t, path, "v: 1\n")
	mustDo(t, syscall.Kill(os.Getpid(), syscall.SIGHUP))
	if a := h.waitApply(); a.data != "v: 1\n" || a.trigger != TriggerSIGHUP {
		t.Fatalf("Apply(%q, %q), want the file on SIGHUP", a.data, a.trigger)
	}
}
