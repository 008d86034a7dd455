package test

import (
	"encoding/json"
	"strings"
	"testing"

	contract "github.com/diskd/diskd/dbus"
	"github.com/diskd/diskd/pkg/api"
	"github.com/diskd/diskd/pkg/testutil"
)

// TestDBusPeerDisk: two hosts in network namespaces; the disk of the one
// without D-Bus appears on the other's bus, with its machine, and
// dbus-monitor sees it arrive.
func TestDBusPeerDisk(t *testing.T) {
	testutil.RequiresRoot(t)
	testutil.RequiresTool(t, "losetup", "mkfs.ext4", "blkid")
	bus := startPolicyBus(t)
	hosts := testutil.Hosts(t, 2)
	img := testutil.LoopImage(t, 32, "mkfs.ext4", "-q", "-L", "DBUSPEER")
	loop := testutil.AttachLoop(t, img)

	// h2 serves the bus and has no disks of its own (all hosts see the
	// same block devices, so each daemon is given its own).
	d2 := testutil.StartDaemon(t, testutil.DaemonOptions{Prefix: hosts[1].Prefix(),
		Args: []string{"--dbus", bus.Address, "--devices", "/dev/nonexistent"}})
	waitBusName(t, bus)
	m := monitorBus(t, bus)

	d1 := testutil.StartDaemon(t, testutil.DaemonOptions{Prefix: hosts[0].Prefix(), Args: []string{"--devices", loop}})
	var h1 api.Localhost
	if err := json.Unmarshal([]byte(d1.MustCtl("localhost", "--json")), &h1); err != nil {
		t.Fatal(err)
	}
	machine := string(contract.MachinePath(h1.NodeID))
	block := string(imagePath(t, img))
	om := "path=/org/diskd/Diskd1; interface=org.freedesktop.DBus.ObjectManager; member=InterfacesAdded"
	m.Wait(t, "InterfacesAdded for h1's machine", om, `object path "`+machine+`"`, `string "`+h1.Name+`"`)
	m.Wait(t, "InterfacesAdded for h1's disk", om, `object path "`+block+`"`, `string "DBUSPEER"`)

	if got := strings.TrimSpace(busctl(t, bus, "get-property", contract.BusName, block, contract.BlockInterface, "Machine")); got != `o "`+machine+`"` {
		t.Errorf("the peer disk's Machine = %s", got)
	}
	if got := strings.TrimSpace(busctl(t, bus, "get-property", contract.BusName, machine, contract.MachineInterface, "Online")); got != "b true" {
		t.Errorf("h1 Online = %s", got)
	}
	// diskctl on h2's bus answers where for h1's disk, as its socket does.
	viaBus := d2.MustCtl("--bus", "--bus-address", bus.Address, "where", "DBUSPEER")
	if want := "DBUSPEER is on " + h1.Name + " as " + loop; !strings.HasPrefix(viaBus, want) {
		t.Errorf("diskctl --bus where = %q, want %q...", viaBus, want)
	}
	if viaSock := d2.MustCtl("where", "DBUSPEER"); viaSock != viaBus {
		t.Errorf("where differs: socket %q, D-Bus %q", viaSock, viaBus)
	}

	// h1 leaves: its machine goes offline and its disk is no longer
	// present, signalled on h2's bus.
	d1.Stop()
	m.Wait(t, "PropertiesChanged Online=false for h1", "path="+machine+"; interface=org.freedesktop.DBus.Properties; member=PropertiesChanged",
		`string "Online"`, "boolean false")
	m.Wait(t, "PropertiesChanged Present=false for h1's disk", "path="+block+"; interface=org.freedesktop.DBus.Properties; member=PropertiesChanged",
		`string "Present"`, "boolean false")
}
