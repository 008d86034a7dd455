package test

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	contract "github.com/diskd/diskd/dbus"
	"github.com/diskd/diskd/pkg/api"
	"github.com/diskd/diskd/pkg/disk"
	"github.com/diskd/diskd/pkg/testutil"
)

// historyJSON is `diskctl history --json Q` on d (extra: more diskctl flags).
func historyJSON(t *testing.T, d *testutil.Daemon, q string, extra ...string) []disk.History {
	t.Helper()
	out, errOut, code := d.Ctl(append(extra, "history", "--json", q)...)
	if code != 0 {
		t.Fatalf("diskctl history %s: exit %d: %s", q, code, errOut)
	}
	var hs []disk.History
	if err := json.Unmarshal([]byte(out), &hs); err != nil {
		t.Fatalf("history --json: %v: %q", err, out)
	}
	return hs
}

func presentIs(t *testing.T, d *testutil.Daemon, label string, present bool) func() bool {
	return func() bool {
		g := find(listJSON(t, d), label)
		return g != nil && g.Present == present
	}
}

// TestThreeSticksOnOneLoopDevice: the first example through the
// real parts. Three filesystems with their own labels are attached one
// after another on the same loop device, each detached before the next:
// where answers for all three, over the socket and over D-Bus, before and
// after a restart, and the first's D-Bus object keeps its path.
func TestThreeSticksOnOneLoopDevice(t *testing.T) {
	testutil.RequiresRoot(t)
	testutil.RequiresTool(t, "losetup", "mkfs.ext4", "blkid", "busctl")
	bus := startPolicyBus(t)
	dev := newLoopDev(t)
	labels := []string{"STICK_ONE", "STICK_TWO", "STICK_THREE"}
	var imgs []string
	for _, l := range labels {
		imgs = append(imgs, testutil.LoopImage(t, 32, "mkfs.ext4", "-q", "-L", l))
	}
	stateDir := filepath.Join(t.TempDir(), "state")
	opts := testutil.DaemonOptions{StateDir: stateDir, Args: []string{"--devices", dev, "--dbus", bus.Address}}
	d := testutil.StartDaemon(t, opts)
	waitBusName(t, bus)
	first := string(imagePath(t, imgs[0]))

	for i, img := range imgs {
		losetup(t, dev, img)
		testutil.Eventually(t, 20*time.Second, labels[i]+" present", presentIs(t, d, labels[i], true))
		if i == 0 {
			testutil.Eventually(t, 20*time.Second, "the first stick's object on the bus", func() bool {
				out, err := busctlErr(bus, "tree", "--list", contract.BusName)
				return err == nil && strings.Contains(out, first+"\n")
			})
		}
		losetup(t, "-d", dev)
		testutil.Eventually(t, 20*time.Second, labels[i]+" not present", presentIs(t, d, labels[i], false))
	}

	check := func(d *testutil.Daemon, when string) {
		t.Helper()
		for _, l := range labels {
			want := l + " was last seen on "
			sock := d.MustCtl("where", l)
			viaBus := d.MustCtl("--bus", "--bus-address", bus.Address, "where", l)
			if !strings.HasPrefix(sock, want) || !strings.Contains(sock, " as "+dev+" at ") {
				t.Errorf("%s: where %s = %q", when, l, sock)
			}
			if viaBus != sock {
				t.Errorf("%s: where %s differs: socket %q, D-Bus %q", when, l, sock, viaBus)
			}
		}
		ds := listJSON(t, d)
		if len(ds) != 3 {
			t.Errorf("%s: %d disks listed, want the three sticks: %+v", when, len(ds), ds)
		}
		// The first stick's object: same path, kernel name a property.
		if got := strings.TrimSpace(busctl(t, bus, "get-property", contract.BusName, first, contract.BlockInterface, "IdLabel")); got != `s "STICK_ONE"` {
			t.Errorf("%s: %s IdLabel = %s", when, first, got)
		}
		if got := strings.TrimSpace(busctl(t, bus, "get-property", contract.BusName, first, contract.BlockInterface, "KernelName")); got != `s "`+strings.TrimPrefix(dev, "/dev/")+`"` {
			t.Errorf("%s: %s KernelName = %s", when, first, got)
		}
	}
	check(d, "before restart")
	if err := d.Stop(); err != nil {
		t.Fatalf("clean stop: %v", err)
	}
	d = testutil.StartDaemon(t, opts)
	waitBusName(t, bus)
	testutil.Eventually(t, 20*time.Second, "the first stick's object after restart", func() bool {
		out, err := busctlErr(bus, "tree", "--list", contract.BusName)
		return err == nil && strings.Contains(out, first+"\n")
	})
	check(d, "after restart")

	// The first stick back on the same device: the same object, present.
	losetup(t, dev, imgs[0])
	testutil.Eventually(t, 20*time.Second, "STICK_ONE present again", presentIs(t, d, "STICK_ONE", true))
	// The bus signals in batches, so it may be one batch behind the socket.
	testutil.Eventually(t, 5*time.Second, "the first stick's object present again on the bus", func() bool {
		return strings.TrimSpace(busctl(t, bus, "get-property", contract.BusName, first, contract.BlockInterface, "Present")) == "b true"
	})
	losetup(t, "-d", dev)
}

// TestDiskMovedBetweenHosts: one filesystem image attached on one host,
// detached, attached on another: one disk, whose history shows both.
func TestDiskMovedBetweenHosts(t *testing.T) {
	testutil.RequiresTool(t, "losetup", "mkfs.ext4", "blkid")
	hosts := testutil.Hosts(t, 2)
	devA, devB := newLoopDev(t), newLoopDev(t)
	img := testutil.LoopImage(t, 32, "mkfs.ext4", "-q", "-L", "MOVER")
	h1 := startOn(t, hosts[0], []string{devA})
	h2 := startOn(t, hosts[1], []string{devB})

	losetup(t, devA, img)
	testutil.Eventually(t, peerWait, "MOVER on h1, seen by h2", func() bool {
		g := find(listJSON(t, h2), "MOVER")
		return g != nil && g.Present && g.Host == "dkd-h1"
	})
	losetup(t, "-d", devA)
	testutil.Eventually(t, peerWait, "MOVER gone from h1, seen by h2", presentIs(t, h2, "MOVER", false))
	losetup(t, devB, img)
	for _, d := range []*testutil.Daemon{h1, h2} {
		testutil.Eventually(t, peerWait, "MOVER on h2", func() bool {
			g := find(listJSON(t, d), "MOVER")
			return g != nil && g.Present && g.Host == "dkd-h2"
		})
	}
	for i, d := range []*testutil.Daemon{h1, h2} {
		n := 0
		for _, x := range listJSON(t, d) {
			if x.Label == "MOVER" {
				n++
			}
		}
		if n != 1 {
			t.Errorf("h%d lists MOVER %d times, want one disk", i+1, n)
		}
		hs := historyJSON(t, d, "MOVER")
		if len(hs) != 1 {
			t.Fatalf("h%d: history MOVER = %+v, want one disk", i+1, hs)
		}
		var where []string
		for _, s := range hs[0].Sightings {
			where = append(where, s.Host+" "+s.Device)
		}
		if want := []string{"dkd-h2 " + devB, "dkd-h1 " + devA}; strings.Join(where, ", ") != strings.Join(want, ", ") {
			t.Errorf("h%d: MOVER seen at %q, want %q (newest first)", i+1, where, want)
		}
		out := d.MustCtl("history", "MOVER")
		if !strings.Contains(out, "present") || !strings.Contains(out, "dkd-h1") || !strings.Contains(out, "dkd-h2") || !strings.Contains(out, "now") {
			t.Errorf("h%d: history MOVER =\n%s", i+1, out)
		}
	}
	losetup(t, "-d", devB)
}

// TestClonedUUIDDoesNotFlap: two images with the same UUID (one copied
// from the other, as dd would) attached at once: both listed, where says
// the UUID is not unique, and once settled `diskctl watch` sees no change
// to either for 10 s while the daemon rescans.
func TestClonedUUIDDoesNotFlap(t *testing.T) {
	testutil.RequiresRoot(t)
	testutil.RequiresTool(t, "losetup", "mkfs.ext4", "blkid", "cp")
	img1 := testutil.LoopImage(t, 32, "mkfs.ext4", "-q", "-L", "CLONED")
	img2 := filepath.Join(t.TempDir(), "copy.img")
	if out, err := exec.Command("cp", "--sparse=always", img1, img2).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v: %s", err, out)
	}
	dev1, dev2, dev3 := newLoopDev(t), newLoopDev(t), newLoopDev(t)
	marker := testutil.LoopImage(t, 32, "mkfs.ext4", "-q", "-L", "MARKER")
	d := testutil.StartDaemon(t, testutil.DaemonOptions{Args: []string{"--devices", dev1, "--devices", dev2, "--devices", dev3}})
	losetup(t, dev1, img1)
	losetup(t, dev2, img2)
	testutil.Eventually(t, 20*time.Second, "both copies listed as not unique", func() bool {
		n := 0
		for _, x := range listJSON(t, d) {
			if x.Label == "CLONED" && x.Present && x.NotUnique {
				n++
			}
		}
		return n == 2
	})
	ds := listJSON(t, d)
	if len(ds) != 2 || ds[0].ID != ds[1].ID || ds[0].Device == ds[1].Device {
		t.Fatalf("list = %+v, want two disks with one identity", ds)
	}
	out := d.MustCtl("where", "CLONED")
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 2 ||
		!strings.Contains(lines[0], "not unique") || !strings.Contains(lines[1], "not unique") {
		t.Errorf("where CLONED =\n%s\nwant two lines saying the UUID is not unique", out)
	}

	// Watch for 10 s; full rescans in between report both copies again,
	// in whatever order blkid prints them. A marker disk attached first
	// shows the watch is following before the window opens.
	_, diskctl := testutil.Binaries(t)
	watch := exec.Command(diskctl, "--socket", d.Socket, "watch", "--json")
	stdout, err := watch.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	var (
		mu     sync.Mutex
		events []string
		wg     sync.WaitGroup
	)
	following := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var ev api.WatchEvent
			if json.Unmarshal(sc.Bytes(), &ev) != nil || ev.Disk == nil {
				continue
			}
			switch ev.Disk.Label {
			case "MARKER":
				select {
				case <-following:
				default:
					close(following)
				}
			case "CLONED":
				mu.Lock()
				events = append(events, sc.Text())
				mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() { watch.Process.Kill() })
	// The watch subscribes some time after it starts: toggle the marker
	// until it reports one change.
	markerAttached := false
	timeout := time.After(20 * time.Second)
	for done := false; !done; {
		if markerAttached {
			losetup(t, "-d", dev3)
		} else {
			losetup(t, dev3, marker)
		}
		markerAttached = !markerAttached
		select {
		case <-following:
			done = true
		case <-time.After(500 * time.Millisecond):
		case <-timeout:
			t.Fatal("watch did not report the marker disk")
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		d.MustCtl("refresh")
		time.Sleep(1500 * time.Millisecond)
	}
	watch.Process.Signal(os.Interrupt)
	watch.Process.Kill()
	watch.Wait()
	wg.Wait()
	if len(events) != 0 {
		t.Errorf("watch saw %d changes to the cloned disks while nothing changed:\n%s", len(events), strings.Join(events, "\n"))
	}
	if st := status(t, d); st.Scan.FullScans < 5 {
		t.Errorf("only %d full scans ran during the watch; the test did not exercise rescans", st.Scan.FullScans)
	}

	// One copy goes: the other is still there, and unique now.
	if markerAttached {
		losetup(t, "-d", dev3)
	}
	losetup(t, "-d", dev1)
	testutil.Eventually(t, 20*time.Second, "the remaining copy unique", func() bool {
		var present []disk.Disk
		for _, x := range listJSON(t, d) {
			if x.Label == "CLONED" && x.Present {
				present = append(present, x)
			}
		}
		return len(present) == 1 && !present[0].NotUnique && present[0].Device == dev2
	})
	losetup(t, "-d", dev2)
}

// TestStateFileMigratesFromSchema1: a state file written by the diskd
// before disk identities (pkg/store/testdata/state-v1.db) loads in the real
// daemon with its history: one disk seen on two machines, clones kept apart.
func TestStateFileMigratesFromSchema1(t *testing.T) {
	testutil.RequiresRoot(t)
	stateDir := filepath.Join(t.TempDir(), "state")
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(testutil.RepoRoot(t), "pkg", "store", "testdata", "state-v1.db"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(stateDir, "state.db"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	// The node that wrote it.
	if err := os.WriteFile(filepath.Join(stateDir, "node-id"), []byte("00000000000000000000000000000001\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d := testutil.StartDaemon(t, testutil.DaemonOptions{StateDir: stateDir, Args: []string{"--devices", "/dev/nothing-here"}})
	hs := historyJSON(t, d, "OLDPHOTOS")
	if len(hs) != 1 || len(hs[0].Sightings) != 2 || hs[0].Sightings[1].Host != "nas" || hs[0].Sightings[1].Device != "/dev/sdb1" {
		t.Errorf("OLDPHOTOS after migration = %+v, want one disk seen on the laptop and on nas", hs)
	}
	if w := d.MustCtl("where", "CLONE"); strings.Count(w, "CLONE was last seen") != 2 {
		t.Errorf("where CLONE after migration =\n%s\nwant both copies", w)
	}
	if n := len(listJSON(t, d)); n != 6 {
		t.Errorf("%d disks after migration, want the 6 rows of the 7 old records", n)
	}
}

// TestHeartbeatsDoNotWriteTheStateFile: two hosts heartbeating every
// second; once they know each other, heartbeats change nothing, so the
// state file sees no transaction (status: state_writes) for 5 s.
func TestHeartbeatsDoNotWriteTheStateFile(t *testing.T) {
	hosts := testutil.Hosts(t, 2)
	h1 := startOn(t, hosts[0], nil)
	h2 := startOn(t, hosts[1], nil)
	testutil.Eventually(t, peerWait, "h1 online on h2", func() bool { return onlineOn(t, h2, "dkd-h1") })
	testutil.Eventually(t, peerWait, "h2 online on h1", func() bool { return onlineOn(t, h1, "dkd-h2") })
	// Let the writes of meeting (nodes, addresses) land: the state file
	// is written a second after a change.
	writes := func() uint64 { return status(t, h2).StoreCounters["state_writes"] }
	var before uint64
	testutil.Eventually(t, 20*time.Second, "h2's state writes to settle", func() bool {
		w := writes()
		time.Sleep(1500 * time.Millisecond)
		before = writes()
		return w == before && before > 0
	})
	heard := func() time.Time { n, _ := peerNamed(t, h2, "dkd-h1"); return n.LastSeen }
	t0 := heard()
	time.Sleep(5 * time.Second)
	if t1 := heard(); !t1.After(t0) {
		t.Fatalf("h1 not heard during the window (last seen %v, then %v): no heartbeats to test", t0, t1)
	}
	if after := writes(); after != before {
		t.Errorf("5 s of heartbeats cost %d state file transactions on h2, want 0", after-before)
	}
}
