package localsock

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// DialBlocking connects to the daemon's socket at path as Dial does (its
// failures are ErrNoDaemon alike), for a process that asks once and
// exits, such as `diskctl where`. Reads and writes block the calling
// thread, deadlines being the socket's timeouts, instead of going through
// Go's netpoller: a short-lived process would start the poller only to
// hand each reply from one thread to another, and at a process start of
// about 2 ms that was a tenth of it (see BenchmarkDiskctlStart). A
// blocked read is woken by a deadline or by Close, not by SetDeadline
// from another goroutine: not for sessions that wait on the daemon.
func DialBlocking(ctx context.Context, path string) (net.Conn, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, noDaemon(path, os.NewSyscallError("socket", err))
	}
	c := &blockingConn{fd: fd, path: path}
	dl, _ := ctx.Deadline() // a full backlog makes connect wait: the send timeout bounds it
	for {
		if err = c.setTimeout(unix.SO_SNDTIMEO, dl); err == nil {
			err = unix.Connect(fd, &unix.SockaddrUnix{Name: path})
		}
		if err != unix.EINTR {
			break
		}
	}
	if err == unix.EISCONN { // an interrupted connect went on, and is done
		err = nil
	}
	if err == nil {
		err = c.setTimeout(unix.SO_SNDTIMEO, time.Time{})
	}
	if err != nil {
		unix.Close(fd)
		if errors.Is(err, os.ErrDeadlineExceeded) || err == unix.EAGAIN {
			err = os.ErrDeadlineExceeded
		} else {
			err = os.NewSyscallError("connect", err)
		}
		return nil, noDaemon(path, err)
	}
	return c, nil
}

// blockingConn is a connected socket read and written by blocking system
// calls. Not safe for concurrent use, but for Close.
type blockingConn struct {
	fd     int
	path   string
	rd, wd time.Time // deadlines (zero: none)
	// set is the timeout each direction's socket option holds now.
	set [2]time.Duration
}

// setTimeout sets the socket's timeout for opt (SO_RCVTIMEO or
// SO_SNDTIMEO) to what is left until deadline; os.ErrDeadlineExceeded
// when it has passed.
func (c *blockingConn) setTimeout(opt int, deadline time.Time) error {
	var d time.Duration // 0: wait without end
	if !deadline.IsZero() {
		if d = time.Until(deadline); d <= 0 {
			return os.ErrDeadlineExceeded
		}
		d = max(d, time.Microsecond) // a zero timeval would mean none
	}
	i := 0
	if opt == unix.SO_SNDTIMEO {
		i = 1
	}
	if d == 0 && c.set[i] == 0 {
		return nil
	}
	tv := unix.NsecToTimeval(d.Nanoseconds())
	if err := unix.SetsockoptTimeval(c.fd, unix.SOL_SOCKET, opt, &tv); err != nil {
		return os.NewSyscallError("setsockopt", err)
	}
	c.set[i] = d
	return nil
}

func (c *blockingConn) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	for {
		if err := c.setTimeout(unix.SO_RCVTIMEO, c.rd); err != nil {
			return 0, c.opError("read", err)
		}
		n, err := unix.Read(c.fd, b)
		switch {
		case err == unix.EINTR: // a signal (a socket with a timeout is not restarted)
			continue
		case err == unix.EAGAIN:
			return 0, c.opError("read", os.ErrDeadlineExceeded)
		case err != nil:
			return 0, c.opError("read", os.NewSyscallError("read", err))
		case n == 0:
			return 0, io.EOF
		}
		return n, nil
	}
}

func (c *blockingConn) Write(b []byte) (int, error) {
	written := 0
	for written < len(b) {
		if err := c.setTimeout(unix.SO_SNDTIMEO, c.wd); err != nil {
			return written, c.opError("write", err)
		}
		n, err := unix.Write(c.fd, b[written:])
		if n > 0 {
			written += n
		}
		switch {
		case err == unix.EINTR:
		case err == unix.EAGAIN:
			return written, c.opError("write", os.ErrDeadlineExceeded)
		case err != nil:
			return written, c.opError("write", os.NewSyscallError("write", err))
		}
	}
	return written, nil
}

// opError is err as the net package reports it, so messages read the same
// whichever way diskctl connected.
func (c *blockingConn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "unix", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}

// Close wakes a read blocked in another thread (shutdown does, close
// alone would not) and releases the socket.
func (c *blockingConn) Close() error {
	unix.Shutdown(c.fd, unix.SHUT_RDWR)
	if err := unix.Close(c.fd); err != nil {
		return c.opError("close", os.NewSyscallError("close", err))
	}
	return nil
}

func (c *blockingConn) LocalAddr() net.Addr  { return &net.UnixAddr{Name: "@", Net: "unix"} }
func (c *blockingConn) RemoteAddr() net.Addr { return &net.UnixAddr{Name: c.path, Net: "unix"} }

func (c *blockingConn) SetDeadline(t time.Time) error {
	c.rd, c.wd = t, t
	return nil
}

func (c *blockingConn) SetReadDeadline(t time.Time) error  { c.rd = t; return nil }
func (c *blockingConn) SetWriteDeadline(t time.Time) error { c.wd = t; return nil }
