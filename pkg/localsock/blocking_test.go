package localsock

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestDialBlocking: a blocking connection to a real listener carries both
// ways, ends in io.EOF, and reports deadlines as the net package does
// (a net.Error that times out, os.ErrDeadlineExceeded).
func TestDialBlocking(t *testing.T) {
	l, err := Listen(filepath.Join(t.TempDir(), "s.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()
	c, err := DialBlocking(t.Context(), l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	srv := <-accepted
	if srv == nil {
		t.Fatal("nothing accepted")
	}

	if _, err := c.Write([]byte("ping\n")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	if n, err := io.ReadFull(srv, buf[:5]); err != nil || string(buf[:n]) != "ping\n" {
		t.Fatalf("daemon read %q, %v", buf[:n], err)
	}

	// Nothing to read: the deadline ends the wait.
	c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	t0 := time.Now()
	_, err = c.Read(buf)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline = %v, want a timeout", err)
	}
	if waited := time.Since(t0); waited < 40*time.Millisecond {
		t.Errorf("read gave up after %v, before its deadline", waited)
	}
	// A deadline already past fails at once; a cleared one waits again.
	if _, err := c.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("read with the deadline passed = %v", err)
	}
	c.SetReadDeadline(time.Time{})
	go srv.Write([]byte("pong\n"))
	if n, err := c.Read(buf); err != nil || string(buf[:n]) != "pong\n" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}

	srv.Close()
	if n, err := c.Read(buf); n != 0 || err != io.EOF {
		t.Errorf("read after the daemon closed = %d, %v, want io.EOF", n, err)
	}
	// Writing to a closed peer is an error (EPIPE), not a SIGPIPE death.
	var werr error
	for range 3 {
		if _, werr = c.Write([]byte("x")); werr != nil {
			break
		}
	}
	if !errors.Is(werr, syscall.EPIPE) && !errors.Is(werr, syscall.ECONNRESET) {
		t.Errorf("write to a closed peer = %v, want EPIPE", werr)
	}
}

// TestDialBlockingCloseWakesRead: Close from another goroutine ends a
// read blocked without a deadline.
func TestDialBlockingCloseWakesRead(t *testing.T) {
	l, err := Listen(filepath.Join(t.TempDir(), "s.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		if c, err := l.Accept(); err == nil {
			defer c.Close()
			time.Sleep(5 * time.Second)
		}
	}()
	c, err := DialBlocking(t.Context(), l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 8))
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	c.Close()
	select {
	case err := <-done:
		if err == nil {
			t.Error("read after Close succeeded")
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Close did not wake the blocked read")
	}
}

// TestDialBlockingConnectDeadline: a daemon that accepts nothing, its
// backlog full, makes connect wait; the context's deadline ends the wait
// as ErrNoDaemon, as with Dial.
func TestDialBlockingConnectDeadline(t *testing.T) {
	path := filepath.Join(t.TempDir(), "full.sock")
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	// Fill the backlog (with 0, one or two connections are queued).
	var queued []net.Conn
	defer func() {
		for _, c := range queued {
			c.Close()
		}
	}()
	for {
		ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
		t0 := time.Now()
		c, err := DialBlocking(ctx, path)
		cancel()
		if err == nil {
			if queued = append(queued, c); len(queued) > 8 {
				t.Fatal("the backlog never filled")
			}
			continue
		}
		if !errors.Is(err, ErrNoDaemon) || !strings.HasSuffix(err.Error(), path+": i/o timeout)") {
			t.Fatalf("connect to a full backlog = %v, want ErrNoDaemon after the deadline", err)
		}
		if waited := time.Since(t0); waited < 150*time.Millisecond {
			t.Errorf("connect gave up after %v, before the deadline", waited)
		}
		return
	}
}
