package mountinfo

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"

	"golang.org/x/sys/unix"
)

// DefaultPath is the mount table of the calling process's mount namespace.
const DefaultPath = "/proc/self/mountinfo"

// Watcher reports the mount table, then every change to it.
type Watcher struct {
	Path   string       // default DefaultPath
	Logger *slog.Logger // default: discard
}

// Run calls onChange with the parsed table once at start, then each time
// the kernel flags the file as changed (poll() with POLLPRI|POLLERR on
// the open descriptor; the file is re-read from offset 0). Several changes
// in a burst may give one call. A table that fails to parse after the
// first is logged and skipped. Run returns nil when ctx is done, and an
// error if the file cannot be opened, read or first parsed.
//
// onChange runs on Run's goroutine; a slow one delays the next re-read but
// loses no change, since the kernel keeps the flag raised.
func (w *Watcher) Run(ctx context.Context, onChange func([]Mount)) error {
	path := w.Path
	if path == "" {
		path = DefaultPath
	}
	log := w.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("path", path)

	// A raw descriptor, not an *os.File: the runtime's poller would make
	// the descriptor non-blocking and own its readiness.
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer unix.Close(fd)

	// An eventfd wakes poll() when ctx is done.
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return fmt.Errorf("mountinfo watch: eventfd: %w", err)
	}
	defer unix.Close(wake)
	woken := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(woken)
		_, _ = unix.Write(wake, binary.NativeEndian.AppendUint64(nil, 1))
	})
	defer func() {
		// Let a wake-up write in flight finish before wake is closed.
		if !stop() {
			<-woken
		}
	}()

	ms, err := readTable(fd)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	onChange(ms)

	var buf []byte
	fds := []unix.PollFd{
		{Fd: int32(fd), Events: unix.POLLPRI | unix.POLLERR},
		{Fd: int32(wake), Events: unix.POLLIN},
	}
	for {
		fds[0].Revents, fds[1].Revents = 0, 0
		if _, err := unix.Poll(fds, -1); err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return fmt.Errorf("poll %s: %w", path, err)
		}
		if fds[1].Revents != 0 || ctx.Err() != nil {
			return nil
		}
		if fds[0].Revents&unix.POLLNVAL != 0 {
			return fmt.Errorf("poll %s: invalid descriptor", path)
		}
		if fds[0].Revents&(unix.POLLPRI|unix.POLLERR) == 0 {
			continue
		}
		if buf, err = readAll(fd, buf[:0]); err != nil {
			return fmt.Errorf("read %s: %w", path, err)
		}
		ms, err := parseBytes(buf)
		if err != nil {
			log.Warn("mount table changed but does not parse; keeping the previous one", "err", err)
			continue
		}
		log.Debug("mount table changed", "mounts", len(ms))
		onChange(ms)
	}
}

func readTable(fd int) ([]Mount, error) {
	b, err := readAll(fd, nil)
	if err != nil {
		return nil, err
	}
	return parseBytes(b)
}

// readAll reads fd from offset 0 to the end into buf.
func readAll(fd int, buf []byte) ([]byte, error) {
	if _, err := unix.Seek(fd, 0, 0); err != nil {
		return nil, err
	}
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, make([]byte, max(4096, cap(buf)))...)[:len(buf)]
		}
		n, err := unix.Read(fd, buf[len(buf):cap(buf)])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return buf, nil
		}
		buf = buf[:len(buf)+n]
	}
}
