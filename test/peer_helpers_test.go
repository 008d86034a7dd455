package test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/diskd/diskd/pkg/disk"
	"github.com/diskd/diskd/pkg/peer"
	"github.com/diskd/diskd/pkg/testutil"
	"golang.org/x/sys/unix"
)

// peerHeartbeat is the interval the multi-host tests run with: offline
// detection (3 intervals) then takes 3 s.
const peerHeartbeat = "1s"

// startOn starts a real diskd on host h with args (plus a 1 s heartbeat
// unless args set one), reporting only the devices in devices.
func startOn(t *testing.T, h *testutil.Host, devices []string, args ...string) *testutil.Daemon {
	t.Helper()
	a := []string{"--heartbeat-interval", peerHeartbeat}
	if len(devices) == 0 {
		devices = []string{"/dev/nothing-for-this-test"}
	}
	for _, d := range devices {
		a = append(a, "--devices", d)
	}
	return testutil.StartDaemon(t, testutil.DaemonOptions{Prefix: h.Prefix(), Args: append(a, args...)})
}

// disksOn returns the disks daemon d lists for host name.
func disksOn(t *testing.T, d *testutil.Daemon, host string) []disk.Disk {
	t.Helper()
	var out []disk.Disk
	for _, x := range listJSON(t, d) {
		if x.Host == host {
			out = append(out, x)
		}
	}
	return out
}

func presentOn(t *testing.T, d *testutil.Daemon, host string) int {
	n := 0
	for _, x := range disksOn(t, d, host) {
		if x.Present {
			n++
		}
	}
	return n
}

func peersOf(t *testing.T, d *testutil.Daemon) []disk.Node {
	t.Helper()
	var ns []disk.Node
	if err := json.Unmarshal([]byte(d.MustCtl("peers", "--json")), &ns); err != nil {
		t.Fatal(err)
	}
	return ns
}

// peerNamed returns the node d knows by name (ok false if unknown).
func peerNamed(t *testing.T, d *testutil.Daemon, name string) (disk.Node, bool) {
	for _, n := range peersOf(t, d) {
		if n.Name == name && !n.Local {
			return n, true
		}
	}
	return disk.Node{}, false
}

func onlineOn(t *testing.T, d *testutil.Daemon, name string) bool {
	n, ok := peerNamed(t, d, name)
	return ok && n.Online
}

var loopSeq atomic.Int64

// newLoopDev creates an unattached /dev/loopN with a number nobody else
// uses (LOOP_CTL_ADD), so a daemon's --devices can name the device before
// anything is attached to it. Cleanup detaches it and removes it.
func newLoopDev(t testing.TB) string {
	t.Helper()
	testutil.RequiresRoot(t)
	testutil.RequiresTool(t, "losetup")
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no loop-control: %v", err)
	}
	defer ctl.Close()
	base := 3000 + (os.Getpid()%500)*16
	for range 64 {
		n := base + int(loopSeq.Add(1))
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, ctl.Fd(), unix.LOOP_CTL_ADD, uintptr(n))
		if errno == unix.EEXIST {
			continue
		}
		if errno != 0 {
			t.Fatalf("LOOP_CTL_ADD %d: %v", n, errno)
		}
		dev := fmt.Sprintf("/dev/loop%d", n)
		t.Cleanup(func() { removeLoopDev(t, dev, n) })
		testutil.Eventually(t, 5*time.Second, dev+" node", func() bool { _, err := os.Stat(dev); return err == nil })
		return dev
	}
	t.Fatal("no free loop device number")
	return ""
}

func removeLoopDev(t testing.TB, dev string, n int) {
	_ = exec.Command("losetup", "-d", dev).Run() // fails when not attached: fine
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		return
	}
	defer ctl.Close()
	for range 100 { // detaching finishes asynchronously
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, ctl.Fd(), unix.LOOP_CTL_REMOVE, uintptr(n))
		if errno != unix.EBUSY {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Errorf("could not remove %s", dev)
}

func losetup(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("losetup", args...).CombinedOutput(); err != nil {
		t.Fatalf("losetup %v: %v: %s", args, err, out)
	}
}

// newWireTap records the peer network's IPv4 datagrams as seen on h.
func newWireTap(t testing.TB, h *testutil.Host) *testutil.Tap {
	return testutil.NewTap(t, h, netip.AddrPortFrom(netip.MustParseAddr(peer.DefaultGroup4), peer.DefaultPort))
}

// fakeBlkid writes a blkid stand-in that reports n ext4 devices
// /dev/fakeN on a full scan and nothing on a single-device probe.
func fakeBlkid(t testing.TB, n int) string {
	t.Helper()
	dir := t.TempDir()
	out := filepath.Join(dir, "inventory")
	var b bytes.Buffer
	for i := range n {
		fmt.Fprintf(&b, "DEVNAME=/dev/fake%d\nUUID=%08x-2222-4000-8000-%012x\nLABEL=BIG_%04d\nTYPE=ext4\nUSAGE=filesystem\n\n", i, i, i, i)
	}
	if err := os.WriteFile(out, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(dir, "blkid")
	body := fmt.Sprintf("#!/bin/sh\ncase \"$*\" in *-p*) exit 2;; esac\ncat %s\n", out)
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	return script
}

func writeKeyFile(t testing.TB, text string) string {
	p := filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// sigkill kills the daemon without letting it say goodbye.
func sigkill(d *testutil.Daemon) error {
	if err := d.Cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	<-d.Done()
	return nil
}
