package test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	contract "github.com/diskd/diskd/dbus"
	"github.com/diskd/diskd/pkg/testutil"
)

// TestDBusActivation: with dbus/org.diskd.Diskd1.service installed in the
// bus's service directory, the first call to org.diskd.Diskd1 starts diskd,
// which finds its bus through DBUS_STARTER_ADDRESS (the private bus's
// environment has no DBUS_SYSTEM_BUS_ADDRESS) and answers.
func TestDBusActivation(t *testing.T) {
	testutil.RequiresRoot(t)
	testutil.RequiresTool(t, "losetup", "mkfs.ext4", "blkid", "unshare")
	bus := startPolicyBus(t)
	diskd, diskctl := testutil.Binaries(t)
	loop := testutil.AttachLoop(t, testutil.LoopImage(t, 32, "mkfs.ext4", "-q", "-L", "DBUSACT"))
	dir := t.TempDir()
	sock := filepath.Join(dir, "diskd.sock")

	// The product file, with Exec pointed at the binary under test, in a
	// network namespace of its own (a test daemon never multicasts on the
	// machine's network) and limited to the test's loop device.
	product, err := os.ReadFile(filepath.Join(testutil.RepoRoot(t), "dbus", "org.diskd.Diskd1.service"))
	if err != nil {
		t.Fatal(err)
	}
	unshare, _ := exec.LookPath("unshare")
	execLine := "Exec=" + unshare + " --net -- " + diskd + " --config /dev/null --state-dir " + filepath.Join(dir, "state") +
		" --socket " + sock + " --devices " + loop
	svc := strings.Replace(string(product), "Exec=/usr/bin/diskd\n", execLine+"\n", 1)
	if svc == string(product) {
		t.Fatalf("the activation file has no Exec=/usr/bin/diskd line:\n%s", product)
	}
	bus.WriteService("org.diskd.Diskd1.service", svc)

	c, err := dbus.Connect(bus.Address)
	if err != nil {
		t.Fatal(err)
	}
	// Cleanups run after defers: this connection must outlive the test
	// body, to find the daemon to stop.
	t.Cleanup(func() { c.Close() })
	var has bool
	if err := c.BusObject().Call("org.freedesktop.DBus.NameHasOwner", 0, contract.BusName).Store(&has); err != nil || has {
		t.Fatalf("before activation: owner %v, %v", has, err)
	}
	// Stop the activated daemon by its PID, whatever happens below.
	t.Cleanup(func() { stopActivated(t, c, diskd) })

	// The first call starts it (busctl lets the bus auto-start the name).
	busctl(t, bus, "call", contract.BusName, contract.RootPath, contract.ObjectManagerInterface, "GetManagedObjects")
	testutil.Eventually(t, 20*time.Second, "the activated diskd to list DBUSACT on the bus", func() bool {
		out, err := busctlErr(bus, "call", contract.BusName, contract.ManagerPath, contract.ManagerInterface, "Where", "sa{sv}", "DBUSACT", "0")
		return err == nil && strings.Contains(out, "true")
	})
	// It is the daemon we configured: its socket answers and says it is on
	// the bus.
	out, err := exec.Command(diskctl, "--socket", sock, "status", "--json").Output()
	if err != nil || !strings.Contains(string(out), `"dbus":"connected to system bus as org.diskd.Diskd1"`) {
		t.Errorf("activated diskd's status: %v %s", err, out)
	}
}

// stopActivated stops the process owning org.diskd.Diskd1, if it is the
// binary under test, by its PID.
func stopActivated(t *testing.T, c *dbus.Conn, binary string) {
	var pid uint32
	if err := c.BusObject().Call("org.freedesktop.DBus.GetConnectionUnixProcessID", 0, contract.BusName).Store(&pid); err != nil {
		var de dbus.Error
		if !errors.As(err, &de) || de.Name != "org.freedesktop.DBus.Error.NameHasNoOwner" {
			t.Errorf("cannot find the activated diskd to stop it: %v", err)
		}
		return
	}
	exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if exe != binary {
		t.Errorf("%s is owned by pid %d (%s), not the diskd under test", contract.BusName, pid, exe)
		return
	}
	p, _ := os.FindProcess(int(pid))
	p.Signal(syscall.SIGTERM)
	for i := 0; i < 200; i++ {
		if p.Signal(syscall.Signal(0)) != nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	p.Kill()
}
