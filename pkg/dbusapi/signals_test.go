package dbusapi

import (
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	contract "github.com/diskd/diskd/dbus"
	"github.com/diskd/diskd/pkg/disk"
	"github.com/diskd/diskd/pkg/store"
	"github.com/diskd/diskd/pkg/testutil"
)

func (e *env) monitor(match string) *testutil.Monitor {
	e.t.Helper()
	return e.bus.Monitor(e.t, match)
}

// TestMonitorSeesChanges: what dbus-monitor shows as disks come, go and
// are forgotten, and as a peer's disk appears.
func TestMonitorSeesChanges(t *testing.T) {
	e := startEnvStore(t, Config{}, store.Options{MaxPeers: 1})
	m := e.monitor("type='signal',path_namespace='/org/diskd/Diskd1'")
	loop3 := string(blockAt(localID, disk.Disk{Name: "loop3"}))
	om := "path=/org/diskd/Diskd1; interface=org.freedesktop.DBus.ObjectManager; member="

	// Attached: InterfacesAdded with the object path and both interfaces.
	l3 := disk.Disk{Name: "loop3", Device: "/dev/loop3", Label: "BACKUP", Type: "ext4", Usage: "filesystem"}
	e.st.SetLocal([]disk.Disk{l3})
	m.Wait(t, "InterfacesAdded for loop3", om+"InterfacesAdded",
		`object path "`+loop3+`"`, `string "org.diskd.Diskd1.Block"`, `string "org.diskd.Diskd1.Filesystem"`, `string "BACKUP"`)

	// Detached: PropertiesChanged of Present on the object.
	e.st.SetLocal(nil)
	m.Wait(t, "PropertiesChanged Present=false for loop3",
		"path="+loop3+"; interface=org.freedesktop.DBus.Properties; member=PropertiesChanged",
		`string "org.diskd.Diskd1.Block"`, `string "Present"`, "boolean false")

	// A peer's disk appears on this bus.
	peerDisk := string(blockAt(peerID, disk.Disk{Name: "sdb1"}))
	e.st.ApplyPeer(disk.Node{ID: peerID, Name: "beta"}, []disk.Disk{{Name: "sdb1", Device: "/dev/sdb1", Label: "PHOTOS"}})
	m.Wait(t, "InterfacesAdded for the peer's machine", om+"InterfacesAdded",
		`object path "`+string(contract.MachinePath(peerID))+`"`, `string "beta"`)
	m.Wait(t, "InterfacesAdded for the peer's disk", om+"InterfacesAdded", `object path "`+peerDisk+`"`, `string "PHOTOS"`)

	// The peer goes quiet, then is forgotten to make room (MaxPeers 1):
	// InterfacesRemoved for its disk and its machine.
	e.st.SetPeerOffline(peerID)
	e.st.ApplyPeer(disk.Node{ID: "c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3", Name: "gamma"}, nil)
	m.Wait(t, "InterfacesRemoved for the forgotten disk", om+"InterfacesRemoved",
		`object path "`+peerDisk+`"`, `string "org.diskd.Diskd1.Block"`)
	m.Wait(t, "InterfacesRemoved for the forgotten machine", om+"InterfacesRemoved",
		`object path "`+string(contract.MachinePath(peerID))+`"`, `string "org.diskd.Diskd1.Machine"`)
}

// signals subscribes a godbus client to the service's signals.
func (e *env) signals() chan *dbus.Signal {
	e.t.Helper()
	c := e.client()
	if err := c.AddMatchSignal(dbus.WithMatchSender(contract.BusName), dbus.WithMatchPathNamespace(contract.RootPath)); err != nil {
		e.t.Fatal(err)
	}
	ch := make(chan *dbus.Signal, 1024)
	c.Signal(ch)
	return ch
}

// next returns the next signal about path (skipping others).
func next(t *testing.T, ch chan *dbus.Signal, path dbus.ObjectPath) *dbus.Signal {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case s := <-ch:
			if s.Path == path || (len(s.Body) > 0 && s.Body[0] == path) {
				return s
			}
		case <-timeout:
			t.Fatalf("no signal about %s within 10 s", path)
		}
	}
}

// TestSignalsBatched: an object changed twice within the batch delay gets
// one PropertiesChanged with its final values; several objects changed at
// once get one signal each.
func TestSignalsBatched(t *testing.T) {
	e := startEnv(t, Config{BatchDelay: 300 * time.Millisecond})
	ch := e.signals()
	mk := func(labels ...string) []disk.Disk {
		var ds []disk.Disk
		for i, l := range labels {
			name := []string{"loop1", "loop2", "loop3"}[i]
			ds = append(ds, disk.Disk{Name: name, Device: "/dev/" + name, Label: l, Type: "ext4"})
		}
		return ds
	}
	e.st.SetLocal(mk("a", "b", "c"))
	for _, n := range []string{"loop1", "loop2", "loop3"} {
		s := next(t, ch, blockAt(localID, disk.Disk{Name: n}))
		if s.Name != contract.ObjectManagerInterface+".InterfacesAdded" {
			t.Fatalf("first signal for %s is %s", n, s.Name)
		}
	}
	// Two quick changes to loop1, one to loop2: after the delay, exactly
	// one signal each, with the final label.
	e.st.SetLocal(mk("a2", "b", "c"))
	e.st.SetLocal(mk("a3", "b2", "c"))
	// A sentinel change after the batch: any extra signal for loop1 or
	// loop2 would arrive before the sentinel's.
	got := map[dbus.ObjectPath][]string{}
	l1 := blockAt(localID, disk.Disk{Name: "loop1"})
	l2 := blockAt(localID, disk.Disk{Name: "loop2"})
	sentinel := blockAt(localID, disk.Disk{Name: "loop3"})
	sentSentinel := false
	timeout := time.After(10 * time.Second)
	for done := false; !done; {
		select {
		case s := <-ch:
			if s.Name != contract.PropertiesInterface+".PropertiesChanged" {
				continue
			}
			if s.Path == sentinel {
				done = true
				break
			}
			if s.Path != l1 && s.Path != l2 {
				continue // the machine's LastSeen
			}
			changed := s.Body[1].(map[string]dbus.Variant)
			got[s.Path] = append(got[s.Path], changed["IdLabel"].Value().(string))
			if !sentSentinel && len(got) == 2 {
				sentSentinel = true
				e.st.SetLocal(mk("a3", "b2", "c2"))
			}
		case <-timeout:
			t.Fatalf("timed out; got %v", got)
		}
	}
	if len(got[l1]) != 1 || got[l1][0] != "a3" {
		t.Errorf("loop1 signalled labels %q, want one signal with a3", got[l1])
	}
	if len(got[l2]) != 1 || got[l2][0] != "b2" {
		t.Errorf("loop2 signalled labels %q, want one signal with b2", got[l2])
	}
}
