// Package testutil holds helpers for tests that use the real parts of the
// machine: root checks, loop devices, network namespaces, a private
// dbus-daemon. Nothing in it is linked into diskd or diskctl.
package testutil

import (
	"os"
	"os/exec"
	"testing"
)

// RequiresRoot skips t with a clear message when not running as root.
// CI runs as root, so there these tests always run.
func RequiresRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root (loop devices, namespaces or uevents); CI runs as root")
	}
}

// RequiresTool skips t when a command the test drives is not installed.
// In CI `.ci/run` installs every tool, so a skip there is a packaging bug.
func RequiresTool(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s not installed; .ci/run must install it", n)
			}
			t.Skipf("skipping: %s not installed (run .ci/run to install test dependencies)", n)
		}
	}
}
