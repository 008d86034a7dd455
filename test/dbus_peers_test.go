package test

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	contract "github.com/diskd/diskd/dbus"
	"github.com/diskd/diskd/pkg/api"
	"github.com/diskd/diskd/pkg/disk"
	"github.com/diskd/diskd/pkg/testutil"
)

// TestDBusPeerDisk: two hosts in network namespaces; the disk of the one
// without D-Bus appears on the other's bus, with its machine, and
// dbus-monitor sees it arrive. Every reader (both sockets, diskctl --bus,
// busctl) then agrees on it as it is detached and attached again.
func TestDBusPeerDisk(t *testing.T) {
	testutil.RequiresRoot(t)
	testutil.RequiresTool(t, "losetup", "mkfs.ext4", "blkid")
	bus := startPolicyBus(t)
	hosts := testutil.Hosts(t, 2)
	img := testutil.LoopImage(t, 32, "mkfs.ext4", "-q", "-L", "DBUSPEER")
	loop := newLoopDev(t)
	losetup(t, loop, img)

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

	// The same disk, the same presence, through every reader, as it goes
	// and comes back.
	readers := sightingReaders(d1, d2, bus, block)
	agree(t, readers, sighting{Host: h1.Name, Device: loop, Label: "DBUSPEER", Present: true})
	losetup(t, "-d", loop)
	agree(t, readers, sighting{Host: h1.Name, Device: loop, Label: "DBUSPEER", Present: false})
	testutil.Eventually(t, 10*time.Second, "reattaching "+loop, func() bool {
		return exec.Command("losetup", loop, img).Run() == nil // busy until blkid closes it
	})
	agree(t, readers, sighting{Host: h1.Name, Device: loop, Label: "DBUSPEER", Present: true})

	// h1 leaves: its machine goes offline and its disk is no longer
	// present, signalled on h2's bus.
	d1.Stop()
	m.Wait(t, "PropertiesChanged Online=false for h1", "path="+machine+"; interface=org.freedesktop.DBus.Properties; member=PropertiesChanged",
		`string "Online"`, "boolean false")
	m.Wait(t, "PropertiesChanged Present=false for h1's disk", "path="+block+"; interface=org.freedesktop.DBus.Properties; member=PropertiesChanged",
		`string "Present"`, "boolean false")
}

// sighting is what one reader says of a disk.
type sighting struct {
	Host, Device, Label string
	Present             bool
}

func fromDisk(g *disk.Disk) sighting {
	if g == nil {
		return sighting{}
	}
	return sighting{Host: g.Host, Device: g.Device, Label: g.Label, Present: g.Present}
}

// sightingReaders are the ways to learn about the disk labelled DBUSPEER
// at the bus object block: the socket of the machine that has it (d1), and
// on the other (d2), its socket, diskctl --bus, and busctl's
// GetManagedObjects and Get.
func sightingReaders(d1, d2 *testutil.Daemon, bus *testutil.DBus, block string) map[string]func(t *testing.T) sighting {
	return map[string]func(t *testing.T) sighting{
		"diskctl list on the disk's machine": func(t *testing.T) sighting { return fromDisk(find(listJSON(t, d1), "DBUSPEER")) },
		"diskctl list":                       func(t *testing.T) sighting { return fromDisk(find(listJSON(t, d2), "DBUSPEER")) },
		"diskctl --bus list": func(t *testing.T) sighting {
			var ds []disk.Disk
			if err := json.Unmarshal([]byte(d2.MustCtl("--bus", "--bus-address", bus.Address, "list", "--json")), &ds); err != nil {
				t.Fatal(err)
			}
			return fromDisk(find(ds, "DBUSPEER"))
		},
		"busctl GetManagedObjects": func(t *testing.T) sighting {
			out := busctl(t, bus, "--json=short", "call", contract.BusName, contract.RootPath, contract.ObjectManagerInterface, "GetManagedObjects")
			var reply struct {
				Data []map[string]map[string]map[string]struct{ Data any }
			}
			if err := json.Unmarshal([]byte(out), &reply); err != nil || len(reply.Data) != 1 {
				t.Fatalf("GetManagedObjects: %v %.300s", err, out)
			}
			b, ok := reply.Data[0][block][contract.BlockInterface]
			if !ok {
				return sighting{}
			}
			var dev strings.Builder
			for _, c := range b["Device"].Data.([]any) {
				if c := byte(c.(float64)); c != 0 {
					dev.WriteByte(c)
				}
			}
			return sighting{Host: b["HostName"].Data.(string), Device: dev.String(), Label: b["IdLabel"].Data.(string),
				Present: b["Present"].Data.(bool)}
		},
		"busctl get-property": func(t *testing.T) sighting {
			get := func(prop string) string {
				out, err := busctlErr(bus, "get-property", contract.BusName, block, contract.BlockInterface, prop)
				if err != nil {
					return ""
				}
				return strings.TrimSpace(out)
			}
			host, _ := strconv.Unquote(strings.TrimPrefix(get("HostName"), "s "))
			label, _ := strconv.Unquote(strings.TrimPrefix(get("IdLabel"), "s "))
			var dev strings.Builder
			if f := strings.Fields(get("Device")); len(f) > 2 { // ay N b1 b2 ...
				for _, b := range f[2:] {
					if c, _ := strconv.Atoi(b); c != 0 {
						dev.WriteByte(byte(c))
					}
				}
			}
			return sighting{Host: host, Device: dev.String(), Label: label, Present: get("Present") == "b true"}
		},
	}
}

// agree waits until every reader says want, and fails with what each said
// if they do not come to agree.
func agree(t *testing.T, readers map[string]func(t *testing.T) sighting, want sighting) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := map[string]sighting{}
		all := true
		for name, read := range readers {
			got[name] = read(t)
			all = all && got[name] == want
		}
		if all {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the readers do not agree on %+v within 20 s:\n%s", want, fmt.Sprint(got))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
