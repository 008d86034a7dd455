package dbusapi

import (
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	contract "github.com/diskd/diskd/dbus"
	"github.com/diskd/diskd/pkg/disk"
	"github.com/diskd/diskd/pkg/store"
)

func TestManagerQueries(t *testing.T) {
	// A clock that ticks on every reading gives each change its own time.
	var tick atomic.Int64
	clock := func() time.Time { return time.UnixMilli(1_700_000_000_000 + tick.Add(1)) }
	e := startEnvStore(t, Config{}, store.Options{Now: clock})
	// A disk labelled BACKUP is on the peer now; another BACKUP was on this
	// machine before (history): two disks, one label.
	e.st.SetLocal([]disk.Disk{
		{Name: "loop3", Device: "/dev/loop3", UUID: "AAAA-1111", Label: "BACKUP", Type: "ext4"},
		{Name: "loop4", Device: "/dev/loop4", UUID: "cccc-3333", Label: "SCRATCH", PartUUID: "PU-1", PartLabel: "scratch"},
	})
	e.st.SetLocal([]disk.Disk{
		{Name: "loop4", Device: "/dev/loop4", UUID: "cccc-3333", Label: "SCRATCH", PartUUID: "PU-1", PartLabel: "scratch"},
	})
	e.st.ApplyPeer(disk.Node{ID: peerID, Name: "beta"}, []disk.Disk{
		{Name: "sdb1", Device: "/dev/sdb1", UUID: "dddd-4444", Label: "BACKUP", Type: "ext4"},
	})
	c := e.client()
	mgr := c.Object(contract.BusName, contract.ManagerPath)
	call := func(method string, args ...any) []any {
		t.Helper()
		cl := mgr.Call(contract.ManagerInterface+"."+method, 0, args...)
		if cl.Err != nil {
			t.Fatalf("%s: %v", method, cl.Err)
		}
		return cl.Body
	}
	paths := func(method string, args ...any) []dbus.ObjectPath {
		t.Helper()
		return call(method, args...)[0].([]dbus.ObjectPath)
	}
	opts := func(kv ...any) map[string]dbus.Variant {
		m := map[string]dbus.Variant{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i].(string)] = dbus.MakeVariant(kv[i+1])
		}
		return m
	}
	loop3, loop4, sdb1 := uuidPath("aaaa-1111"), uuidPath("cccc-3333"), uuidPath("dddd-4444")

	if got, want := paths("GetMachines", opts()), []dbus.ObjectPath{contract.MachinePath(localID), contract.MachinePath(peerID)}; !slices.Equal(got, want) {
		t.Errorf("GetMachines = %v, want %v (local first)", got, want)
	}
	for _, tc := range []struct {
		name string
		got  []dbus.ObjectPath
		want []dbus.ObjectPath
	}{
		{"all, by host then device", paths("GetBlockDevices", opts()), []dbus.ObjectPath{loop3, loop4, sdb1}},
		{"machine by name", paths("GetBlockDevices", opts("machine", "beta")), []dbus.ObjectPath{sdb1}},
		{"machine by ID", paths("GetBlockDevices", opts("machine", string(localID))), []dbus.ObjectPath{loop3, loop4}},
		{"machine by path", paths("GetBlockDevices", opts("machine", contract.MachinePath(localID))), []dbus.ObjectPath{loop3, loop4}},
		{"present only", paths("GetBlockDevices", opts("present", true)), []dbus.ObjectPath{loop4, sdb1}},
		{"history only", paths("GetBlockDevices", opts("present", false)), []dbus.ObjectPath{loop3}},
		{"label glob", paths("GetBlockDevices", opts("label", "BACK*")), []dbus.ObjectPath{loop3, sdb1}},
		{"label glob and present", paths("GetBlockDevices", opts("label", "BACK*", "present", true)), []dbus.ObjectPath{sdb1}},
		{"label glob is over the label, not the partition label", paths("GetBlockDevices", opts("label", "scr*")), []dbus.ObjectPath{}},
		{"label glob, one character", paths("GetBlockDevices", opts("label", "SCRATC?")), []dbus.ObjectPath{loop4}},
		{"unknown options are ignored", paths("GetBlockDevices", opts("colour", "blue")), []dbus.ObjectPath{loop3, loop4, sdb1}},
		{"label: present first", paths("ResolveDevice", opts("label", "BACKUP"), opts()), []dbus.ObjectPath{sdb1, loop3}},
		{"uuid ignores case", paths("ResolveDevice", opts("uuid", "aaaa-1111"), opts()), []dbus.ObjectPath{loop3}},
		{"all keys must match", paths("ResolveDevice", opts("label", "BACKUP", "path", "/dev/loop3"), opts()), []dbus.ObjectPath{loop3}},
		{"no match is empty", paths("ResolveDevice", opts("label", "BACKUP", "path", "/dev/loop4"), opts()), []dbus.ObjectPath{}},
		{"partuuid", paths("ResolveDevice", opts("partuuid", "pu-1"), opts()), []dbus.ObjectPath{loop4}},
		{"partlabel", paths("ResolveDevice", opts("partlabel", "scratch"), opts()), []dbus.ObjectPath{loop4}},
		{"spec is what where matches", paths("ResolveDevice", opts("spec", "/dev/loop4"), opts()), []dbus.ObjectPath{loop4}},
		{"options apply", paths("ResolveDevice", opts("spec", "BACKUP"), opts("present", false)), []dbus.ObjectPath{loop3}},
	} {
		if !slices.Equal(tc.got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, tc.got, tc.want)
		}
	}

	// Where: the best match, present first, with its last-seen time.
	r := call("Where", "BACKUP", opts())
	if r[0] != contract.MachinePath(peerID) || r[1] != sdb1 || r[2] != true {
		t.Errorf("Where BACKUP = %v", r)
	}
	ds := e.st.Where("BACKUP")
	if r[3] != contract.Usec(ds[0].LastSeen) {
		t.Errorf("Where last_seen_usec = %v, store says %v", r[3], contract.Usec(ds[0].LastSeen))
	}
	// Gone from the peer, it is found in history: the most recent sighting.
	e.st.ApplyPeer(disk.Node{ID: peerID, Name: "beta"}, nil)
	r = call("Where", "BACKUP", opts())
	if r[1] != sdb1 || r[2] != false {
		t.Errorf("Where after detach = %v, want sdb1 not present (seen last)", r)
	}

	// History: both BACKUPs, each with where it was seen; the local one,
	// attached again under another name, keeps its object path and has two
	// sightings, newest first.
	e.st.SetLocal([]disk.Disk{
		{Name: "loop9", Device: "/dev/loop9", UUID: "AAAA-1111", Label: "BACKUP", Type: "ext4"},
	})
	type sighting struct {
		NodeID, HostName, KernelName string
		Device                       []byte
		FirstSeen, LastSeen          uint64
	}
	var hist []struct {
		Block     dbus.ObjectPath
		Sightings []sighting
	}
	if err := dbus.Store(call("History", "BACKUP", opts()), &hist); err != nil {
		t.Fatal(err)
	}
	if len(hist) != 2 || hist[0].Block != loop3 || hist[1].Block != sdb1 {
		t.Fatalf("History BACKUP = %+v, want loop3's disk (present) then sdb1's", hist)
	}
	var where []string
	for _, sg := range hist[0].Sightings {
		where = append(where, sg.HostName+":"+sg.KernelName+":"+string(sg.Device))
	}
	if !slices.Equal(where, []string{"alpha:loop9:/dev/loop9\x00", "alpha:loop3:/dev/loop3\x00"}) {
		t.Errorf("sightings of the moved disk = %q", where)
	}
	if len(hist[1].Sightings) != 1 || hist[1].Sightings[0].NodeID != string(peerID) || hist[1].Sightings[0].HostName != "beta" {
		t.Errorf("sightings of the peer's disk = %+v", hist[1].Sightings)
	}

	// GetStatus is the backend's status as JSON.
	if got := call("GetStatus", opts())[0].(string); got == "" || got[0] != '{' || !strings.Contains(got, `"problems":["none really"]`) {
		t.Errorf("GetStatus = %s", got)
	}
}
