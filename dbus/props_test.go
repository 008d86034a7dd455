package dbus

import (
	"flag"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	godbus "github.com/godbus/dbus/v5"

	"github.com/diskd/diskd/pkg/disk"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

const testNode = disk.NodeID("0123456789abcdef0123456789abcdef")

func fixtureDisks() []disk.Disk {
	t0 := time.Date(2025, 3, 1, 12, 0, 0, 123456000, time.UTC).Local() // decoding gives local times
	ds := []disk.Disk{
		{Node: testNode, Host: "alpha", Name: "loop3", Device: "/dev/loop3", MajMin: "7:3",
			UUID: "6f1c2f1e-7a43-4d65-9f0e-3d6a1e2b9c11", Label: "BACKUP", Type: "ext4", Usage: "filesystem",
			Size: 64 << 20, Mounts: []string{"/mnt/backup", "/srv/b ck"}, Present: true,
			FirstSeen: t0, LastSeen: t0.Add(time.Hour)},
		{Node: testNode, Host: "alpha", Name: "sdb1", Device: "/dev/sdb1", MajMin: "8:17",
			PartUUID: "3F2504E0-01", PartLabel: "data", Type: "swap", Size: 1 << 30,
			ReadOnly: true, Removable: true, FirstSeen: t0, LastSeen: t0},
		{Node: testNode, Host: "alpha", Name: "dm-0", Device: "/dev/dm-0", MajMin: "253:0",
			Type: "crypto_LUKS", Usage: "crypto", Present: true, FirstSeen: t0, LastSeen: t0},
		{Node: testNode, Host: "beta", Name: "vdz", Device: "/dev/vdz", MajMin: "259:1048575",
			Type: "xfs", Label: "tab\there", Present: true, FirstSeen: t0, LastSeen: t0},
		{Node: testNode, Name: "loop9", Device: "/dev/loop9"},
	}
	for i := range ds {
		ds[i].ID = disk.Identity(&ds[i])
	}
	ds[3].NotUnique = true
	return ds
}

func TestDiskRoundTrip(t *testing.T) {
	for _, d := range fixtureDisks() {
		t.Run(d.Name, func(t *testing.T) {
			ifs := BlockInterfaces(&d)
			got, err := DiskFromInterfaces(ifs)
			if err != nil {
				t.Fatal(err)
			}
			want := d
			if len(want.Mounts) == 0 {
				want.Mounts = []string{}
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("round trip:\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestTimesAreMicroseconds(t *testing.T) {
	ts := time.Date(2025, 3, 1, 12, 0, 0, 123456789, time.UTC)
	if got, want := Usec(ts), uint64(ts.UnixNano()/1000); got != want {
		t.Errorf("Usec = %d, want %d", got, want)
	}
	if !FromUsec(Usec(ts)).Equal(ts.Truncate(time.Microsecond)) {
		t.Errorf("FromUsec(Usec(t)) = %v", FromUsec(Usec(ts)))
	}
	if Usec(time.Time{}) != 0 || !FromUsec(0).IsZero() {
		t.Error("the zero time must map to 0 and back")
	}
}

func TestHasFilesystem(t *testing.T) {
	for _, tc := range []struct {
		d    disk.Disk
		want bool
	}{
		{disk.Disk{Usage: "filesystem", Type: "ext4"}, true},
		{disk.Disk{Type: "ext4"}, true},
		{disk.Disk{Type: "vfat"}, true},
		{disk.Disk{Type: "swap"}, false},
		{disk.Disk{Type: "crypto_LUKS"}, false},
		// Types the bus once took for filesystems (it had its own list).
		{disk.Disk{Type: "ceph_bluestore"}, false},
		{disk.Disk{Type: "LVM1_member"}, false},
		{disk.Disk{Type: "isw_raid_member"}, false},
		{disk.Disk{Type: "vdo"}, false},
		{disk.Disk{Type: "DM_integrity"}, false},
		{disk.Disk{Type: "jbd"}, false},
		{disk.Disk{Usage: "crypto", Type: "crypto_LUKS"}, false},
		{disk.Disk{Usage: "raid", Type: "zfs_member", Mounts: []string{"/x"}}, true},
		{disk.Disk{}, false},
		{disk.Disk{Mounts: []string{"/mnt"}}, true},
	} {
		if got := HasFilesystem(&tc.d); got != tc.want {
			t.Errorf("HasFilesystem(usage=%q type=%q mounts=%v) = %v", tc.d.Usage, tc.d.Type, tc.d.Mounts, got)
		}
	}
}

func TestDecodeRejectsWrongTypes(t *testing.T) {
	d := fixtureDisks()[0]
	ifs := BlockInterfaces(&d)
	ifs[BlockInterface]["Size"] = godbus.MakeVariant("big")
	if _, err := DiskFromInterfaces(ifs); err == nil || !strings.Contains(err.Error(), "Size") {
		t.Errorf("wrong type for Size: err = %v", err)
	}
	if _, err := DiskFromInterfaces(Ifaces{}); err == nil {
		t.Error("an object without Block decoded")
	}
	p := MachineProperties(&disk.Node{ID: testNode})
	p["Online"] = godbus.MakeVariant(uint32(1))
	if _, err := NodeFromProperties(p); err == nil {
		t.Error("wrong type for Online decoded")
	}
}

func TestNodeRoundTrip(t *testing.T) {
	for _, n := range []disk.Node{
		{ID: testNode, Name: "alpha", Addresses: []string{"10.0.0.1", "fe80::1%eth0"}, Local: true, Online: true,
			LastSeen: time.UnixMicro(1_700_000_000_000_001), Disks: 3},
		{ID: "ffffffffffffffffffffffffffffffff", Name: "beta"},
	} {
		got, err := NodeFromProperties(MachineProperties(&n))
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, n) {
			t.Errorf("round trip:\n got %+v\nwant %+v", got, n)
		}
	}
}

// TestPropertiesGolden pins the exact D-Bus values (types and encodings:
// NUL-terminated ay, aay, microseconds, dev_t) for the fixtures.
func TestPropertiesGolden(t *testing.T) {
	var b strings.Builder
	for _, d := range fixtureDisks() {
		fmt.Fprintf(&b, "%s\n", BlockPath(d.Key()))
		writeIfaces(&b, BlockInterfaces(&d))
	}
	n := disk.Node{ID: testNode, Name: "alpha", Addresses: []string{"10.0.0.1"}, Local: true, Online: true,
		LastSeen: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC), Disks: 2}
	fmt.Fprintf(&b, "%s\n", MachinePath(n.ID))
	writeIfaces(&b, Ifaces{MachineInterface: MachineProperties(&n)})
	fmt.Fprintf(&b, "%s\n", ManagerPath)
	writeIfaces(&b, Ifaces{ManagerInterface: ManagerProperties("1.2.3", &n)})
	golden(t, "properties.golden", b.String())
}

func writeIfaces(b *strings.Builder, ifs Ifaces) {
	for _, in := range slices.Sorted(maps.Keys(ifs)) {
		for _, p := range slices.Sorted(maps.Keys(ifs[in])) {
			v := ifs[in][p]
			fmt.Fprintf(b, "  %s.%s %s %s\n", in, p, v.Signature(), v.String())
		}
	}
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	p := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(p, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs (go test -update rewrites it):\n--- got\n%s\n--- want\n%s", p, got, want)
	}
}
