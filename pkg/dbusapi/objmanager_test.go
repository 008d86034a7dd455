package dbusapi

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	contract "github.com/diskd/diskd/dbus"
	"github.com/diskd/diskd/pkg/disk"
)

// recorder collects emitted signals as one line each, for comparison.
type recorder struct{ lines []string }

func (r *recorder) emit(path dbus.ObjectPath, name string, args ...any) error {
	var parts []string
	for _, a := range args {
		switch v := a.(type) {
		case contract.Ifaces:
			var ks []string
			for in, props := range v {
				ks = append(ks, fmt.Sprintf("%s(%d)", in, len(props)))
			}
			slices.Sort(ks)
			parts = append(parts, "{"+strings.Join(ks, " ")+"}")
		case contract.Props:
			var ks []string
			for k, pv := range v {
				ks = append(ks, k+"="+pv.String())
			}
			slices.Sort(ks)
			parts = append(parts, "{"+strings.Join(ks, " ")+"}")
		default:
			parts = append(parts, fmt.Sprint(v))
		}
	}
	short := strings.TrimPrefix(name, "org.freedesktop.DBus.")
	r.lines = append(r.lines, fmt.Sprintf("%s %s %s", path, short, strings.Join(parts, " ")))
	return nil
}

func (r *recorder) take() []string {
	l := r.lines
	r.lines = nil
	return l
}

func TestObjectManagerSignals(t *testing.T) {
	t0 := time.UnixMicro(1_700_000_000_000_000)
	base := disk.Disk{Node: localID, Host: "alpha", Name: "loop3", Device: "/dev/loop3", Type: "ext4",
		Usage: "filesystem", Label: "A", Present: true, FirstSeen: t0, LastSeen: t0}
	p := contract.BlockPath(base.Key())
	with := func(f func(d *disk.Disk)) object {
		d := base
		f(&d)
		return blockObj{d}
	}
	steps := []struct {
		name   string
		obj    object // nil: remove
		signal []string
	}{
		{"new object: one InterfacesAdded with every interface", blockObj{base}, []string{
			"/org/diskd/Diskd1 ObjectManager.InterfacesAdded " + string(p) + " {org.diskd.Diskd1.Block(19) org.diskd.Diskd1.Filesystem(1)}"}},
		{"same state: nothing", blockObj{base}, nil},
		{"one property: PropertiesChanged with just it", with(func(d *disk.Disk) { d.Label = "B" }), []string{
			string(p) + ` Properties.PropertiesChanged org.diskd.Diskd1.Block {IdLabel="B"} []`}},
		{"two interfaces change: one signal each, all changes in it", with(func(d *disk.Disk) {
			d.Label, d.Size, d.Mounts = "B", 42, []string{"/mnt"}
		}), []string{
			string(p) + ` Properties.PropertiesChanged org.diskd.Diskd1.Block {Size=@t 42} []`,
			string(p) + ` Properties.PropertiesChanged org.diskd.Diskd1.Filesystem {MountPoints=@aay [[0x2f, 0x6d, 0x6e, 0x74, 0x0]]} []`}},
		{"loses its filesystem: InterfacesRemoved for it alone, then Block's changes", with(func(d *disk.Disk) {
			d.Label, d.Size, d.Type, d.Usage = "B", 42, "swap", "other"
		}), []string{
			"/org/diskd/Diskd1 ObjectManager.InterfacesRemoved " + string(p) + " [org.diskd.Diskd1.Filesystem]",
			string(p) + ` Properties.PropertiesChanged org.diskd.Diskd1.Block {IdType="swap" IdUsage="other"} []`}},
		{"gains it back: InterfacesAdded for it alone", with(func(d *disk.Disk) { d.Label, d.Size = "B", 42 }), []string{
			string(p) + ` Properties.PropertiesChanged org.diskd.Diskd1.Block {IdType="ext4" IdUsage="filesystem"} []`,
			"/org/diskd/Diskd1 ObjectManager.InterfacesAdded " + string(p) + " {org.diskd.Diskd1.Filesystem(1)}"}},
		{"detached: Present and LastSeen in one signal", with(func(d *disk.Disk) {
			d.Label, d.Size, d.Present, d.LastSeen = "B", 42, false, t0.Add(time.Second)
		}), []string{
			string(p) + ` Properties.PropertiesChanged org.diskd.Diskd1.Block {LastSeen=@t 1700000001000000 Present=false} []`}},
		{"forgotten: InterfacesRemoved with every interface", nil, []string{
			"/org/diskd/Diskd1 ObjectManager.InterfacesRemoved " + string(p) + " [org.diskd.Diskd1.Block org.diskd.Diskd1.Filesystem]"}},
		{"forgotten again: nothing", nil, nil},
	}
	r := &recorder{}
	om := newObjectManager(contract.RootPath, r.emit)
	for _, s := range steps {
		var err error
		if s.obj == nil {
			err = om.remove(p)
		} else {
			err = om.set(p, s.obj)
		}
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if got := r.take(); !slices.Equal(got, s.signal) {
			t.Errorf("%s:\n got %q\nwant %q", s.name, got, s.signal)
		}
	}
}

func TestObjectManagerSyncAndChildren(t *testing.T) {
	elem := func(d disk.Disk) string {
		return strings.TrimPrefix(string(contract.BlockPath(d.Key())), contract.BlockDevicesPath+"/")
	}
	r := &recorder{}
	om := newObjectManager(contract.RootPath, r.emit)
	a := disk.Disk{Node: localID, Name: "loop1", Device: "/dev/loop1", Present: true}
	b := disk.Disk{Node: localID, Name: "loop2", Device: "/dev/loop2", Present: true}
	c := disk.Disk{Node: peerID, Name: "dm-0", Device: "/dev/dm-0", Present: true}
	n := disk.Node{ID: localID, Name: "alpha", Local: true, Online: true}
	om.load(map[dbus.ObjectPath]object{
		contract.BlockPath(a.Key()): blockObj{a},
		contract.BlockPath(b.Key()): blockObj{b},
		contract.MachinePath(n.ID):  machineObj{n},
	})
	if got := r.take(); len(got) != 0 {
		t.Errorf("load emitted %q", got)
	}
	if got, want := om.children(contract.BlockDevicesPath), []string{elem(a), elem(b)}; !slices.Equal(got, want) {
		t.Errorf("children = %q, want %q", got, want)
	}
	if got := om.children(contract.RootPath); !slices.Equal(got, []string{"block_devices", "machines"}) {
		t.Errorf("children of root = %q", got)
	}

	// The complete new state: a gone, b changed, c new, the machine as was.
	b2 := b
	b2.Present = false
	if err := om.sync(map[dbus.ObjectPath]object{
		contract.BlockPath(b.Key()): blockObj{b2},
		contract.BlockPath(c.Key()): blockObj{c},
		contract.MachinePath(n.ID):  machineObj{n},
	}); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"/org/diskd/Diskd1 ObjectManager.InterfacesRemoved " + string(contract.BlockPath(a.Key())) + " [org.diskd.Diskd1.Block]",
		string(contract.BlockPath(b.Key())) + " Properties.PropertiesChanged org.diskd.Diskd1.Block {Present=false} []",
		"/org/diskd/Diskd1 ObjectManager.InterfacesAdded " + string(contract.BlockPath(c.Key())) + " {org.diskd.Diskd1.Block(19)}",
	}
	if got := r.take(); !slices.Equal(got, want) {
		t.Errorf("sync:\n got %q\nwant %q", got, want)
	}
	if _, ok := om.get(contract.BlockPath(a.Key())); ok {
		t.Error("a is still published")
	}
}

func TestClassify(t *testing.T) {
	for p, want := range map[dbus.ObjectPath]pathKind{
		"/":                                       kindInner,
		"/org":                                    kindInner,
		"/org/diskd":                              kindInner,
		"/org/diskd/Diskd1":                       kindRoot,
		"/org/diskd/Diskd1/Manager":               kindManager,
		"/org/diskd/Diskd1/machines":              kindInner,
		"/org/diskd/Diskd1/machines/x":            kindMachine,
		"/org/diskd/Diskd1/machines/x/y":          kindUnknown,
		"/org/diskd/Diskd1/block_devices":         kindInner,
		"/org/diskd/Diskd1/block_devices/a_loop0": kindBlock,
		"/org/diskd/Diskd1/Other":                 kindUnknown,
		"/org/freedesktop":                        kindUnknown,
	} {
		if got := classify(p); got != want {
			t.Errorf("classify(%s) = %d, want %d", p, got, want)
		}
	}
}
