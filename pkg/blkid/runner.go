package blkid

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

var (
	// ErrTimeout: blkid ran past Runner.Timeout (a hung device) and was killed.
	ErrTimeout = errors.New("blkid timed out")
	// ErrNotInstalled: the blkid binary is not there.
	ErrNotInstalled = errors.New("blkid not installed")
)

// exitNothingFound is blkid's exit status when no device or tag matched.
const exitNothingFound = 2

const (
	defaultPath    = "blkid"
	defaultTimeout = 15 * time.Second
	// waitDelay bounds how long a finished or killed blkid may keep us
	// waiting on its output pipes, held open by a child that escaped its
	// process group.
	waitDelay = 2 * time.Second
)

// Runner runs blkid. The zero value is ready to use; it is safe for
// concurrent use.
type Runner struct {
	Path    string        // binary name or path; default "blkid"
	Timeout time.Duration // per run; default 15s
	Logger  *slog.Logger  // default: discard
}

// ScanAll lists every device blkid can identify, probing them afresh:
// `-c /dev/null` ignores the cache file, which may be stale (devices that
// were moved or reformatted since it was written). No device found is an
// empty list, not an error.
func (r *Runner) ScanAll(ctx context.Context) ([]Record, error) {
	out, found, err := r.run(ctx, "-c", "/dev/null", "-d", "-o", "export")
	if err != nil || !found {
		return nil, err
	}
	recs, err := ParseExport(out)
	if err != nil {
		return nil, fmt.Errorf("blkid scan: %w", err)
	}
	return recs, nil
}

// Probe runs a low-level probe of one device (`-p`), which reads the
// device itself rather than trusting any cache and reports USAGE and the
// partition entry. found is false when blkid recognises nothing there
// (exit status 2), including when the device does not exist.
func (r *Runner) Probe(ctx context.Context, dev string) (rec Record, found bool, err error) {
	out, found, err := r.run(ctx, "-p", "-d", "-o", "export", dev)
	if err != nil || !found {
		return Record{}, false, err
	}
	recs, err := ParseExport(out)
	if err != nil {
		return Record{}, false, fmt.Errorf("probe %s: %w", dev, err)
	}
	if len(recs) == 0 {
		return Record{}, false, nil
	}
	rec = recs[0]
	if rec.Device == "" {
		rec.Device = dev
	}
	return rec, true, nil
}

// lookPath finds the binary. A bare name also falls back to the sbin
// directories, which an unprivileged user's PATH often lacks on Debian.
func lookPath(path string) (string, error) {
	bin, err := exec.LookPath(path)
	if err == nil || strings.Contains(path, "/") {
		return bin, err
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		if b, err2 := exec.LookPath(dir + "/" + path); err2 == nil {
			return b, nil
		}
	}
	return "", err
}

// run runs blkid with args in its own process group and returns its
// stdout; found is false for exit status 2. On timeout or cancellation the
// whole group is killed, so a wrapper script cannot leave its children
// behind holding the device.
func (r *Runner) run(ctx context.Context, args ...string) (out []byte, found bool, err error) {
	path := r.Path
	if path == "" {
		path = defaultPath
	}
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = defaultTimeout
	}
	log := r.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "blkid")
	what := path + " " + strings.Join(args, " ")

	bin, err := lookPath(path)
	if err != nil {
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
			return nil, false, fmt.Errorf("%s: %w: %w", what, ErrNotInstalled, err)
		}
		return nil, false, fmt.Errorf("%s: %w", what, err)
	}

	tctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(tctx, bin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		// The group's id is the leader's pid (Setpgid with Pgid 0).
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	cmd.WaitDelay = waitDelay

	start := time.Now()
	err = cmd.Run()
	log.Debug("ran blkid", "args", args, "duration", time.Since(start), "err", err)
	if err == nil {
		return stdout.Bytes(), true, nil
	}
	switch {
	case ctx.Err() != nil:
		return nil, false, fmt.Errorf("%s: %w", what, ctx.Err())
	case tctx.Err() != nil:
		return nil, false, fmt.Errorf("%s: %w after %v", what, ErrTimeout, timeout)
	}
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.ExitCode() == exitNothingFound {
		return nil, false, nil
	}
	if msg := bytes.TrimSpace(stderr.Bytes()); len(msg) > 0 {
		return nil, false, fmt.Errorf("%s: %w: %s", what, err, msg)
	}
	return nil, false, fmt.Errorf("%s: %w", what, err)
}
