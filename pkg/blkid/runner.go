package blkid

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os/exec"
	"slices"
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
// empty list, not an error. See the package comment for why it may run
// blkid a second time, and for which devices.
func (r *Runner) ScanAll(ctx context.Context) ([]Record, error) {
	out, found, err := r.run(ctx, "-c", "/dev/null", "-o", "export")
	if err != nil || !found {
		return nil, err
	}
	ents, err := parseEscaped(out)
	if err != nil {
		return nil, fmt.Errorf("blkid scan: %w", err)
	}
	recs, err := r.decode(ctx, ents, []string{"-c", "/dev/null", "-d", "-o", "export"})
	if err != nil {
		return nil, fmt.Errorf("blkid scan: %w", err)
	}
	return recs, nil
}

// Probe runs a low-level probe of one device (`-p`), which reads the
// device itself rather than trusting any cache and reports USAGE and the
// partition entry. found is false when blkid recognises nothing there
// (exit status 2), including when the device does not exist. Output that
// is not exactly one record for dev is an error.
func (r *Runner) Probe(ctx context.Context, dev string) (rec Record, found bool, err error) {
	out, found, err := r.run(ctx, "-p", "-o", "export", dev)
	if err != nil || !found {
		return Record{}, false, err
	}
	ents, err := parseEscaped(out)
	if err != nil {
		return Record{}, false, fmt.Errorf("probe %s: %w", dev, err)
	}
	switch {
	case len(ents) == 0:
		return Record{}, false, nil
	case len(ents) > 1 || ents[0].dev != dev:
		return Record{}, false, fmt.Errorf("probe %s: blkid printed %d records, the first for %q", dev, len(ents), ents[0].dev)
	}
	recs, err := r.decode(ctx, ents, []string{"-p", "-d", "-o", "export"})
	if err != nil {
		return Record{}, false, fmt.Errorf("probe %s: %w", dev, err)
	}
	if len(recs) == 0 {
		return Record{}, false, fmt.Errorf("probe %s: its value bytes could not be read consistently", dev)
	}
	return recs[0], true, nil
}

// decode returns the records of ents. Entries whose values are all plain
// decode as they are; the others are read again with rawArgs plus their
// device paths (the same command with -d) and matched (matchRaw). A
// device that fails to match is asked once more, then left out with a
// warning: it changed between the runs, or it answers differently each
// time. blkid thus runs at most 1 + 2 x (devices that fail) more times
// than the escaped run.
func (r *Runner) decode(ctx context.Context, ents []entry, rawArgs []string) ([]Record, error) {
	recs := make([]Record, len(ents))
	keep := make([]bool, len(ents))
	var queue []int // indexes of entries that need their raw bytes
	for i := range ents {
		if rec, ok := ents[i].plainRecord(); ok {
			recs[i], keep[i] = rec, true
		} else {
			queue = append(queue, i)
		}
	}
	failed := make(map[int]bool)
	for len(queue) > 0 {
		batch := make([]entry, len(queue))
		args := slices.Clone(rawArgs)
		for j, i := range queue {
			batch[j] = ents[i]
			args = append(args, ents[i].dev)
		}
		raw, _, err := r.run(ctx, args...)
		if err != nil {
			return nil, err
		}
		got, n, merr := matchRaw(batch, raw)
		for j, rec := range got {
			recs[queue[j]], keep[queue[j]] = rec, true
		}
		if merr == nil {
			break
		}
		bad := queue[n]
		queue = queue[n+1:]
		if failed[bad] {
			r.logger().Warn("device left out of this scan: blkid's escaped and raw outputs disagree",
				"device", ents[bad].dev, "err", merr)
			continue
		}
		failed[bad] = true
		queue = append([]int{bad}, queue...)
	}
	out := recs[:0]
	for i, rec := range recs {
		if keep[i] {
			out = append(out, rec)
		}
	}
	return out, nil
}

func (r *Runner) logger() *slog.Logger {
	if r.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return r.Logger
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
	log := r.logger()
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
