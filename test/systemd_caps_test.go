package test

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/diskd/diskd/pkg/testutil"
)

// noCaps is the prefix that runs a command as diskd.service runs: uid 0
// with an empty capability bounding set (CapabilityBoundingSet=) and
// NoNewPrivileges=yes.
var noCaps = []string{"setpriv", "--bounding-set=-all", "--inh-caps=-all", "--ambient-caps=-all", "--no-new-privs", "--"}

// TestCapsBlkidNeedsNone shows why diskd.service can have an empty
// CapabilityBoundingSet: blkid, run as root with no capabilities at all,
// still reads a filesystem label from a root-owned block device.
func TestCapsBlkidNeedsNone(t *testing.T) {
	testutil.RequiresRoot(t)
	testutil.RequiresTool(t, "setpriv", "blkid", "losetup", "mkfs.ext4")
	dev := attachLoop(t, t.TempDir(), "DISKD_CAPS", 16<<20)

	status := run(t, append(noCaps, "cat", "/proc/self/status")...)
	for _, f := range []string{"CapEff", "CapPrm", "CapBnd"} {
		if !strings.Contains(status, f+":\t0000000000000000\n") {
			t.Fatalf("setpriv did not drop %s:\n%s", f, status)
		}
	}

	out := run(t, append(noCaps, "blkid", "-p", "-o", "export", dev)...)
	if !strings.Contains(out, "\nLABEL=DISKD_CAPS\n") {
		t.Errorf("blkid without capabilities did not read the label of %s:\n%s", dev, out)
	}
	// Control: the device really is protected, so the probe above proves
	// something. An unprivileged uid cannot read it.
	nobody := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--",
		"blkid", "-p", "-o", "export", dev)
	if out, err := nobody.CombinedOutput(); err == nil || strings.Contains(string(out), "DISKD_CAPS") {
		t.Errorf("uid 65534 read %s (err %v): the check above proves nothing:\n%s", dev, err, out)
	}
}

// TestCapsMulticastNeedsNone joins, sends and receives IPv4 and IPv6
// multicast with no capabilities, in a network namespace that exists only
// for the probe (never in the machine's own namespace).
func TestCapsMulticastNeedsNone(t *testing.T) {
	testutil.RequiresRoot(t)
	testutil.RequiresTool(t, "setpriv", "unshare", "ip", "go")
	probe := filepath.Join(t.TempDir(), "mcastprobe")
	run(t, "go", "build", "-o", probe, "./testdata/mcastprobe")

	// A veth pair gives a multicast-capable link; the namespace vanishes
	// with the unshare'd shell, taking the links with it.
	const setup = `set -e
sysctl -qw net.ipv6.conf.default.accept_dad=0
ip link add v0 type veth peer name v1
ip link set v1 up
ip link set v0 up
ip addr add 10.0.0.1/24 dev v0
ip route add 224.0.0.0/4 dev v0
for i in $(seq 50); do ip -6 addr show dev v0 scope link | grep -q fe80 && break; sleep 0.05; done
`
	nc := strings.Join(noCaps, " ")
	out := run(t, "unshare", "--net", "--", "sh", "-c", setup+nc+" "+probe+" v0")
	if !strings.Contains(out, "udp4 239.255.42.99 ok") || !strings.Contains(out, "udp6 ff02::4299 ok") {
		t.Errorf("multicast probe without capabilities:\n%s", out)
	}
	// Control: with the link down the probe must fail, or it proves nothing.
	down := exec.Command("unshare", "--net", "--", "sh", "-c", setup+"ip link set v0 down\n"+nc+" "+probe+" v0")
	if out, err := down.CombinedOutput(); err == nil {
		t.Errorf("probe succeeded with its link down:\n%s", out)
	}
}
