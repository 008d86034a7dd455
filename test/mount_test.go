package test

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/diskd/diskd/pkg/api"
	"github.com/diskd/diskd/pkg/testutil"
	"github.com/diskd/diskd/pkg/wire"
)

// Remote mount (issue 11): host 1 has the disks and the rules; host 2 asks
// through the real diskctl over a keyed peer network; host 3 is a stranger
// on the link with a tap. Mounts happen in host 1's own mount namespace
// (diskd runs there), with mount(2): no systemd is PID 1 here.

const escapeUUID = "0e5c0e5c-0000-4000-8000-00000000e5c0"

func TestRemoteMount(t *testing.T) {
	testutil.RequiresTool(t, "losetup", "mkfs.ext4", "blkid", "runuser")
	hosts := testutil.Hosts(t, 3)
	keys := writeKeyFile(t, "1 "+strings.Repeat("ab", 16)+"\n")
	devs := []string{newLoopDev(t), newLoopDev(t), newLoopDev(t)}
	imgs := []string{
		testutil.LoopImage(t, 32, "mkfs.ext4", "-q", "-L", "MNT_BACKUP"),
		testutil.LoopImage(t, 32, "mkfs.ext4", "-q", "-L", "../../etc", "-U", escapeUUID),
		testutil.LoopImage(t, 32, "mkfs.ext4", "-q", "-L", "PRIVATE"),
	}
	mdir := filepath.Join(t.TempDir(), "media")
	h1 := startOn(t, hosts[0], devs, "--key-file", keys, "--mount-dir", mdir,
		"--mount-allow", "MNT_*", "--mount-allow", escapeUUID)
	// The socket where nobody can reach it, to show the refusal is diskd's.
	sockDir, err := os.MkdirTemp("", "diskd-mount-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	os.Chmod(sockDir, 0o755)
	h2 := testutil.StartDaemon(t, testutil.DaemonOptions{Prefix: hosts[1].Prefix(), Socket: filepath.Join(sockDir, "diskd.sock"),
		Args: []string{"--heartbeat-interval", peerHeartbeat, "--devices", "/dev/nothing", "--key-file", keys}})
	tap := newWireTap(t, hosts[2])
	for i, d := range devs {
		losetup(t, d, imgs[i])
	}
	// A failed test must not leave mounts holding the loop devices.
	t.Cleanup(func() {
		for _, m := range []string{"MNT_BACKUP", "_._.._etc"} {
			hosts[0].Command("umount", filepath.Join(mdir, m)).Run()
		}
	})
	for _, l := range []string{"MNT_BACKUP", "../../etc", "PRIVATE"} {
		testutil.Eventually(t, peerWait, l+" listed on host 2", func() bool {
			g := find(listJSON(t, h2), l)
			return g != nil && g.Present
		})
	}

	refusals := []struct {
		name string
		args []string
		want string
	}{
		{"not allowed by the owner", []string{"mount", "PRIVATE"}, "mount PRIVATE on dkd-h1: not allowed on this host"},
		{"rw without a rw rule", []string{"mount", "--rw", "MNT_BACKUP"}, "read-write not allowed on this host"},
		{"unknown disk", []string{"mount", "NOSUCH"}, "NOSUCH: not known on this network"},
		{"not mounted", []string{"unmount", "MNT_BACKUP"}, "not mounted"},
	}
	for _, r := range refusals {
		_, errOut, code := h2.Ctl(r.args...)
		if code != 1 || !strings.Contains(errOut, r.want) || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
			t.Errorf("%s: exit %d, %q; want one line with %q", r.name, code, errOut, r.want)
		}
	}
	out, err := exec.Command("runuser", "-u", "nobody", "--", ctlPath(t), "--socket", h2.Socket, "mount", "MNT_BACKUP").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "mount is for root") {
		t.Errorf("mount as nobody: %v, %q", err, out)
	}

	// The real thing: from host 2, mounted on host 1, read-only.
	want := filepath.Join(mdir, "MNT_BACKUP")
	if out := h2.MustCtl("mount", "MNT_BACKUP"); !strings.Contains(out, "MNT_BACKUP mounted read-only on dkd-h1 at "+want) {
		t.Errorf("mount: %q", out)
	}
	opts := mountOptionsOn(t, hosts[0], want)
	for _, o := range []string{"ro", "nosuid", "nodev", "noexec"} {
		if !slices.Contains(strings.Split(opts, ","), o) {
			t.Errorf("mount options on host 1: %q lack %s", opts, o)
		}
	}
	if err := hosts[0].Command("touch", filepath.Join(want, "x")).Run(); err == nil {
		t.Error("wrote to the read-only mount on host 1")
	}
	testutil.Eventually(t, peerWait, "the mount point listed on host 2", func() bool {
		g := find(listJSON(t, h2), "MNT_BACKUP")
		return g != nil && slices.Contains(g.Mounts, want)
	})
	if _, errOut, code := h2.Ctl("mount", "MNT_BACKUP"); code != 1 || !strings.Contains(errOut, "already mounted at "+want) {
		t.Errorf("second mount: exit %d, %q", code, errOut)
	}
	var r api.MountResult
	if err := json.Unmarshal([]byte(h2.MustCtl("unmount", "--json", "MNT_BACKUP")), &r); err != nil || r.Path != want || r.Host != "dkd-h1" {
		t.Errorf("unmount --json: %+v, %v", r, err)
	}
	if mountOptionsOn(t, hosts[0], want) != "" {
		t.Error("still mounted on host 1 after unmount")
	}
	testutil.Eventually(t, peerWait, "the mount point gone on host 2", func() bool {
		g := find(listJSON(t, h2), "MNT_BACKUP")
		return g != nil && len(g.Mounts) == 0
	})

	// Replaying the captured request datagrams mounts nothing again.
	var reqs [][]byte
	k, err := wire.LoadKeyFile(keys)
	if err != nil {
		t.Fatal(err)
	}
	dec := wire.NewDecoder(k)
	for _, b := range tap.Datagrams() {
		if p, err := dec.Decode(b); err == nil && p.Type == wire.TypeRequest {
			reqs = append(reqs, b)
		}
	}
	if len(reqs) == 0 {
		t.Fatal("the tap saw no request")
	}
	tap.Send(netip.Addr{}, reqs...)
	before := netCounter(t, h1, "drop_duplicate")
	testutil.Eventually(t, peerWait, "replays dropped on host 1", func() bool {
		return netCounter(t, h1, "drop_duplicate") > before
	})
	if mountOptionsOn(t, hosts[0], want) != "" {
		t.Error("a replayed request mounted the disk again")
	}

	// A label made to escape the mount directory stays inside it.
	out2 := h2.MustCtl("mount", escapeUUID)
	inside := filepath.Join(mdir, "_._.._etc")
	if !strings.Contains(out2, "at "+inside) || mountOptionsOn(t, hosts[0], inside) == "" {
		t.Errorf("mount of ../../etc: %q", out2)
	}
	h2.MustCtl("unmount", escapeUUID)

	// The owner gone: its disks are history, and mount says so.
	if err := sigkill(h1); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, peerWait, "host 1 offline on host 2", func() bool { return !onlineOn(t, h2, "dkd-h1") })
	if _, errOut, code := h2.Ctl("mount", "MNT_BACKUP"); code != 1 || !strings.Contains(errOut, "MNT_BACKUP: disk not present (last seen on dkd-h1 at ") {
		t.Errorf("mount with the owner gone: exit %d, %q", code, errOut)
	}
}

// TestRemoteMountNeedsKey: on an unauthenticated network the asker refuses
// and says why; nothing reaches the owner.
func TestRemoteMountNeedsKey(t *testing.T) {
	testutil.RequiresTool(t, "losetup", "mkfs.ext4", "blkid")
	hosts := testutil.Hosts(t, 2)
	dev := newLoopDev(t)
	img := testutil.LoopImage(t, 32, "mkfs.ext4", "-q", "-L", "MNT_OPEN")
	h1 := startOn(t, hosts[0], []string{dev}, "--mount-dir", filepath.Join(t.TempDir(), "m"), "--mount-allow", "*")
	h2 := startOn(t, hosts[1], nil)
	losetup(t, dev, img)
	testutil.Eventually(t, peerWait, "listed on host 2", func() bool {
		g := find(listJSON(t, h2), "MNT_OPEN")
		return g != nil && g.Present
	})
	_, errOut, code := h2.Ctl("mount", "MNT_OPEN")
	if code != 1 || !strings.Contains(errOut, "the network is unauthenticated; remote mounts need --key-file on both machines") {
		t.Errorf("mount on an unkeyed network: exit %d, %q", code, errOut)
	}
	if n := netCounter(t, h1, "requests_received"); n != 0 {
		t.Errorf("owner received %d requests", n)
	}
}

func ctlPath(t *testing.T) string {
	_, c := testutil.Binaries(t)
	return c
}

// mountOptionsOn returns the options of the mount at p in host h's mount
// namespace, "" when nothing is mounted there.
func mountOptionsOn(t *testing.T, h *testutil.Host, p string) string {
	t.Helper()
	out, err := h.Command("cat", "/proc/self/mountinfo").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range bytes.Split(out, []byte("\n")) {
		f := strings.Fields(string(l))
		if len(f) > 5 && f[4] == p {
			return f[5]
		}
	}
	return ""
}

func netCounter(t *testing.T, d *testutil.Daemon, name string) uint64 {
	t.Helper()
	var s api.Status
	if err := json.Unmarshal([]byte(d.MustCtl("status", "--json")), &s); err != nil || s.Network == nil {
		t.Fatalf("status: %v", err)
	}
	return s.Network.Counters[name]
}
