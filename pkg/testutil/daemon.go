package testutil

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/diskd/diskd/pkg/ctlclient"
)

var build struct {
	once           sync.Once
	diskd, diskctl string
	err            error
}

// Binaries builds diskd and diskctl once per test binary and returns their
// paths. Integration tests drive these real binaries. DISKD_TEST_BINDIR
// names a directory holding diskd and diskctl to use instead (another
// build, to measure a figure before and after a change).
func Binaries(t testing.TB) (diskd, diskctl string) {
	t.Helper()
	build.once.Do(func() {
		if dir := os.Getenv("DISKD_TEST_BINDIR"); dir != "" {
			build.diskd, build.diskctl = filepath.Join(dir, "diskd"), filepath.Join(dir, "diskctl")
			return
		}
		dir, err := os.MkdirTemp("", "diskd-test-bin-")
		if err == nil {
			// Tests run diskctl as other users (nobody, a temporary admin).
			err = os.Chmod(dir, 0o755)
		}
		if err != nil {
			build.err = err
			return
		}
		build.diskd, build.diskctl = filepath.Join(dir, "diskd"), filepath.Join(dir, "diskctl")
		if build.err = goBuild(t, build.diskd, "./cmd/diskd"); build.err == nil {
			build.err = goBuild(t, build.diskctl, "./cmd/diskctl")
		}
	})
	if build.err != nil {
		t.Fatal(build.err)
	}
	return build.diskd, build.diskctl
}

var debugBuild struct {
	once sync.Once
	path string
	err  error
}

// DebugDiskd builds diskd once with -tags diskd_debughooks (test seams
// that no release has, such as wedging a loop on SIGUSR2) and returns its
// path, for DaemonOptions.Binary.
func DebugDiskd(t testing.TB) string {
	t.Helper()
	debugBuild.once.Do(func() {
		dir, err := os.MkdirTemp("", "diskd-test-debugbin-")
		if err != nil {
			debugBuild.err = err
			return
		}
		debugBuild.path = filepath.Join(dir, "diskd")
		debugBuild.err = goBuild(t, debugBuild.path, "./cmd/diskd", "-tags", "diskd_debughooks")
	})
	if debugBuild.err != nil {
		t.Fatal(debugBuild.err)
	}
	return debugBuild.path
}

// goBuild builds pkg (relative to the module root) into out, statically.
func goBuild(t testing.TB, out, pkg string, flags ...string) error {
	cmd := exec.Command("go", append(append([]string{"build"}, flags...), "-o", out, pkg)...)
	cmd.Dir = RepoRoot(t)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s %s: %v\n%s", strings.Join(flags, " "), pkg, err, b)
	}
	return nil
}

// RepoRoot is the module root (where go.mod is).
func RepoRoot(t testing.TB) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// DaemonOptions says how to start a test daemon.
type DaemonOptions struct {
	// Args are extra diskd flags (--devices, --blkid, ...).
	Args []string
	// Prefix runs diskd inside something: a test host's namespaces (see
	// Host.Prefix). Empty means a fresh, private network namespace
	// (`unshare --net`), so no test daemon ever multicasts on the
	// machine's own network.
	Prefix []string
	// StateDir and Socket default to fresh temporary paths.
	StateDir, Socket string
	// Env is added to the daemon's environment.
	Env []string
	// NoWait skips waiting for the socket (for tests of failing starts).
	NoWait bool
	// Binary is the diskd to run; empty means the one Binaries builds.
	Binary string
}

// Daemon is a running diskd under test.
type Daemon struct {
	t        testing.TB
	Cmd      *exec.Cmd
	Socket   string
	StateDir string
	LogPath  string
	done     chan struct{}
	waitErr  error
	diskctl  string
	prefix   []string
}

// StartDaemon starts diskd and waits until its socket answers. The
// daemon is stopped (SIGTERM, then SIGKILL) at cleanup, and its log is
// printed if the test failed.
func StartDaemon(t testing.TB, o DaemonOptions) *Daemon {
	t.Helper()
	RequiresRoot(t)
	diskd, diskctl := Binaries(t)
	if o.Binary != "" {
		diskd = o.Binary
	}
	dir := t.TempDir()
	if o.StateDir == "" {
		o.StateDir = filepath.Join(dir, "state")
	}
	if o.Socket == "" {
		o.Socket = filepath.Join(dir, "diskd.sock")
	}
	prefix := o.Prefix
	if len(prefix) == 0 {
		prefix = []string{"unshare", "--net", "--"}
	}
	args := append(append([]string{}, prefix[1:]...), diskd,
		"--config", "/dev/null", "--state-dir", o.StateDir, "--socket", o.Socket, "--dbus", "off")
	args = append(args, o.Args...)
	d := &Daemon{t: t, Socket: o.Socket, StateDir: o.StateDir, LogPath: filepath.Join(dir, "diskd.log"),
		done: make(chan struct{}), diskctl: diskctl, prefix: prefix}
	logf, err := os.Create(d.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	d.Cmd = exec.Command(prefix[0], args...)
	d.Cmd.Stdout, d.Cmd.Stderr = logf, logf
	d.Cmd.Env = append(daemonEnv(), o.Env...)
	// Pdeathsig kills the daemon if the test binary dies (a timeout, ^C).
	// It fires when the forking *thread* exits, so the daemon is started
	// and waited for on a goroutine that keeps its thread locked: Go ends
	// locked threads whose goroutine exits (netns helpers do that).
	d.Cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	started := make(chan error)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		err := d.Cmd.Start()
		started <- err
		if err != nil {
			return
		}
		d.waitErr = d.Cmd.Wait()
		logf.Close()
		close(d.done)
	}()
	if err := <-started; err != nil {
		t.Fatalf("start diskd: %v", err)
	}
	t.Cleanup(func() {
		d.Stop()
		if t.Failed() {
			b, _ := os.ReadFile(d.LogPath)
			t.Logf("diskd log (%s):\n%s", d.LogPath, b)
		}
	})
	if !o.NoWait {
		d.WaitReady()
	}
	return d
}

// WaitReady waits until the daemon's socket answers (at most 20 s).
func (d *Daemon) WaitReady() {
	d.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		c, err := ctlclient.Dial(ctx, d.Socket)
		cancel()
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-d.done:
			b, _ := os.ReadFile(d.LogPath)
			d.t.Fatalf("diskd exited before its socket answered (%v):\n%s", d.waitErr, b)
		default:
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("diskd socket %s not answering: %v", d.Socket, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop sends SIGTERM and waits (SIGKILL after 10 s). Safe to call twice.
func (d *Daemon) Stop() error {
	select {
	case <-d.done:
		return d.waitErr
	default:
	}
	d.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(10 * time.Second):
		d.Cmd.Process.Kill()
		<-d.done
		d.t.Errorf("diskd did not stop within 10 s of SIGTERM")
	}
	return d.waitErr
}

// Kill sends SIGKILL and waits.
func (d *Daemon) Kill() {
	d.Cmd.Process.Kill()
	<-d.done
}

// Done is closed when the daemon has exited.
func (d *Daemon) Done() <-chan struct{} { return d.done }

// Log returns what the daemon logged so far.
func (d *Daemon) Log() string {
	b, _ := os.ReadFile(d.LogPath)
	return string(b)
}

// Ctl runs the real diskctl against this daemon and returns its stdout,
// stderr and exit code.
func (d *Daemon) Ctl(args ...string) (stdout, stderr string, code int) {
	d.t.Helper()
	cmd := exec.Command(d.diskctl, append([]string{"--socket", d.Socket}, args...)...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	code = 0
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else {
			d.t.Fatalf("run diskctl: %v", err)
		}
	}
	return o.String(), e.String(), code
}

// MustCtl is Ctl that fails the test on a non-zero exit.
func (d *Daemon) MustCtl(args ...string) string {
	d.t.Helper()
	out, errOut, code := d.Ctl(args...)
	if code != 0 {
		d.t.Fatalf("diskctl %s: exit %d: %s", strings.Join(args, " "), code, errOut)
	}
	return out
}

// Eventually polls cond every 20 ms until it holds or timeout passes.
// It is for waiting on asynchronous effects, not for asserting speed.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// daemonEnv is the test's environment without systemd's variables, which
// would otherwise leak from a test run under a service manager.
func daemonEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		switch strings.SplitN(kv, "=", 2)[0] {
		case "NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM":
			continue
		}
		env = append(env, kv)
	}
	return env
}
