package test

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	contract "github.com/diskd/diskd/dbus"
	"github.com/diskd/diskd/pkg/disk"
	"github.com/diskd/diskd/pkg/testutil"
)

// TestSystemdTwoHosts installs the built .deb in two containers that boot
// real systemd as PID 1 on two hosts of a namespace network, and checks
// the life of the installed daemon: presets on install, D-Bus activation,
// enable --now, readiness and STATUS=, socket activation after a stop,
// restart after SIGKILL, the sandbox in force, structured journal fields,
// running from boot after a reboot, and a disk of host 1 listed on host 2
// through the peer network, over the socket and on the bus.
func TestSystemdTwoHosts(t *testing.T) {
	testutil.RequiresRoot(t)
	testutil.RequiresTool(t, "systemd-nspawn", "nsenter", "ip", "losetup", "mkfs.ext4", "make", "dpkg-deb")

	deb := buildDeb(t)
	root := rootfs(t)
	suffix := make([]byte, 2)
	rand.Read(suffix)
	prefix := "sdt" + hex.EncodeToString(suffix) // short: names end up in interface-sized fields
	nw := newNetwork(t, prefix, 2)
	const label = "DISKD_SDT_H1"
	dev := attachLoop(t, t.TempDir(), label, 32<<20)
	kname := strings.TrimPrefix(dev, "/dev/")
	// A second disk for host 1 to hold /var/lib (big enough for a copy).
	const varLabel = "DISKD_SDT_VAR"
	varDev := attachLoop(t, t.TempDir(), varLabel, 160<<20)

	// The loop device is bound into host 1 only.
	boot := func(i int, extra ...string) *container {
		args := append([]string{"--network-namespace-path=/run/netns/" + nw.ns(i),
			"--bind-ro=" + deb + ":/opt/diskd.deb"}, extra...)
		return bootContainer(t, nw.ns(i), root, args...)
	}
	h1 := boot(1, "--bind="+dev, "--bind="+varDev)
	h2 := boot(2)
	t.Cleanup(func() {
		if t.Failed() {
			for _, c := range []*container{h1, h2} {
				out, _ := c.exec("journalctl", "-u", "diskd", "-u", "diskd.socket", "--no-pager", "-n", "60")
				t.Logf("journal of %s:\n%s", c.name, out)
			}
		}
	})

	// Host 2's presets say no: the package must neither enable nor start.
	h2.must(t, "sh", "-ec", "mkdir -p /etc/systemd/system-preset && "+
		"printf 'disable diskd.service\\ndisable diskd.socket\\n' > /etc/systemd/system-preset/00-diskd-test.preset")
	for _, c := range []*container{h1, h2} {
		c.must(t, "dpkg", "-i", "/opt/diskd.deb")
	}
	t.Run("install follows presets", func(t *testing.T) {
		// Debian has no catch-all preset: enabled and started at once.
		expectUnits(t, h1, "enabled", "active")
		expectUnits(t, h2, "disabled", "inactive")
	})

	t.Run("D-Bus activation", func(t *testing.T) {
		// Nothing runs on host 2 yet: calling the name starts the service.
		out, err := h2.exec("busctl", "--timeout=20", "get-property", "org.diskd.Diskd1",
			"/org/diskd/Diskd1/Manager", "org.diskd.Diskd1.Manager", "NodeName")
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("s %q", h2.name); strings.TrimSpace(out) != want {
			t.Errorf("NodeName = %q, want %q", strings.TrimSpace(out), want)
		}
		// The name answers before READY=1 (the first scan): "activating"
		// for a moment, then active.
		if !waitFor(20*time.Second, func() bool { return unitProp(t, h2, "diskd.service", "ActiveState") == "active" }) {
			t.Errorf("after the bus call diskd.service is %s", unitProp(t, h2, "diskd.service", "ActiveState"))
		}
	})

	// Host 1 logs at debug level, through the packaged config file.
	h1.must(t, "sed", "-i", `s/^# log_level = "info"/log_level = "debug"/`, "/etc/diskd/diskd.conf")
	h1.must(t, "systemctl", "restart", "diskd.service")
	for _, c := range []*container{h1, h2} {
		c.must(t, "systemctl", "enable", "--now", "diskd")
	}
	t.Run("enable --now", func(t *testing.T) {
		expectUnits(t, h1, "enabled", "active")
		expectUnits(t, h2, "enabled", "active")
		// The installed units, at their installed paths, under the real
		// systemd: verify prints nothing.
		if out, err := h1.exec("systemd-analyze", "verify", "--man=no",
			"/usr/lib/systemd/system/diskd.service", "/usr/lib/systemd/system/diskd.socket"); err != nil || out != "" {
			t.Errorf("systemd-analyze verify of the installed units (%v):\n%s", err, out)
		}
		for _, c := range []*container{h1, h2} {
			status, _ := c.exec("systemctl", "status", "diskd.service", "--no-pager")
			if !strings.Contains(status, "Active: active (running)") || !strings.Contains(status, "Status: \"") {
				t.Errorf("%s: systemctl status shows no running daemon with a STATUS line:\n%s", c.name, status)
			}
		}
	})

	t.Run("the package's admin group", func(t *testing.T) {
		// postinst made the group from the sysusers.d file; nobody is
		// refused with the one-line reason, a member added the usual way
		// may act, through the systemd-passed socket and the sandbox.
		h1.must(t, "getent", "group", "diskd")
		out, err := h1.exec("runuser", "-u", "nobody", "--", "diskctl", "refresh")
		if want := `refresh is for root and the members of group "diskd" (you are uid 65534)`; err == nil || !strings.Contains(out, want) {
			t.Errorf("nobody's diskctl refresh: %v %s; want %q", err, out, want)
		}
		h1.must(t, "useradd", "--system", "--no-create-home", "--groups", "diskd", "sdtadmin")
		if out, err := h1.exec("runuser", "-u", "sdtadmin", "--", "diskctl", "refresh"); err != nil || !strings.Contains(out, "refreshed") {
			t.Errorf("a member of diskd: diskctl refresh: %v %s", err, out)
		}
	})

	t.Run("sandbox in force", func(t *testing.T) {
		pid := unitProp(t, h1, "diskd.service", "MainPID")
		st := h1.must(t, "cat", "/proc/"+pid+"/status")
		for _, want := range []string{"CapEff:\t0000000000000000", "CapBnd:\t0000000000000000", "NoNewPrivs:\t1", "Seccomp:\t2"} {
			if !strings.Contains(st, want+"\n") {
				t.Errorf("diskd (pid %s) status lacks %q", pid, want)
			}
		}
		// And it still reads the disk it was given.
		d := waitDisk(t, h1, label, h1.name)
		if d.Device != dev {
			t.Errorf("host 1 lists %s as %s, want %s", label, d.Device, dev)
		}
	})

	t.Run("mount seen through the sandbox", func(t *testing.T) {
		// The service has its own mount namespace (ProtectSystem=,
		// PrivateMounts=, ...): mounts made outside must still reach it.
		h1.must(t, "mkdir", "-p", "/mnt/sdt")
		h1.must(t, "mount", "-o", "ro", dev, "/mnt/sdt")
		defer h1.exec("umount", "/mnt/sdt")
		var last []string
		if !waitFor(10*time.Second, func() bool {
			last = waitDisk(t, h1, label, h1.name).Mounts
			return len(last) == 1 && last[0] == "/mnt/sdt"
		}) {
			t.Errorf("host 1 lists %s mounted at %q, want exactly [/mnt/sdt]", label, last)
		}
	})

	t.Run("mount through a transient unit", func(t *testing.T) {
		// The packaged daemon, sandbox unchanged, asks systemd to mount.
		h1.must(t, "sh", "-ec", `echo 'mount_allow = ["`+label+`"]' >> /etc/diskd/diskd.conf`)
		h1.must(t, "systemctl", "restart", "diskd.service")
		waitDisk(t, h1, label, h1.name)
		where := "/media/diskd/" + label
		unit := "media-diskd-" + label + ".mount"
		if out := h1.must(t, "diskctl", "mount", label); !strings.Contains(out, "mounted read-only on "+h1.name+" at "+where) {
			t.Errorf("diskctl mount: %q", out)
		}
		if st := unitProp(t, h1, unit, "ActiveState"); st != "active" {
			t.Errorf("%s is %s, want a transient unit, active", unit, st)
		}
		if tr := unitProp(t, h1, unit, "Transient"); tr != "yes" {
			t.Errorf("%s Transient=%s", unit, tr)
		}
		opts := h1.must(t, "findmnt", "-n", "-o", "OPTIONS", where)
		for _, o := range []string{"ro", "nosuid", "nodev", "noexec"} {
			if !strings.Contains(","+strings.TrimSpace(opts)+",", ","+o+",") {
				t.Errorf("mount options %q lack %s", opts, o)
			}
		}
		if !waitFor(10*time.Second, func() bool {
			m := waitDisk(t, h1, label, h1.name).Mounts
			return len(m) == 1 && m[0] == where
		}) {
			t.Errorf("host 1 does not list %s mounted at %s", label, where)
		}
		// The sandbox is as tight as before the mount.
		pid := unitProp(t, h1, "diskd.service", "MainPID")
		if st := h1.must(t, "cat", "/proc/"+pid+"/status"); !strings.Contains(st, "CapEff:\t0000000000000000\n") {
			t.Errorf("diskd gained capabilities:\n%s", st)
		}
		h1.must(t, "diskctl", "unmount", label)
		if out, _ := h1.exec("findmnt", "-n", where); strings.TrimSpace(out) != "" {
			t.Errorf("still mounted after unmount: %s", out)
		}
		if st := unitProp(t, h1, unit, "ActiveState"); st == "active" {
			t.Errorf("%s still active after unmount", unit)
		}
		// The same over the system bus (Filesystem.Mount, Unmount).
		if out := h1.must(t, "diskctl", "--bus", "mount", label); !strings.Contains(out, "at "+where) {
			t.Errorf("diskctl --bus mount: %q", out)
		}
		h1.must(t, "diskctl", "--bus", "unmount", label)
		if out, _ := h1.exec("findmnt", "-n", where); strings.TrimSpace(out) != "" {
			t.Errorf("still mounted after unmount over the bus: %s", out)
		}
	})

	t.Run("peer disk on host 2", func(t *testing.T) {
		id := localID(t, h1)
		if id2 := localID(t, h2); id2 == id {
			t.Errorf("both hosts have node ID %s (their machine-id is the same: the node ID must not be)", id)
		}
		d := waitDisk(t, h2, label, h1.name)
		if d.Node != id {
			t.Errorf("host 2 lists %s from node %s, want host 1's %s", label, d.Node, id)
		}
		// The object is named after the disk's identity (its UUID), and
		// says which kernel name it has now.
		path := string(contract.BlockPath(disk.Key(d.ID)))
		tree, err := h2.exec("busctl", "--timeout=20", "tree", "--list", "org.diskd.Diskd1")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(tree, path+"\n") {
			t.Errorf("busctl tree on host 2 lacks %s:\n%s", path, tree)
		}
		if kn, err := h2.exec("busctl", "--timeout=20", "get-property", "org.diskd.Diskd1", path,
			"org.diskd.Diskd1.Block", "KernelName"); err != nil || strings.TrimSpace(kn) != fmt.Sprintf("s %q", kname) {
			t.Errorf("KernelName of %s on host 2: %q, %v; want %s", path, kn, err, kname)
		}
	})

	t.Run("socket activation after stop", func(t *testing.T) {
		var took []time.Duration
		for i := 0; i < 5; i++ {
			// Five starts in a row would hit the default start limit.
			h1.must(t, "systemctl", "reset-failed", "diskd.service")
			h1.must(t, "systemctl", "stop", "diskd.service")
			if st := unitProp(t, h1, "diskd.socket", "ActiveState"); st != "active" {
				t.Fatalf("diskd.socket is %s after stopping the service", st)
			}
			if st := unitProp(t, h1, "diskd.service", "ActiveState"); st != "inactive" {
				t.Fatalf("diskd.service is %s after stop", st)
			}
			// Timed inside the container, so nsenter is not counted.
			out := h1.must(t, "bash", "-c", "TIMEFORMAT=%3R; { time diskctl list --json >/tmp/list.json; } 2>&1")
			secs, err := strconv.ParseFloat(strings.TrimSpace(out), 64)
			if err != nil {
				t.Fatalf("timing diskctl list: %q", out)
			}
			took = append(took, time.Duration(secs*float64(time.Second)))
			if list := h1.must(t, "cat", "/tmp/list.json"); !strings.Contains(list, label) {
				t.Errorf("socket-activated list lacks %s:\n%s", label, list)
			}
			if st := unitProp(t, h1, "diskd.service", "ActiveState"); st != "active" {
				t.Errorf("diskd.service is %s after a client connected", st)
			}
		}
		// A figure for the note, not an assertion.
		t.Logf("first `diskctl list --json` with only the socket listening (start, first scan, answer): median %v of %v",
			median(took), took)
	})

	t.Run("start to READY=1", func(t *testing.T) {
		var took []time.Duration
		for i := 0; i < 5; i++ {
			h1.must(t, "systemctl", "reset-failed", "diskd.service")
			h1.must(t, "systemctl", "restart", "diskd.service")
			start, _ := strconv.ParseInt(unitProp(t, h1, "diskd.service", "ExecMainStartTimestampMonotonic"), 10, 64)
			ready, _ := strconv.ParseInt(unitProp(t, h1, "diskd.service", "ActiveEnterTimestampMonotonic"), 10, 64)
			if start == 0 || ready < start {
				t.Fatalf("timestamps: exec %d, active %d", start, ready)
			}
			took = append(took, time.Duration(ready-start)*time.Microsecond)
		}
		t.Logf("exec → READY=1 (Type=notify, includes the first scan): median %v of %v", median(took), took)
	})

	t.Run("restart after SIGKILL", func(t *testing.T) {
		h1.must(t, "systemctl", "reset-failed", "diskd.service")
		h1.must(t, "systemctl", "start", "diskd.service")
		before := unitProp(t, h1, "diskd.service", "MainPID")
		if pid, err := strconv.Atoi(before); err != nil || pid <= 1 {
			t.Fatalf("diskd.service has no main process to kill (MainPID=%q)", before)
		}
		restarts := unitProp(t, h1, "diskd.service", "NRestarts")
		h1.must(t, "sh", "-c", "kill -9 "+before)
		if !waitFor(20*time.Second, func() bool {
			pid := unitProp(t, h1, "diskd.service", "MainPID")
			return pid != "0" && pid != before && unitProp(t, h1, "diskd.service", "ActiveState") == "active"
		}) {
			t.Fatalf("diskd not running again after SIGKILL of pid %s", before)
		}
		if after := unitProp(t, h1, "diskd.service", "NRestarts"); after == restarts {
			t.Errorf("NRestarts still %s", after)
		}
	})

	t.Run("structured journal", func(t *testing.T) {
		out := h1.must(t, "journalctl", "-u", "diskd.service", "-o", "json", "--no-pager")
		var native, withComponent, withNode, debug int
		sc := bufio.NewScanner(strings.NewReader(out))
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var e map[string]any
			if json.Unmarshal(sc.Bytes(), &e) != nil || e["SYSLOG_IDENTIFIER"] != "diskd" {
				continue
			}
			if e["_TRANSPORT"] == "journal" {
				native++
			}
			if s, _ := e["COMPONENT"].(string); s != "" {
				withComponent++
			}
			if e["NODE"] == h1.name {
				withNode++
			}
			if e["PRIORITY"] == "7" {
				debug++
			}
		}
		if native == 0 || withComponent == 0 || withNode == 0 {
			t.Errorf("journal of diskd: %d native entries, %d with COMPONENT, %d with NODE=%s; want some of each",
				native, withComponent, withNode, h1.name)
		}
		if debug == 0 {
			t.Errorf("no debug entries although diskd.conf sets log_level = \"debug\"")
		}
	})

	t.Run("running after reboot", func(t *testing.T) {
		h1.reboot(t)
		// No client has connected since the boot: multi-user.target started it.
		if st := unitProp(t, h1, "diskd.service", "ActiveState"); st != "active" {
			t.Fatalf("after reboot diskd.service is %s", st)
		}
		start, _ := strconv.ParseInt(unitProp(t, h1, "diskd.service", "ExecMainStartTimestampMonotonic"), 10, 64)
		ready, _ := strconv.ParseInt(unitProp(t, h1, "diskd.service", "ActiveEnterTimestampMonotonic"), 10, 64)
		if start > 0 && ready >= start {
			t.Logf("start → READY=1 at boot: %v (includes the first scan)", time.Duration(ready-start)*time.Microsecond)
		}
		// Its disk reaches host 2 again from the new instance.
		waitDisk(t, h2, label, h1.name)
	})

	t.Run("sandbox mounts are not mount points", func(t *testing.T) {
		// With /var/lib on its own disk, StateDirectory= bind-mounts
		// /var/lib/diskd onto itself in the service's namespace (and
		// PrivateTmp=, ProtectHome= add more). Those are the sandbox, not
		// places where the disk is mounted: diskd must report /var/lib only.
		h1.must(t, "sh", "-ec", "mkdir -p /mnt/v && mount "+varDev+" /mnt/v && cp -a /var/lib/. /mnt/v/ && "+
			"umount /mnt/v && mount "+varDev+" /var/lib")
		h1.must(t, "systemctl", "restart", "diskd.service")
		var last []string
		if !waitFor(10*time.Second, func() bool {
			last = waitDisk(t, h1, varLabel, h1.name).Mounts
			return len(last) == 1 && last[0] == "/var/lib"
		}) {
			t.Errorf("host 1 lists %s mounted at %q, want exactly [/var/lib]", varLabel, last)
		}
	})

	t.Run("remove, reinstall, purge", func(t *testing.T) {
		h2.must(t, "dpkg", "--remove", "diskd")
		expectGone(t, h2, "/usr/bin/diskd", "/usr/lib/systemd/system/diskd.service")
		for _, u := range []string{"diskd.service", "diskd.socket"} {
			if st := unitProp(t, h2, u, "ActiveState"); st != "inactive" {
				t.Errorf("after dpkg --remove %s is %s", u, st)
			}
		}
		// Debian keeps the configuration and the administrator's choice.
		h2.must(t, "test", "-f", "/etc/diskd/diskd.conf")
		h2.must(t, "test", "-L", "/etc/systemd/system/multi-user.target.wants/diskd.service")

		h2.must(t, "dpkg", "-i", "/opt/diskd.deb")
		expectUnits(t, h2, "enabled", "active")

		h2.must(t, "dpkg", "--purge", "diskd")
		expectGone(t, h2, "/usr/bin/diskd", "/etc/diskd", "/var/lib/diskd",
			"/etc/systemd/system/multi-user.target.wants/diskd.service",
			"/etc/systemd/system/sockets.target.wants/diskd.socket",
			"/usr/share/dbus-1/system.d/org.diskd.Diskd1.conf")
		if out, _ := h2.exec("systemctl", "list-unit-files", "--no-legend", "diskd.service", "diskd.socket"); strings.TrimSpace(out) != "" {
			t.Errorf("systemd still knows unit files after purge:\n%s", out)
		}
	})

	// Figures for the note (logged, never asserted).
	if out, err := h1.exec("systemd-analyze", "security", "--no-pager", "diskd.service"); err == nil {
		if i := strings.Index(out, "Overall exposure level"); i >= 0 {
			t.Logf("inside the container: %s", strings.TrimSpace(out[i:]))
		}
	}
}

func median(ds []time.Duration) time.Duration {
	return percentile(ds, 50).Round(time.Millisecond)
}

// unitProp returns one property of a unit in the container.
func unitProp(t *testing.T, c *container, unit, prop string) string {
	t.Helper()
	out, err := c.exec("systemctl", "show", "--value", "-p", prop, unit)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

// expectGone checks that none of the paths exists in the container.
func expectGone(t *testing.T, c *container, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if _, err := c.exec("test", "-e", p); err == nil {
			t.Errorf("%s: %s still exists", c.name, p)
		}
	}
}

// expectUnits checks is-enabled and is-active of both diskd units.
func expectUnits(t *testing.T, c *container, enabled, active string) {
	t.Helper()
	for _, u := range []string{"diskd.service", "diskd.socket"} {
		if got := unitProp(t, c, u, "UnitFileState"); got != enabled {
			t.Errorf("%s: %s is %s, want %s", c.name, u, got, enabled)
		}
		if got := unitProp(t, c, u, "ActiveState"); got != active {
			t.Errorf("%s: %s is %s, want %s", c.name, u, got, active)
		}
	}
}

// listed is the part of `diskctl list --json` the test reads.
type listed struct {
	ID      string   `json:"id"`
	Host    string   `json:"host"`
	Node    string   `json:"node_id"`
	Device  string   `json:"device"`
	Label   string   `json:"label"`
	Mounts  []string `json:"mountpoints"`
	Present bool     `json:"present"`
}

// waitDisk waits until c's `diskctl list --json` shows a present disk with
// label on host, and returns it.
func waitDisk(t *testing.T, c *container, label, host string) listed {
	t.Helper()
	var found listed
	var last string
	ok := waitFor(20*time.Second, func() bool {
		out, err := c.exec("diskctl", "list", "--json")
		last = out
		if err != nil {
			return false
		}
		var ds []listed
		if json.Unmarshal([]byte(out), &ds) != nil {
			return false
		}
		for _, d := range ds {
			if d.Label == label && d.Host == host && d.Present {
				found = d
				return true
			}
		}
		return false
	})
	if !ok {
		t.Fatalf("%s does not list a present %s on %s; last `diskctl list --json`:\n%s", c.name, label, host, last)
	}
	return found
}

// localID returns the container daemon's node ID.
func localID(t *testing.T, c *container) string {
	t.Helper()
	out, err := c.exec("diskctl", "localhost", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var l struct {
		NodeID string `json:"node_id"`
	}
	if err := json.Unmarshal([]byte(out), &l); err != nil || l.NodeID == "" {
		t.Fatalf("diskctl localhost --json: %v\n%s", err, out)
	}
	return l.NodeID
}

// waitFor polls cond until it holds (true) or limit passes (false). The
// limit bounds waiting for the system; it is not a performance assertion.
func waitFor(limit time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
	return true
}
