package test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/diskd/diskd/pkg/testutil"
)

// openPTY returns a pseudo-terminal pair (what a terminal emulator gives a
// shell), so the interactive diskctl runs as a person would use it.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pty: %v", err)
	}
	var unlock int32
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, m.Fd(), unix.TIOCSPTLCK, uintptr(unsafe.Pointer(&unlock))); e != 0 {
		t.Fatal(e)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	unix.IoctlSetWinsize(int(s.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 40, Col: 200})
	t.Cleanup(func() { m.Close(); s.Close() })
	return m, s
}

// TestInteractiveShell: on a terminal diskctl gives a prompt, runs
// commands, recalls history with the up arrow, keeps it in
// ~/.diskd_history, and exits on ^D.
func TestInteractiveShell(t *testing.T) {
	testutil.RequiresRoot(t)
	_, diskctl := testutil.Binaries(t)
	d := testutil.StartDaemon(t, testutil.DaemonOptions{Args: []string{"--devices", "/dev/nonexistent", "--node-name", "shellhost"}})
	home := t.TempDir()
	m, s := openPTY(t)
	cmd := exec.Command(diskctl, "--socket", d.Socket)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = s, s, s
	cmd.Env = append(os.Environ(), "HOME="+home, "TERM=xterm")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() })

	var screen bytes.Buffer
	chunks := make(chan []byte, 100)
	go func() {
		for {
			buf := make([]byte, 4096)
			n, err := m.Read(buf)
			if err != nil {
				close(chunks)
				return
			}
			chunks <- buf[:n]
		}
	}()
	expectThat := func(what string, ok func(screen string) bool) {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for !ok(screen.String()) {
			select {
			case c, ok := <-chunks:
				if !ok {
					t.Fatalf("terminal closed waiting for %q; screen:\n%s", what, screen.String())
				}
				screen.Write(c)
			case <-deadline:
				t.Fatalf("waiting for %q; screen:\n%s", what, screen.String())
			}
		}
	}
	expect := func(what string) {
		t.Helper()
		expectThat(what, func(s string) bool { return strings.Contains(s, what) })
	}
	expect("diskd> ")
	m.Write([]byte("localhost\r"))
	expect("shellhost (node")
	screen.Reset()
	m.Write([]byte("\x1b[A\r")) // up arrow: the last command again
	expect("shellhost (node")
	m.Write([]byte("frobnicate\r"))
	// ^D only once the shell reads again (a prompt after the error): sent
	// while the command still ran, the terminal was not yet the editor's.
	expectThat("the prompt after the error", func(s string) bool {
		i := strings.Index(s, "unknown command")
		return i >= 0 && strings.Contains(s[i:], "diskd> ")
	})
	m.Write([]byte{4}) // ^D
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("diskctl exited with %v after ^D", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("^D did not end the shell")
	}
	hist, err := os.ReadFile(filepath.Join(home, ".diskd_history"))
	if err != nil || !strings.Contains(string(hist), "localhost") {
		t.Errorf("history file: %q, %v", hist, err)
	}
}
