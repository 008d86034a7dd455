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
	// BACKUP is on the peer now, and was on this machine before (history).
	e.st.SetLocal([]disk.Disk{
		{Name: "loop3", Device: "/dev/loop3", UUID: "AAAA-1111", Label: "BACKUP", Type: "ext4"},
		{Name: "loop4", Device: "/dev/loop4", UUID: "cccc-3333", Label: "SCRATCH", PartUUID: "PU-1", PartLabel: "scratch"},
	})
	e.st.SetLocal([]disk.Disk{
		{Name: "loop4", Device: "/dev/loop4", UUID: "cccc-3333", Label: "SCRATCH", PartUUID: "PU-1", PartLabel: "scratch"},
	})
	e.st.ApplyPeer(disk.Node{ID: peerID, Name: "beta"}, []disk.Disk{
		{Name: "sdb1", Device: "/dev/sdb1", UUID: "aaaa-1111", Label: "BACKUP", Type: "ext4"},
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
	loop3 := contract.BlockPath(disk.Key{Node: localID, Name: "loop3"})
	loop4 := contract.BlockPath(disk.Key{Node: localID, Name: "loop4"})
	sdb1 := contract.BlockPath(disk.Key{Node: peerID, Name: "sdb1"})

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
		{"label: present first", paths("ResolveDevice", opts("label", "BACKUP"), opts()), []dbus.ObjectPath{sdb1, loop3}},
		{"uuid ignores case", paths("ResolveDevice", opts("uuid", "AAAA-1111"), opts()), []dbus.ObjectPath{sdb1, loop3}},
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
	r = call("Where", "aaaa-1111", opts())
	if r[1] != sdb1 || r[2] != false {
		t.Errorf("Where after detach = %v, want sdb1 not present (seen last)", r)
	}

	// GetStatus is the backend's status as JSON.
	if got := call("GetStatus", opts())[0].(string); got == "" || got[0] != '{' || !strings.Contains(got, `"problems":["none really"]`) {
		t.Errorf("GetStatus = %s", got)
	}
}
