package test

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	contract "github.com/diskd/diskd/dbus"
	"github.com/diskd/diskd/pkg/testutil"
)

// TestGioClientsDuringAttachBurst: 20 Gio DBusObjectManagerClients
// (python3-gi, as GNOME's applications hold them), created one by one on a
// private bus while loop devices are attached and detached in a burst,
// end up holding what a fresh GetManagedObjects returns, which is what the
// socket says. Real devices rarely change twice within one batch while a
// client reads; pkg/dbusapi's TestGioClientsDuringFlips drives the store
// fast enough to hit that every time.
func TestGioClientsDuringAttachBurst(t *testing.T) {
	testutil.RequiresRoot(t)
	testutil.RequiresTool(t, "losetup", "mkfs.ext4", "blkid")
	bus := startPolicyBus(t)
	const n = 3
	devs, imgs := make([]string, n), make([]string, n)
	args := []string{"--dbus", bus.Address}
	for i := range n {
		devs[i] = newLoopDev(t)
		imgs[i] = testutil.LoopImage(t, 16, "mkfs.ext4", "-q", "-L", fmt.Sprintf("GIOBURST%d", i))
		losetup(t, devs[i], imgs[i])
		args = append(args, "--devices", devs[i])
	}
	d := testutil.StartDaemon(t, testutil.DaemonOptions{Args: args})
	waitBusName(t, bus)
	// Object paths follow the disks' identities (their UUIDs).
	paths := make([]string, n)
	for i := range n {
		label := fmt.Sprintf("GIOBURST%d", i)
		testutil.Eventually(t, 20*time.Second, label+" listed", func() bool { return find(listJSON(t, d), label) != nil })
		g := find(listJSON(t, d), label)
		paths[i] = string(contract.BlockPath(g.Key()))
	}
	testutil.Eventually(t, 20*time.Second, "the devices on the bus", func() bool {
		out, err := busctlErr(bus, "tree", "--list", contract.BusName)
		return err == nil && strings.Contains(out, paths[n-1]+"\n")
	})

	g := testutil.StartGioClients(t, bus.Address)
	// The burst: each device detached and attached again, round after
	// round, with a client created every round.
	attached := make([]bool, n)
	for i := range attached {
		attached[i] = true
	}
	toggle := func(i int) {
		if attached[i] {
			losetup(t, "-d", devs[i])
		} else {
			// A detach completes when the last opener (blkid, probing the
			// detach's uevent) closes the device: until then it is busy.
			var (
				out []byte
				err error
			)
			testutil.Eventually(t, 10*time.Second, "attaching "+devs[i], func() bool {
				out, err = exec.Command("losetup", devs[i], imgs[i]).CombinedOutput()
				return err == nil || !strings.Contains(string(out), "busy")
			})
			if err != nil {
				t.Fatalf("losetup %s %s: %v %s (another test took the device?)", devs[i], imgs[i], err, out)
			}
		}
		attached[i] = !attached[i]
	}
	for round := range 20 {
		for i := range n {
			toggle(i)
		}
		if round%3 == 0 {
			toggle(0) // and straight back: both inside one batch, often
			toggle(0)
		}
		g.New()
	}
	for i := range n {
		if !attached[i] {
			toggle(i)
		}
	}

	ifs, err := contract.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	quiet := func(in, prop string) bool {
		for _, c := range ifs {
			if c.Name == in {
				return c.EmitsChangedSignal(prop) == "false"
			}
		}
		return false
	}
	var dump testutil.GioDump
	testutil.Eventually(t, 30*time.Second, "every device present on the socket and the bus, the daemon quiet", func() bool {
		ds := listJSON(t, d)
		for i := range n {
			g := find(ds, fmt.Sprintf("GIOBURST%d", i))
			if g == nil || !g.Present {
				return false
			}
		}
		dump = g.Dump()
		if !dump.Settled(quiet) {
			return false
		}
		for i := range n {
			b := dump.After[paths[i]][contract.BlockInterface]
			if b["Present"] != "true" || b["IdLabel"] != fmt.Sprintf("'GIOBURST%d'", i) {
				return false
			}
		}
		return true
	})
	dump.Check(t, 20, quiet)
	st := status(t, d).Scan
	t.Logf("the daemon saw %d uevents, ran %d probes and %d full scans", st.Uevents, st.DeviceProbes, st.FullScans)
}
