package localsock

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// staleSocket leaves a socket file nothing accepts on, as a daemon that
// was killed does.
func staleSocket(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "stale.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	return path
}

func TestListenRefusesLiveSocketReplacesStale(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "diskd.sock")
	l, err := Listen(path)
	if err != nil {
		t.Fatalf("Listen (creating its directory): %v", err)
	}
	defer l.Close()
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o666 {
		t.Errorf("socket mode %v (err %v), want 0666: every local user may connect", fi.Mode(), err)
	}
	if _, err := Listen(path); err == nil || !strings.Contains(err.Error(), "already listening") {
		t.Errorf("second Listen on a live socket: %v", err)
	}
	stale := staleSocket(t)
	l2, err := Listen(stale)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	l2.Close()
}

func TestListenRefusesADirectoryOthersControl(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "open")
	if err := os.Mkdir(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o777) // past the umask
	if _, err := Listen(filepath.Join(dir, "s")); err == nil || !strings.Contains(err.Error(), "refusing") {
		t.Errorf("Listen in a world-writable directory: %v", err)
	}
	// Sticky, as /tmp is: others cannot replace what is ours.
	os.Chmod(dir, 0o777|os.ModeSticky)
	l, err := Listen(filepath.Join(dir, "s"))
	if err != nil {
		t.Fatalf("Listen in a sticky directory: %v", err)
	}
	l.Close()
}

// TestDialNoDaemon: nothing there and nothing accepting are both
// ErrNoDaemon, naming the path and why, in the same words from Dial and
// DialBlocking.
func TestDialNoDaemon(t *testing.T) {
	absent := filepath.Join(t.TempDir(), "absent.sock")
	stale := staleSocket(t)
	for path, why := range map[string]error{absent: syscall.ENOENT, stale: syscall.ECONNREFUSED} {
		_, err := Dial(t.Context(), path)
		if !errors.Is(err, ErrNoDaemon) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), why.Error()) {
			t.Errorf("Dial(%s) = %v, want ErrNoDaemon naming the path and %q", path, err, why)
		}
		_, berr := DialBlocking(t.Context(), path)
		if !errors.Is(berr, ErrNoDaemon) || err == nil || berr.Error() != err.Error() {
			t.Errorf("DialBlocking(%s) = %v, want ErrNoDaemon as Dial's: %v", path, berr, err)
		}
	}
	l, err := Listen(filepath.Join(t.TempDir(), "live.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for name, dial := range map[string]func(context.Context, string) (net.Conn, error){"Dial": Dial, "DialBlocking": DialBlocking} {
		c, err := dial(t.Context(), l.Addr().String())
		if err != nil {
			t.Fatalf("%s a live socket: %v", name, err)
		}
		c.Close()
	}
}

func TestPaths(t *testing.T) {
	t.Setenv(EnvPath, "")
	t.Setenv("XDG_RUNTIME_DIR", "/run/user/1000")
	def := DefaultPath()
	if os.Geteuid() == 0 {
		if def != "/run/diskd/diskd.sock" {
			t.Errorf("root's DefaultPath = %q", def)
		}
	} else if def != "/run/user/1000/diskd/diskd.sock" {
		t.Errorf("DefaultPath with XDG_RUNTIME_DIR = %q", def)
	}
	if got := ClientPath(); got != def {
		t.Errorf("ClientPath without $%s = %q, want %q", EnvPath, got, def)
	}
	t.Setenv(EnvPath, "/elsewhere.sock")
	if got := ClientPath(); got != "/elsewhere.sock" {
		t.Errorf("ClientPath with $%s = %q", EnvPath, got)
	}
}
