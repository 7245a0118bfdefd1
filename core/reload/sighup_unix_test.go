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
