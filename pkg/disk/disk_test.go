package disk

import "testing"

func TestIdentity(t *testing.T) {
	for _, tc := range []struct {
		name string
		d    Disk
		want string
		weak bool
	}{
		{"filesystem UUID, lowered", Disk{UUID: "1A2B-3C4D", PartUUID: "P", Node: "n", Name: "sda1"}, "uuid:1a2b-3c4d", false},
		{"partition UUID when no filesystem UUID", Disk{PartUUID: "ABCD0001-01", Node: "n", Name: "sda1"}, "partuuid:abcd0001-01", false},
		{"neither: weak, bound to node, name and size", Disk{Node: "n", Name: "sdd", Size: 8 << 30}, "weak:n/sdd/8589934592", true},
		{"label alone does not identify", Disk{Label: "DATA", Node: "n", Name: "loop1", Size: 1}, "weak:n/loop1/1", true},
	} {
		d := tc.d
		d.ID = Identity(&d)
		if d.ID != tc.want || d.Weak() != tc.weak {
			t.Errorf("%s: Identity = %q weak=%v, want %q weak=%v", tc.name, d.ID, d.Weak(), tc.want, tc.weak)
		}
		if d.Key() != Key(tc.want) || d.Key().IsClone() {
			t.Errorf("%s: Key = %q, want the identity", tc.name, d.Key())
		}
	}
	k := CloneKey("uuid:x", "n", "loop2")
	if k != "uuid:x@n/loop2" || !k.IsClone() {
		t.Errorf("CloneKey = %q", k)
	}
	d := Disk{UUID: "x", Row: k}
	if d.Key() != k {
		t.Errorf("Key ignores Row: %q", d.Key())
	}
}
