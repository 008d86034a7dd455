package test

import (
	"net"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/diskd/diskd/pkg/testutil"
)

// notifyListener is a NOTIFY_SOCKET: it returns the socket path and the
// messages received on it.
func notifyListener(t *testing.T) (string, <-chan string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	nl, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nl.Close() })
	msgs := make(chan string, 1000)
	go func() {
		defer close(msgs)
		buf := make([]byte, 4096)
		for {
			n, err := nl.Read(buf)
			if err != nil {
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	return path, msgs
}

// countWatchdog counts WATCHDOG=1 messages arriving within d.
func countWatchdog(msgs <-chan string, d time.Duration) int {
	n := 0
	end := time.After(d)
	for {
		select {
		case m, ok := <-msgs:
			if !ok {
				return n
			}
			if strings.Contains(m, "WATCHDOG=1") {
				n++
			}
		case <-end:
			return n
		}
	}
}

// TestWatchdogStopsWhenALoopIsWedged: the daemon pets the watchdog only
// after a round trip through the store, the scanner's loop and the peer
// loop. With one loop wedged (a diskd built with the debug hooks blocks it
// on SIGUSR2) WATCHDOG=1 stops, and the log names the loop, so systemd
// restarts the daemon. The healthy daemon pets every quarter period.
func TestWatchdogStopsWhenALoopIsWedged(t *testing.T) {
	testutil.RequiresRoot(t)
	testutil.RequiresTool(t, "unshare")
	bin := testutil.DebugDiskd(t)
	for _, loop := range []string{"scanner", "peer"} {
		t.Run(loop, func(t *testing.T) {
			notify, msgs := notifyListener(t)
			d := testutil.StartDaemon(t, testutil.DaemonOptions{
				Binary: bin,
				Env:    []string{"NOTIFY_SOCKET=" + notify, "WATCHDOG_USEC=1000000", "DISKD_DEBUG_WEDGE=" + loop},
				Args:   []string{"--devices", "/dev/nonexistent"},
			})
			if n := countWatchdog(msgs, 2*time.Second); n < 2 {
				t.Fatalf("healthy daemon: %d WATCHDOG=1 in 2 s (watchdog 1 s)", n)
			}
			if err := d.Cmd.Process.Signal(syscall.SIGUSR2); err != nil {
				t.Fatal(err)
			}
			testutil.Eventually(t, 10*time.Second, "the log to name the wedged "+loop, func() bool {
				l := d.Log()
				i := strings.Index(l, "not answering within half the watchdog period")
				return i >= 0 && strings.Contains(l[i:], loop)
			})
			countWatchdog(msgs, 100*time.Millisecond) // any pet already on its way
			if n := countWatchdog(msgs, 2*time.Second); n != 0 {
				t.Errorf("%d WATCHDOG=1 in the 2 s after the %s loop was wedged", n, loop)
			}
			// The daemon still answers what needs no wedged loop.
			if _, _, code := d.Ctl("list"); code != 0 {
				t.Errorf("list with the %s loop wedged: exit %d", loop, code)
			}
		})
	}
}
