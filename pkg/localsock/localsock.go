// Package localsock owns how a local client reaches the daemon: where the
// Unix socket is (DefaultPath, ClientPath), binding it safely (Listen) and
// connecting to it (Dial, with ErrNoDaemon when nothing answers). The
// daemon takes a socket systemd passed instead of calling Listen (that
// stays in cmd/diskd); what is spoken over the socket is package api's.
// diskctl links this package, so it holds nothing of the daemon.
package localsock

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// EnvPath names the environment variable that points diskctl at another
// socket (the daemon's own is its --socket flag).
const EnvPath = "DISKD_SOCKET"

// DefaultPath is where the daemon listens and diskctl connects when
// neither is told otherwise: /run/diskd/diskd.sock for root,
// $XDG_RUNTIME_DIR/diskd/diskd.sock for anyone else (falling back to
// /tmp/diskd-UID when that is unset, as on a bare su session).
func DefaultPath() string {
	if os.Geteuid() == 0 {
		return "/run/diskd/diskd.sock"
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "diskd", "diskd.sock")
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("diskd-%d", os.Geteuid()), "diskd.sock")
}

// ClientPath is the socket a client dials when not given one: $DISKD_SOCKET,
// else DefaultPath.
func ClientPath() string {
	if s := os.Getenv(EnvPath); s != "" {
		return s
	}
	return DefaultPath()
}

// Listen binds a Unix socket at path, creating its directory. A stale
// socket file (nothing accepting on it) is replaced; a live one is an
// error, so two daemons never share a path. The socket is open to every
// local user: reads are public, actions are authz's decision, and every
// user's sessions are bounded (package control).
func Listen(path string) (net.Listener, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("socket directory: %w", err)
	}
	// A directory someone else controls (say a planted /tmp/diskd-UID)
	// could swap the socket for theirs under diskctl's feet.
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return nil, fmt.Errorf("socket directory: %w", err)
	}
	if (st.Uid != uint32(os.Geteuid()) && st.Uid != 0) || st.Mode&0o022 != 0 && st.Mode&unix.S_ISVTX == 0 {
		return nil, fmt.Errorf("socket directory %s is owned by uid %d or writable by others; refusing to listen there", dir, st.Uid)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("socket %s: another diskd is already listening there", path)
	} else if errors.Is(err, syscall.ECONNREFUSED) {
		os.Remove(path)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o666); err != nil {
		l.Close()
		return nil, fmt.Errorf("socket %s: %w", path, err)
	}
	return l, nil
}

// ErrNoDaemon wraps Dial's failures to connect, so callers can tell "no
// daemon" from a daemon that answered with an error.
var ErrNoDaemon = errors.New("diskd is not running")

// Dial connects to the daemon's socket at path. Failing to connect is
// ErrNoDaemon, naming path and the reason (ENOENT, ECONNREFUSED, EACCES).
func Dial(ctx context.Context, path string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Err != nil {
			err = op.Err
		}
		return nil, noDaemon(path, err)
	}
	return c, nil
}

// noDaemon is ErrNoDaemon for path, saying why.
func noDaemon(path string, why error) error {
	return fmt.Errorf("%w (cannot connect to %s: %v)", ErrNoDaemon, path, why)
}
