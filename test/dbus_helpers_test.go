package test

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	contract "github.com/diskd/diskd/dbus"
	"github.com/diskd/diskd/pkg/disk"
	"github.com/diskd/diskd/pkg/testutil"
)

// A private system-like bus with diskd's policy installed.
func startPolicyBus(t testing.TB) *testutil.DBus {
	t.Helper()
	testutil.RequiresTool(t, "dbus-daemon", "dbus-send", "busctl", "gdbus", "dbus-monitor")
	bus := testutil.StartDBus(t)
	bus.InstallPolicy(filepath.Join(testutil.RepoRoot(t), "dbus", "org.diskd.Diskd1.conf"))
	return bus
}

// waitBusName waits until something owns org.diskd.Diskd1 on the bus.
func waitBusName(t testing.TB, bus *testutil.DBus) {
	t.Helper()
	c, err := dbus.Connect(bus.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	testutil.Eventually(t, 20*time.Second, "diskd to own "+contract.BusName, func() bool {
		var has bool
		err := c.BusObject().Call("org.freedesktop.DBus.NameHasOwner", 0, contract.BusName).Store(&has)
		return err == nil && has
	})
}

// busctl runs busctl on the bus and returns its stdout.
func busctl(t testing.TB, bus *testutil.DBus, args ...string) string {
	t.Helper()
	out, err := busctlErr(bus, args...)
	if err != nil {
		t.Fatalf("busctl %s: %v", strings.Join(args, " "), err)
	}
	return out
}

func busctlErr(bus *testutil.DBus, args ...string) (string, error) {
	cmd := exec.Command("busctl", append([]string{"--address=" + bus.Address}, args...)...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	if err := cmd.Run(); err != nil {
		return o.String(), &cmdError{err, e.String()}
	}
	return o.String(), nil
}

type cmdError struct {
	err    error
	stderr string
}

func (e *cmdError) Error() string { return e.err.Error() + ": " + strings.TrimSpace(e.stderr) }

// imageUUID is the filesystem UUID in an image file, as blkid reads it.
func imageUUID(t testing.TB, img string) string {
	t.Helper()
	out, err := exec.Command("blkid", "-p", "-o", "value", "-s", "UUID", img).Output()
	if err != nil || len(bytes.TrimSpace(out)) == 0 {
		t.Fatalf("blkid UUID of %s: %v %q", img, err, out)
	}
	return strings.TrimSpace(string(out))
}

// imagePath is the D-Bus object path of the disk made from img: its
// identity, whatever kernel name it gets.
func imagePath(t testing.TB, img string) dbus.ObjectPath {
	t.Helper()
	return contract.BlockPath(disk.Key(disk.IdentityUUID + strings.ToLower(imageUUID(t, img))))
}

// monitorBus starts dbus-monitor for diskd's signals.
func monitorBus(t testing.TB, bus *testutil.DBus) *testutil.Monitor {
	t.Helper()
	return bus.Monitor(t, "type='signal',path_namespace='/org/diskd/Diskd1'")
}
