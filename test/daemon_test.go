package test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/diskd/diskd/pkg/api"
	"github.com/diskd/diskd/pkg/ctlclient"
	"github.com/diskd/diskd/pkg/disk"
	"github.com/diskd/diskd/pkg/testutil"
)

func listJSON(t *testing.T, d *testutil.Daemon) []disk.Disk {
	t.Helper()
	var ds []disk.Disk
	if err := json.Unmarshal([]byte(d.MustCtl("list", "--json")), &ds); err != nil {
		t.Fatal(err)
	}
	return ds
}

func find(ds []disk.Disk, label string) *disk.Disk {
	for i := range ds {
		if ds[i].Label == label {
			return &ds[i]
		}
	}
	return nil
}

func status(t *testing.T, d *testutil.Daemon) api.Status {
	t.Helper()
	var s api.Status
	if err := json.Unmarshal([]byte(d.MustCtl("status", "--json")), &s); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestLocalInventoryThroughRealParts: loop devices with ext4, xfs and vfat
// labels are listed; a detached one is remembered; mounting adds a mount
// point without a blkid run.
func TestLocalInventoryThroughRealParts(t *testing.T) {
	testutil.RequiresRoot(t)
	testutil.RequiresTool(t, "losetup", "mkfs.ext4", "mkfs.xfs", "mkfs.vfat", "blkid", "mount")
	ext4 := testutil.AttachLoop(t, testutil.LoopImage(t, 32, "mkfs.ext4", "-q", "-L", "E2E EXT4"))
	xfs := testutil.AttachLoop(t, testutil.LoopImage(t, 300, "mkfs.xfs", "-q", "-L", "e2exfs"))
	vfatImg := testutil.LoopImage(t, 32, "mkfs.vfat", "-n", "E2EVFAT")
	vfat := testutil.AttachLoop(t, vfatImg)

	d := testutil.StartDaemon(t, testutil.DaemonOptions{Args: []string{"--devices", ext4, "--devices", xfs, "--devices", vfat}})
	ds := listJSON(t, d)
	for _, c := range []struct{ label, dev, typ string }{{"E2E EXT4", ext4, "ext4"}, {"e2exfs", xfs, "xfs"}, {"E2EVFAT", vfat, "vfat"}} {
		got := find(ds, c.label)
		if got == nil {
			t.Fatalf("%s not listed: %+v", c.label, ds)
		}
		if got.Device != c.dev || got.Type != c.typ || !got.Present || got.Size == 0 || got.UUID == "" {
			t.Errorf("%s = %+v", c.label, *got)
		}
	}
	if len(ds) != 3 {
		t.Errorf("listed %d devices, want exactly the 3 allowed by --devices", len(ds))
	}

	// Detach: the uevent drops it; where names this host and a time.
	testutil.DetachLoop(t, vfatImg)
	testutil.Eventually(t, 10*time.Second, "vfat disk marked not present", func() bool {
		g := find(listJSON(t, d), "E2EVFAT")
		return g != nil && !g.Present
	})
	out := d.MustCtl("where", "E2EVFAT")
	host, _ := os.Hostname()
	if !strings.Contains(out, "E2EVFAT was last seen on "+host+" as "+vfat+" at ") {
		t.Errorf("where = %q", out)
	}

	// Mount the ext4 one: the mount point appears with no blkid run.
	before := status(t, d).Scan
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-o", "ro", ext4, mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })
	testutil.Eventually(t, 10*time.Second, "mount point listed", func() bool {
		g := find(listJSON(t, d), "E2E EXT4")
		return g != nil && len(g.Mounts) == 1 && g.Mounts[0] == mnt
	})
	after := status(t, d).Scan
	if after.FullScans != before.FullScans || after.MountUpdates <= before.MountUpdates {
		t.Errorf("mount caused full scans %d→%d, mount updates %d→%d", before.FullScans, after.FullScans,
			before.MountUpdates, after.MountUpdates)
	}
}

// TestStatePersistsAndCorruptFileIsMovedAside: history survives a restart;
// a corrupt state file is set aside and the daemon starts.
func TestStatePersistsAndCorruptFileIsMovedAside(t *testing.T) {
	testutil.RequiresRoot(t)
	testutil.RequiresTool(t, "losetup", "mkfs.ext4", "blkid")
	img := testutil.LoopImage(t, 32, "mkfs.ext4", "-q", "-L", "PERSIST")
	loop := testutil.AttachLoop(t, img)
	stateDir := filepath.Join(t.TempDir(), "state")
	opts := testutil.DaemonOptions{StateDir: stateDir, Args: []string{"--devices", loop}}
	d := testutil.StartDaemon(t, opts)
	id1 := status(t, d).NodeID
	if find(listJSON(t, d), "PERSIST") == nil {
		t.Fatal("not listed")
	}
	if err := d.Stop(); err != nil {
		t.Fatalf("clean stop: %v", err)
	}
	testutil.DetachLoop(t, img)

	d = testutil.StartDaemon(t, opts)
	if st := status(t, d); st.NodeID != id1 {
		t.Errorf("node ID changed across restart: %s → %s", id1, st.NodeID)
	}
	g := find(listJSON(t, d), "PERSIST")
	if g == nil || g.Present {
		t.Fatalf("after restart with the disk gone: %+v", g)
	}
	d.Stop()

	if err := os.WriteFile(filepath.Join(stateDir, "state.db"), []byte(strings.Repeat("garbage!", 1024)), 0o600); err != nil {
		t.Fatal(err)
	}
	d = testutil.StartDaemon(t, opts)
	st := status(t, d)
	if len(st.Problems) == 0 || !strings.Contains(st.Problems[0], "moved aside") {
		t.Errorf("corrupt state not reported: %+v", st.Problems)
	}
	aside, _ := filepath.Glob(filepath.Join(stateDir, "state.db.corrupt-*"))
	if len(aside) != 1 {
		t.Errorf("moved-aside files: %v", aside)
	}
	if st.NodeID != id1 {
		t.Errorf("node identity lost with the state file")
	}
}

// TestUndecodableStateRecordIsMovedAside: a state file bbolt opens but
// with a record that does not decode (read once, at the load) is moved
// aside as a corrupt one is, and the daemon starts empty and serves.
func TestUndecodableStateRecordIsMovedAside(t *testing.T) {
	testutil.RequiresRoot(t)
	stateDir := filledState(t, 8)
	path := filepath.Join(stateDir, "state.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("rows")).Put([]byte("uuid:zz"), []byte(`{"disk":{"name":"sdz","size":"big"}}`))
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	d := testutil.StartDaemon(t, testutil.DaemonOptions{StateDir: stateDir, Args: []string{"--devices", "/dev/nonexistent"}})
	st := status(t, d)
	if len(st.Problems) == 0 || !strings.Contains(st.Problems[0], "moved aside") {
		t.Errorf("undecodable record not reported: %+v", st.Problems)
	}
	if ds := listJSON(t, d); len(ds) != 0 {
		t.Errorf("started with %d disks from a damaged file", len(ds))
	}
	if aside, _ := filepath.Glob(path + ".corrupt-*"); len(aside) != 1 {
		t.Errorf("moved-aside files: %v", aside)
	}
}

// TestSocketActivationAndNotify: systemd-socket-activate passes the socket
// (the daemon binds nothing), and sd_notify reaches a NOTIFY_SOCKET
// listener with READY=1 and STATUS=, then STOPPING=1.
func TestSocketActivationAndNotify(t *testing.T) {
	testutil.RequiresRoot(t)
	testutil.RequiresTool(t, "systemd-socket-activate", "unshare")
	dir := t.TempDir()
	notifyPath := filepath.Join(dir, "notify")
	nl, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer nl.Close()
	msgs := make(chan string, 100)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := nl.Read(buf)
			if err != nil {
				close(msgs)
				return
			}
			msgs <- string(buf[:n])
		}
	}()

	sock := filepath.Join(dir, "activated.sock")
	unused := filepath.Join(dir, "unused.sock")
	d := testutil.StartDaemon(t, testutil.DaemonOptions{
		Prefix: []string{"unshare", "--net", "--", "systemd-socket-activate", "-l", sock, "--fdname=diskd",
			"-E", "NOTIFY_SOCKET=" + notifyPath, "-E", "WATCHDOG_USEC=400000"},
		Socket: unused, NoWait: true,
		Args: []string{"--devices", "/dev/nonexistent"},
	})
	// The daemon starts on the first connection to the activated socket.
	d.Socket = sock
	d.WaitReady()
	if _, err := os.Stat(unused); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("daemon bound its own socket %s despite LISTEN_FDS", unused)
	}
	if st := status(t, d); !strings.Contains(st.Socket, "from systemd") {
		t.Errorf("status socket = %q", st.Socket)
	}
	var got []string
	ready, status, watchdog := false, false, 0
	deadline := time.After(10 * time.Second)
	for !(ready && status && watchdog >= 2) {
		select {
		case m := <-msgs:
			got = append(got, m)
			ready = ready || strings.Contains(m, "READY=1")
			status = status || strings.Contains(m, "STATUS=")
			if strings.Contains(m, "WATCHDOG=1") {
				watchdog++
			}
		case <-deadline:
			t.Fatalf("notifications so far: %q", got)
		}
	}
	d.Stop()
	stopping := false
	for m := range drain(msgs, time.Second) {
		stopping = stopping || strings.Contains(m, "STOPPING=1")
	}
	if !stopping {
		t.Error("no STOPPING=1 on SIGTERM")
	}
}

func drain(c <-chan string, wait time.Duration) <-chan string {
	out := make(chan string, 100)
	go func() {
		defer close(out)
		for {
			select {
			case m, ok := <-c:
				if !ok {
					return
				}
				out <- m
			case <-time.After(wait):
				return
			}
		}
	}()
	return out
}

// TestManyClientsOnTheRealDaemon: 200 concurrent diskctl-protocol clients
// are all answered.
func TestManyClientsOnTheRealDaemon(t *testing.T) {
	testutil.RequiresRoot(t)
	d := testutil.StartDaemon(t, testutil.DaemonOptions{Args: []string{"--devices", "/dev/nonexistent"}})
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			c, err := ctlclient.Dial(ctx, d.Socket)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			_, err = c.Status(ctx)
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	n := 0
	for err := range errs {
		if err != nil {
			n++
			t.Log(err)
		}
	}
	if n > 0 {
		t.Errorf("%d of 200 clients not answered", n)
	}
}
