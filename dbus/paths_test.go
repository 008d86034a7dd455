package dbus

import (
	"strings"
	"testing"

	godbus "github.com/godbus/dbus/v5"

	"github.com/diskd/diskd/pkg/disk"
)

func TestEscapePathElement(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"loop0", "loop0"},
		{"nvme0n1p2", "nvme0n1p2"},
		{"dm-0", "dm_2d0"},
		{"sda_1", "sda_5f1"},
		{"md/root", "md_2froot"},
		{"a b", "a_20b"},
		{"é", "_c3_a9"},
		{"\x00\xff", "_00_ff"},
		{"0123456789abcdef0123456789abcdef", "0123456789abcdef0123456789abcdef"},
	} {
		got := EscapePathElement(tc.in)
		if got != tc.want {
			t.Errorf("EscapePathElement(%q) = %q, want %q", tc.in, got, tc.want)
		}
		back, err := UnescapePathElement(got)
		if err != nil || back != tc.in {
			t.Errorf("UnescapePathElement(%q) = %q, %v; want %q", got, back, err, tc.in)
		}
		if !godbus.ObjectPath("/" + got).IsValid() {
			t.Errorf("/%s is not a valid object path", got)
		}
	}
}

func TestUnescapePathElementRejects(t *testing.T) {
	for _, in := range []string{"_", "a_", "a_2", "_zz", "_2D", "a-b", "a.b"} {
		if got, err := UnescapePathElement(in); err == nil {
			t.Errorf("UnescapePathElement(%q) = %q, want an error", in, got)
		}
	}
}

func FuzzEscapeRoundTrip(f *testing.F) {
	for _, s := range []string{"loop0", "dm-0", "_", "__5f", "\x00", "é/ü"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if s == "" {
			return
		}
		e := EscapePathElement(s)
		if !godbus.ObjectPath("/" + e).IsValid() {
			t.Fatalf("escape(%q) = %q is not a valid path element", s, e)
		}
		back, err := UnescapePathElement(e)
		if err != nil || back != s {
			t.Fatalf("round trip of %q: %q, %v", s, back, err)
		}
	})
}

func TestObjectPaths(t *testing.T) {
	const node = disk.NodeID("0123456789abcdef0123456789abcdef")
	for _, tc := range []struct {
		got  godbus.ObjectPath
		want string
	}{
		{MachinePath(node), "/org/diskd/Diskd1/machines/0123456789abcdef0123456789abcdef"},
		{BlockPath("uuid:1a2b-3c4d"), "/org/diskd/Diskd1/block_devices/uuid_3a1a2b_2d3c4d"},
		{BlockPath(disk.CloneKey("uuid:1a2b", node, "dm-1")), "/org/diskd/Diskd1/block_devices/uuid_3a1a2b_400123456789abcdef0123456789abcdef_2fdm_2d1"},
		{BlockPath("weak:" + disk.Key(node) + "/sdd/1024"), "/org/diskd/Diskd1/block_devices/weak_3a0123456789abcdef0123456789abcdef_2fsdd_2f1024"},
	} {
		if string(tc.got) != tc.want {
			t.Errorf("got %s, want %s", tc.got, tc.want)
		}
		if !tc.got.IsValid() {
			t.Errorf("%s is not a valid object path", tc.got)
		}
	}
	id, err := NodeFromMachinePath(MachinePath(node))
	if err != nil || id != node {
		t.Errorf("NodeFromMachinePath = %q, %v", id, err)
	}
	for _, bad := range []godbus.ObjectPath{"/org/diskd/Diskd1/machines", "/org/diskd/Diskd1/machines/", "/org/diskd/Diskd1/machines/a/b", "/x/y", "/org/diskd/Diskd1/machines/a-b"} {
		if _, err := NodeFromMachinePath(bad); err == nil {
			t.Errorf("NodeFromMachinePath(%q) succeeded", bad)
		}
	}
	// Distinct keys never share a path, even when names look like escapes,
	// and every path gives its key back.
	seen := map[godbus.ObjectPath]disk.Key{}
	for _, name := range []string{"a_5fb", "a_b", "a-b", "a_2db", "loop0", "loop_0"} {
		for _, k := range []disk.Key{disk.Key("uuid:" + name), disk.CloneKey("uuid:x", node, name)} {
			p := BlockPath(k)
			if prev, dup := seen[p]; dup {
				t.Errorf("%v and %v share %s", prev, k, p)
			}
			seen[p] = k
			if !strings.HasPrefix(string(p), BlockDevicesPath+"/") || !p.IsValid() {
				t.Errorf("bad path %s", p)
			}
			if back, err := KeyFromBlockPath(p); err != nil || back != k {
				t.Errorf("KeyFromBlockPath(%s) = %q, %v; want %q", p, back, err, k)
			}
		}
	}
	for _, bad := range []godbus.ObjectPath{BlockDevicesPath, BlockDevicesPath + "/", BlockDevicesPath + "/a/b", MachinesPath + "/x", BlockDevicesPath + "/a-b"} {
		if _, err := KeyFromBlockPath(bad); err == nil {
			t.Errorf("KeyFromBlockPath(%q) succeeded", bad)
		}
	}
}
