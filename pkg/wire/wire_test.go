package wire

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/diskd/diskd/pkg/disk"
)

var update = flag.Bool("update", false, "rewrite golden files and the fuzz seed corpus")

var (
	testNode     = NodeID{0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54, 0x32, 0x10}
	testInstance = uint64(0x0000018f_2a3b_4c5d)
)

func testKeys(t testing.TB, text string) *Keyring {
	t.Helper()
	kr, err := ParseKeys(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

const key1 = "1 0123456789abcdef0123456789abcdef\n"
const key2 = "2 fedcba9876543210fedcba9876543210\n"

// sampleDisks returns n realistic disks, with a mountpoint on every third.
func sampleDisks(n int) []disk.Disk {
	ds := make([]disk.Disk, n)
	for i := range ds {
		ds[i] = disk.Disk{
			Name: fmt.Sprintf("loop%d", i), Device: fmt.Sprintf("/dev/loop%d", i), MajMin: fmt.Sprintf("7:%d", i),
			UUID: fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i), Label: fmt.Sprintf("DISK_%04d", i),
			Type: "ext4", Usage: "filesystem", Size: 64 << 20, Removable: i%2 == 0,
		}
		if i%3 == 0 {
			ds[i].Mounts = []string{fmt.Sprintf("/mnt/disk%d", i)}
		}
	}
	return ds
}

// maxDisk has every field at its limit.
func maxDisk(i int) disk.Disk {
	return disk.Disk{
		Name: fmt.Sprintf("%0*d", MaxDiskName, i), Device: "/" + strings.Repeat("d", MaxDevice-1),
		MajMin: strings.Repeat("9", MaxMajMin), UUID: strings.Repeat("u", MaxUUID), PartUUID: strings.Repeat("p", MaxUUID),
		Label: strings.Repeat("é", MaxLabel/2), PartLabel: strings.Repeat("L", MaxLabel),
		Type: strings.Repeat("t", MaxType), Usage: strings.Repeat("u", MaxType), Size: 1<<64 - 1, ReadOnly: true, Removable: true,
		Mounts: []string{"/" + strings.Repeat("m", MaxMountPath-1), "/" + strings.Repeat("n", MaxMountPath-1), "/mnt/c"},
	}
}

// stripped returns what a receiver should end up with for ds.
func stripped(ds []disk.Disk, node disk.NodeID, host string) []disk.Disk {
	out := make([]disk.Disk, len(ds))
	for i, d := range ds {
		w, _, err := fromDisk(&d)
		if err != nil {
			panic(err)
		}
		out[i] = w.ToDisk(node, host)
	}
	return out
}

func TestRoundTrip(t *testing.T) {
	for _, keyed := range []bool{false, true} {
		var kr *Keyring
		if keyed {
			kr = testKeys(t, key1)
		}
		enc := NewEncoder(testNode, testInstance, kr)
		dec := NewDecoder(kr)
		inv := NewInventory(sampleDisks(3))
		addrs := []netip.Addr{netip.MustParseAddr("10.99.0.1"), netip.MustParseAddr("fe80::1")}
		tests := []struct {
			name string
			b    []byte
			want *Packet
		}{
			{"heartbeat", enc.Heartbeat(7, Heartbeat{Name: "h1", Digest: inv.Digest(), Interval: 10 * time.Second, Addrs: addrs}),
				&Packet{Header: Header{Type: TypeHeartbeat, Seq: 1, Generation: 7},
					Heartbeat: &Heartbeat{Name: "h1", Digest: inv.Digest(), Interval: 10 * time.Second, Addrs: addrs}}},
			{"query all", enc.Query(7, nil), &Packet{Header: Header{Type: TypeQuery, Seq: 2, Generation: 7}, Query: &Query{}}},
			{"query two", enc.Query(7, []NodeID{{1}, {2}}),
				&Packet{Header: Header{Type: TypeQuery, Seq: 3, Generation: 7}, Query: &Query{Targets: []NodeID{{1}, {2}}}}},
			{"goodbye", enc.Goodbye(8), &Packet{Header: Header{Type: TypeGoodbye, Seq: 4, Generation: 8}}},
		}
		for _, tt := range tests {
			t.Run(fmt.Sprintf("%s/keyed=%v", tt.name, keyed), func(t *testing.T) {
				p, err := dec.Decode(tt.b)
				if err != nil {
					t.Fatal(err)
				}
				tt.want.Node, tt.want.Instance = testNode, testInstance
				if keyed {
					tt.want.KeyID = 1
				}
				if !reflect.DeepEqual(p, tt.want) {
					t.Errorf("got  %+v\nwant %+v", p, tt.want)
				}
			})
		}
	}
}

func TestAnnounceSizes(t *testing.T) {
	many := make([]disk.Disk, 300)
	for i := range many {
		many[i] = maxDisk(i)
	}
	tests := []struct {
		name       string
		disks      []disk.Disk
		wantChunks int // 0: don't check
	}{
		{"empty", nil, 1},
		{"one", sampleDisks(1), 1},
		{"ten", sampleDisks(10), 1},
		{"1000", sampleDisks(1000), 0},
		{"4096", sampleDisks(MaxDisks), 0},
		{"max fields", many, 300},
	}
	for _, keyed := range []bool{false, true} {
		var kr *Keyring
		if keyed {
			kr = testKeys(t, key1)
		}
		for _, tt := range tests {
			t.Run(fmt.Sprintf("%s/keyed=%v", tt.name, keyed), func(t *testing.T) {
				inv := NewInventory(tt.disks)
				if inv.Skipped != 0 {
					t.Fatalf("skipped %d", inv.Skipped)
				}
				enc := NewEncoder(testNode, testInstance, kr)
				dgs := enc.Announce(3, strings.Repeat("n", MaxNodeName), inv)
				if tt.wantChunks > 0 && len(dgs) != tt.wantChunks {
					t.Errorf("%d datagrams, want %d", len(dgs), tt.wantChunks)
				}
				largest := 0
				for _, b := range dgs {
					largest = max(largest, len(b))
				}
				if largest > MaxDatagram {
					t.Fatalf("datagram of %d bytes", largest)
				}
				t.Logf("%d disks: %d datagrams, largest %d bytes", len(tt.disks), len(dgs), largest)
				// Deliver in reverse order: the assembler must not care.
				asm := NewAssembler(AssemblerLimits{})
				dec := NewDecoder(kr)
				var got *Complete
				for i := len(dgs) - 1; i >= 0; i-- {
					p, err := dec.Decode(dgs[i])
					if err != nil {
						t.Fatal(err)
					}
					c, err := asm.Add(time.Now(), p.Header, p.Announce)
					if err != nil {
						t.Fatal(err)
					}
					if (c != nil) != (i == 0) {
						t.Fatalf("chunk %d: complete=%v", i, c != nil)
					}
					got = c
				}
				want := stripped(tt.disks, testNode.Domain(), strings.Repeat("n", MaxNodeName))
				if len(want) == 0 {
					want = []disk.Disk{}
				}
				sortByName(want)
				if len(got.Disks) != len(want) {
					t.Fatalf("%d disks back, want %d", len(got.Disks), len(want))
				}
				for i := range want {
					if !disk.SameDevice(&got.Disks[i], &want[i]) && !(tt.name == "max fields") {
						t.Fatalf("disk %d: got %+v want %+v", i, got.Disks[i], want[i])
					}
				}
				if got.Digest != inv.Digest() || got.Generation != 3 {
					t.Errorf("digest %v gen %d", got.Digest, got.Generation)
				}
			})
		}
	}
}

func sortByName(ds []disk.Disk) {
	for i := 1; i < len(ds); i++ {
		for j := i; j > 0 && ds[j].Name < ds[j-1].Name; j-- {
			ds[j], ds[j-1] = ds[j-1], ds[j]
		}
	}
}

func TestInventoryLimits(t *testing.T) {
	long := strings.Repeat("x", 300)
	tests := []struct {
		name                 string
		in                   disk.Disk
		skipped, trimmed     int
		wantLabel            string
		wantMounts, maxBytes int
	}{
		{"fine", sampleDisks(1)[0], 0, 0, "DISK_0000", 1, MaxDiskEntry},
		{"long name", disk.Disk{Name: long}, 1, 0, "", 0, 0},
		{"slash in name", disk.Disk{Name: "a/b"}, 1, 0, "", 0, 0},
		{"empty name", disk.Disk{Device: "/dev/x"}, 1, 0, "", 0, 0},
		{"long uuid", disk.Disk{Name: "a", UUID: long}, 1, 0, "", 0, 0},
		{"long label cut at rune", disk.Disk{Name: "a", Label: "a" + strings.Repeat("é", 200)}, 0, 1, "a" + strings.Repeat("é", 127), 0, MaxDiskEntry},
		{"NUL in label", disk.Disk{Name: "a", Label: "x\x00y"}, 0, 0, "xy", 0, MaxDiskEntry},
		{"too many mounts", disk.Disk{Name: "a", Mounts: strings.Split(strings.Repeat("/m,", 20), ",")[:20]}, 0, 1, "", MaxMounts, MaxDiskEntry},
		{"mounts trimmed to fit", maxDisk(1), 0, 1, strings.Repeat("é", MaxLabel/2), 0, MaxDiskEntry},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inv := NewInventory([]disk.Disk{tt.in})
			if inv.Skipped != tt.skipped || inv.Trimmed != tt.trimmed {
				t.Fatalf("skipped %d trimmed %d, want %d %d", inv.Skipped, inv.Trimmed, tt.skipped, tt.trimmed)
			}
			if tt.skipped > 0 {
				return
			}
			b := inv.entries[0]
			if len(b) > tt.maxBytes {
				t.Errorf("entry of %d bytes", len(b))
			}
			var w Disk
			if err := decMode.Unmarshal(b, &w); err != nil {
				t.Fatal(err)
			}
			if err := w.validate(); err != nil {
				t.Errorf("sender made an entry receivers refuse: %v", err)
			}
			if w.Label != tt.wantLabel {
				t.Errorf("label %q, want %q", w.Label, tt.wantLabel)
			}
			if tt.wantMounts > 0 && len(w.Mounts) != tt.wantMounts {
				t.Errorf("%d mounts, want %d", len(w.Mounts), tt.wantMounts)
			}
		})
	}
	// Duplicate names: one kept.
	d := sampleDisks(1)
	if inv := NewInventory(append(d, d[0])); inv.Len() != 1 || inv.Skipped != 1 {
		t.Errorf("duplicate: len %d skipped %d", inv.Len(), inv.Skipped)
	}
	// Order does not change the digest.
	a, b := sampleDisks(5), sampleDisks(5)
	b[0], b[4] = b[4], b[0]
	if NewInventory(a).Digest() != NewInventory(b).Digest() {
		t.Error("digest depends on input order")
	}
	b[1].Label = "changed"
	if NewInventory(a).Digest() == NewInventory(b).Digest() {
		t.Error("digest ignores a label change")
	}
}

// The idle goal: a peer with 100 disks heartbeating every 10 s sends at
// most 1 KiB a minute per address family, tag included: always counting
// UDP payload, and counting IPv4/IPv6 and UDP headers too for node names
// up to 32 bytes.
func TestHeartbeatBudget(t *testing.T) {
	enc := NewEncoder(testNode, testInstance, testKeys(t, key1))
	inv := NewInventory(sampleDisks(100))
	for _, tt := range []struct {
		name    string
		nameLen int
		hdr     int
	}{{"payload, longest name", MaxNodeName, 0}, {"IPv4, 32-byte name", 32, 20 + 8}, {"IPv6, 32-byte name", 32, 40 + 8}} {
		b := enc.Heartbeat(1<<40, Heartbeat{Name: strings.Repeat("h", tt.nameLen), Digest: inv.Digest(), Interval: 10 * time.Second})
		perMin := 6 * (len(b) + tt.hdr)
		t.Logf("%s: heartbeat %d bytes payload, %d bytes/min", tt.name, len(b), perMin)
		if perMin > 1024 {
			t.Errorf("%s: %d bytes/min > 1024", tt.name, perMin)
		}
	}
}

// build makes a datagram with an arbitrary body, tagged with kr's first key.
func build(typ Type, body []byte, kr *Keyring) []byte {
	b := make([]byte, HeaderSize)
	copy(b, Magic)
	b[4], b[5] = Version, byte(typ)
	copy(b[8:], testNode[:])
	binary.BigEndian.PutUint64(b[24:], testInstance)
	binary.BigEndian.PutUint64(b[32:], 1)
	b = append(b, body...)
	if kr != nil {
		b[6], b[7] = flagTagged, kr.keys[0].id
		b = append(b, tag(kr.keys[0].secret, b)...)
	}
	return b
}

func mustHex(s string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		panic(err)
	}
	return b
}

func TestDecodeDrops(t *testing.T) {
	k1, k2, k12 := testKeys(t, key1), testKeys(t, key2), testKeys(t, key2+key1)
	enc := NewEncoder(testNode, testInstance, nil)
	encK := NewEncoder(testNode, testInstance, k1)
	hb := enc.Heartbeat(1, Heartbeat{Name: "x", Interval: time.Second})
	hbK := encK.Heartbeat(1, Heartbeat{Name: "x", Interval: time.Second})
	flip := func(b []byte, i int) []byte {
		c := bytes.Clone(b)
		c[i] ^= 1
		return c
	}
	set := func(b []byte, i int, v byte) []byte {
		c := bytes.Clone(b)
		c[i] = v
		return c
	}
	// a5 = map of 5: the announce keys with a disk entry swapped in.
	ann := func(chunk, chunks int, disk string) []byte {
		return mustHex(fmt.Sprintf("a5 01 61 78 02 48 0000000000000000 03 %02x 04 %02x 05 81 %s", chunk, chunks, disk))
	}
	tests := []struct {
		name string
		keys *Keyring
		b    []byte
		want Reason
	}{
		{"ok", nil, hb, ReasonNone},
		{"ok keyed", k1, hbK, ReasonNone},
		{"ok keyed, rotation", k12, hbK, ReasonNone},
		{"empty", nil, nil, ReasonTooShort},
		{"header only", nil, hb[:HeaderSize], ReasonTooShort},
		{"too large", nil, append(bytes.Clone(hb), make([]byte, MaxDatagram)...), ReasonTooLarge},
		{"magic", nil, flip(hb, 0), ReasonBadMagic},
		{"legacy diskd", nil, append([]byte("diskd:--- []\n"), make([]byte, 60)...), ReasonBadMagic},
		{"version", nil, set(hb, 4, 2), ReasonBadVersion},
		{"untagged, key required", k1, hb, ReasonUntagged},
		{"tagged, no key", nil, hbK, ReasonUnexpectedTag},
		{"wrong key ID", k2, hbK, ReasonUnknownKey},
		{"same ID other secret", testKeys(t, "1 aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"), hbK, ReasonBadTag},
		{"header bit flipped", k1, flip(hbK, 30), ReasonBadTag},
		{"body bit flipped", k1, flip(hbK, HeaderSize+2), ReasonBadTag},
		{"tag bit flipped", k1, flip(hbK, len(hbK)-1), ReasonBadTag},
		{"tag cut", k1, hbK[:len(hbK)-1], ReasonBadTag},
		{"key ID changed", k12, set(hbK, 7, 2), ReasonBadTag},
		{"unknown type", nil, build(9, []byte{0xa0}, nil), ReasonUnknownType},
		{"unknown type 255", nil, build(255, []byte{0xa0}, nil), ReasonUnknownType},
		{"unknown type keyed", k1, build(0, []byte{0xa0}, k1), ReasonUnknownType},
		{"body null", nil, build(TypeGoodbye, []byte{0xf6}, nil), ReasonBadBody},
		{"body array", nil, build(TypeGoodbye, []byte{0x80}, nil), ReasonBadBody},
		{"body truncated", nil, hb[:len(hb)-1], ReasonBadBody},
		{"trailing byte", nil, append(bytes.Clone(hb), 0), ReasonBadBody},
		{"goodbye", nil, build(TypeGoodbye, []byte{0xa0}, nil), ReasonNone},
		{"goodbye unknown key ignored", nil, build(TypeGoodbye, mustHex("a1 1863 00"), nil), ReasonNone},
		{"duplicate key", nil, build(TypeQuery, mustHex("a2 01 80 01 80"), nil), ReasonBadBody},
		{"indefinite map", nil, build(TypeQuery, mustHex("bf ff"), nil), ReasonBadBody},
		{"indefinite array", nil, build(TypeQuery, mustHex("a1 01 9f ff"), nil), ReasonBadBody},
		{"CBOR tag", nil, build(TypeQuery, mustHex("a1 01 c1 80"), nil), ReasonBadBody},
		{"deep nesting", nil, build(TypeQuery, mustHex("a1 1863 81818181818181818100"), nil), ReasonBadBody},
		{"wrong type", nil, build(TypeQuery, mustHex("a1 01 01"), nil), ReasonBadBody},
		{"invalid UTF-8 name", nil, build(TypeHeartbeat, mustHex("a3 01 61 ff 02 48 0000000000000000 03 19 03e8"), nil), ReasonBadBody},
		{"name too long", nil, build(TypeHeartbeat, append(append(mustHex("a3 01 78 41"), bytes.Repeat([]byte("n"), 65)...), mustHex("02 48 0000000000000000 03 19 03e8")...), nil), ReasonBadField},
		{"heartbeat digest short", nil, build(TypeHeartbeat, mustHex("a3 01 61 78 02 47 00000000000000 03 19 03e8"), nil), ReasonBadField},
		{"heartbeat no digest", nil, build(TypeHeartbeat, mustHex("a2 01 61 78 03 19 03e8"), nil), ReasonBadField},
		{"heartbeat interval 0", nil, build(TypeHeartbeat, mustHex("a2 01 61 78 02 48 0000000000000000"), nil), ReasonBadField},
		{"heartbeat interval huge", nil, build(TypeHeartbeat, mustHex("a3 01 61 78 02 48 0000000000000000 03 1b ffffffffffffffff"), nil), ReasonBadField},
		{"heartbeat address of 5 bytes", nil, build(TypeHeartbeat, mustHex("a4 01 61 78 02 48 0000000000000000 03 19 03e8 04 81 45 0102030405"), nil), ReasonBadField},
		{"query 17 targets", nil, build(TypeQuery, append(mustHex("a1 01 91"), bytes.Repeat(mustHex("50 00000000000000000000000000000000"), 17)...), nil), ReasonBadField},
		{"query target short", nil, build(TypeQuery, mustHex("a1 01 81 41 00"), nil), ReasonBadField},
		{"announce ok", nil, build(TypeAnnounce, ann(0, 1, "a1 01 61 61"), nil), ReasonNone},
		{"announce chunk >= chunks", nil, build(TypeAnnounce, ann(1, 1, "a1 01 61 61"), nil), ReasonBadField},
		{"announce zero chunks", nil, build(TypeAnnounce, ann(0, 0, "a1 01 61 61"), nil), ReasonBadField},
		{"announce too many chunks", nil, build(TypeAnnounce, mustHex("a5 01 61 78 02 48 0000000000000000 03 00 04 19 1001 05 80"), nil), ReasonBadField},
		{"disk without name", nil, build(TypeAnnounce, ann(0, 1, "a1 02 61 61"), nil), ReasonBadField},
		{"disk name with slash", nil, build(TypeAnnounce, ann(0, 1, "a1 01 63 612f62"), nil), ReasonBadField},
		{"disk NUL in label", nil, build(TypeAnnounce, ann(0, 1, "a2 01 61 61 06 61 00"), nil), ReasonBadField},
		{"disk label too long", nil, build(TypeAnnounce, ann(0, 1, "a2 01 61 61 06 79 0101"+strings.Repeat("61", 257)), nil), ReasonBadField},
		{"disk 17 mounts", nil, build(TypeAnnounce, ann(0, 1, "a2 01 61 61 0d 91"+strings.Repeat("61 2f", 17)), nil), ReasonBadField},
		{"disk size negative", nil, build(TypeAnnounce, ann(0, 1, "a2 01 61 61 0a 20"), nil), ReasonBadBody},
		{"disk not a map", nil, build(TypeAnnounce, ann(0, 1, "01"), nil), ReasonBadBody},
		{"disk null", nil, build(TypeAnnounce, ann(0, 1, "f6"), nil), ReasonBadField},
		{"disk unknown key ignored", nil, build(TypeAnnounce, ann(0, 1, "a2 01 61 61 1863 82 01 02"), nil), ReasonNone},
		// Control characters: C0 (ESC, TAB, LF), DEL and C1 (U+009B, CSI
		// by itself) drop every name, path and identifier; labels keep them.
		{"heartbeat name ESC sequence", nil, build(TypeHeartbeat, mustHex("a3 01 65 1b5b33316d 02 48 0000000000000000 03 19 03e8"), nil), ReasonControlChar},
		{"heartbeat name C1 CSI", nil, build(TypeHeartbeat, mustHex("a3 01 62 c29b 02 48 0000000000000000 03 19 03e8"), nil), ReasonControlChar},
		{"heartbeat name DEL", nil, build(TypeHeartbeat, mustHex("a3 01 61 7f 02 48 0000000000000000 03 19 03e8"), nil), ReasonControlChar},
		{"heartbeat name TAB", nil, build(TypeHeartbeat, mustHex("a3 01 61 09 02 48 0000000000000000 03 19 03e8"), nil), ReasonControlChar},
		{"heartbeat name NUL", nil, build(TypeHeartbeat, mustHex("a3 01 61 00 02 48 0000000000000000 03 19 03e8"), nil), ReasonControlChar},
		{"heartbeat name U+FFFD and U+00A0 fine", nil, build(TypeHeartbeat, mustHex("a3 01 65 efbfbdc2a0 02 48 0000000000000000 03 19 03e8"), nil), ReasonNone},
		{"announce node name ESC", nil, build(TypeAnnounce, mustHex("a5 01 61 1b 02 48 0000000000000000 03 00 04 01 05 81 a1 01 61 61"), nil), ReasonControlChar},
		{"disk name C1", nil, build(TypeAnnounce, ann(0, 1, "a1 01 62 c29b"), nil), ReasonControlChar},
		{"disk device ESC", nil, build(TypeAnnounce, ann(0, 1, "a2 01 61 61 02 62 1b5b"), nil), ReasonControlChar},
		{"disk majmin LF", nil, build(TypeAnnounce, ann(0, 1, "a2 01 61 61 03 63 373a0a"), nil), ReasonControlChar},
		{"disk uuid ESC", nil, build(TypeAnnounce, ann(0, 1, "a2 01 61 61 04 61 1b"), nil), ReasonControlChar},
		{"disk partuuid DEL", nil, build(TypeAnnounce, ann(0, 1, "a2 01 61 61 05 61 7f"), nil), ReasonControlChar},
		{"disk type C1", nil, build(TypeAnnounce, ann(0, 1, "a2 01 61 61 08 62 c285"), nil), ReasonControlChar},
		{"disk usage CR", nil, build(TypeAnnounce, ann(0, 1, "a2 01 61 61 09 61 0d"), nil), ReasonControlChar},
		{"disk mountpoint ESC", nil, build(TypeAnnounce, ann(0, 1, "a2 01 61 61 0d 82 61 2f 62 2f1b"), nil), ReasonControlChar},
		{"disk label with controls kept", nil, build(TypeAnnounce, ann(0, 1, "a2 01 61 61 06 64 1b0ac29b"), nil), ReasonNone},
		{"disk partlabel with controls kept", nil, build(TypeAnnounce, ann(0, 1, "a2 01 61 61 07 62 7f09"), nil), ReasonNone},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := NewDecoder(tt.keys).Decode(tt.b)
			if got := ReasonOf(err); got != tt.want {
				t.Fatalf("reason %v, want %v (err %v)", got, tt.want, err)
			}
			if err == nil && p == nil {
				t.Fatal("nil packet without error")
			}
			if err != nil {
				var de *DropError
				if !errors.As(err, &de) {
					t.Errorf("untyped error %v", err)
				}
			}
		})
	}
}

// TestSenderNeutralisesControls: what a daemon sends never holds what
// receivers drop: a node name's control characters are sent as U+FFFD, a
// mountpoint or type with one is left out, a disk whose identifier holds
// one is not announced; labels go as they are.
func TestSenderNeutralisesControls(t *testing.T) {
	enc := NewEncoder(testNode, testInstance, nil)
	dec := NewDecoder(nil)
	p, err := dec.Decode(enc.Heartbeat(1, Heartbeat{Name: "\x1b[31mevil\u009b", Interval: time.Second}))
	if err != nil {
		t.Fatal(err)
	}
	if want := "\uFFFD[31mevil\uFFFD"; p.Heartbeat.Name != want {
		t.Errorf("name sent as %q, want %q", p.Heartbeat.Name, want)
	}
	disks := []disk.Disk{
		{Name: "a", Device: "/dev/a", Label: "L\x1b[2J\n\u009b", Type: "ext4\x1b", Mounts: []string{"/mnt/\x1b[31m", "/mnt/ok"}},
		{Name: "b", Device: "/dev/b\x1b"},
		{Name: "c\u0085", Device: "/dev/c"},
	}
	inv := NewInventory(disks)
	if inv.Len() != 1 || inv.Skipped != 2 || inv.Trimmed != 1 {
		t.Fatalf("announced %d, skipped %d, trimmed %d; want 1, 2, 1", inv.Len(), inv.Skipped, inv.Trimmed)
	}
	dgs := enc.Announce(1, "\x1bname", inv)
	p, err = dec.Decode(dgs[0])
	if err != nil {
		t.Fatalf("receiver drops what we sent: %v", err)
	}
	got := p.Announce.Disks[0]
	if got.Label != disks[0].Label || got.Type != "" || len(got.Mounts) != 1 || got.Mounts[0] != "/mnt/ok" {
		t.Errorf("sent %+v", got)
	}
}

func TestParseKeys(t *testing.T) {
	tests := []struct {
		name, text string
		ids        []uint8
		bad        bool
	}{
		{"one", key1, []uint8{1}, false},
		{"two with comments", "# rotation\n\n" + key2 + "  " + key1, []uint8{2, 1}, false},
		{"none", "# nothing\n", nil, true},
		{"three", key1 + key2 + "3 0123456789abcdef0123456789abcdef\n", nil, true},
		{"same id twice", key1 + "1 fedcba9876543210fedcba9876543210\n", nil, true},
		{"id 0", "0 0123456789abcdef0123456789abcdef\n", nil, true},
		{"id 256", "256 0123456789abcdef0123456789abcdef\n", nil, true},
		{"short secret", "1 0123456789abcde\n", nil, true},
		{"no id", "0123456789abcdef0123456789abcdef\n", nil, true},
		{"three fields", "1 0123456789abcdef0123456789abcdef x\n", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kr, err := ParseKeys(strings.NewReader(tt.text))
			if (err != nil) != tt.bad {
				t.Fatalf("err %v, want error %v", err, tt.bad)
			}
			if err == nil && !reflect.DeepEqual(kr.IDs(), tt.ids) {
				t.Errorf("ids %v, want %v", kr.IDs(), tt.ids)
			}
		})
	}
}

func TestLoadKeyFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "keys")
	if err := os.WriteFile(p, []byte(key1), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKeyFile(p); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKeyFile(p); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("world-readable key file: err %v", err)
	}
	if _, err := LoadKeyFile(filepath.Join(dir, "missing")); err == nil {
		t.Error("missing file accepted")
	}
}

func TestReplayWindow(t *testing.T) {
	tests := []struct {
		name string
		seqs []uint64
		want []Reason
	}{
		{"in order", []uint64{1, 2, 3}, []Reason{0, 0, 0}},
		{"duplicate", []uint64{5, 5}, []Reason{0, ReasonDuplicate}},
		{"reordered", []uint64{10, 8, 9, 8, 10}, []Reason{0, 0, 0, ReasonDuplicate, ReasonDuplicate}},
		{"edge of window", []uint64{1000, 1000 - WindowSize + 1, 1000 - WindowSize}, []Reason{0, 0, ReasonTooOld}},
		{"jump clears", []uint64{1, 2, 1 + WindowSize, 2 + WindowSize, 2}, []Reason{0, 0, 0, 0, ReasonTooOld}},
		{"slot reuse after advance", []uint64{3, 3 + WindowSize - 1, 3 + WindowSize, 3 + 2*WindowSize - 1}, []Reason{0, 0, 0, 0}},
		{"big jump", []uint64{1, 1 << 40, 1<<40 - 1, 1 << 40}, []Reason{0, 0, 0, ReasonDuplicate}},
		{"first may be anything", []uint64{1<<64 - 1, 1<<64 - 2}, []Reason{0, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var w ReplayWindow
			for i, s := range tt.seqs {
				if got := w.Accept(s); got != tt.want[i] {
					t.Fatalf("seq %d (#%d): %v, want %v", s, i, got, tt.want[i])
				}
			}
		})
	}
}

func TestInstanceOrder(t *testing.T) {
	t0 := time.Now()
	a, b := NewInstance(t0), NewInstance(t0.Add(time.Millisecond))
	if a >= b {
		t.Errorf("later start %x not greater than %x", b, a)
	}
	if got := InstanceStart(a); got.UnixMilli() != t0.UnixMilli() {
		t.Errorf("start %v, want %v", got, t0)
	}
}

func TestNodeID(t *testing.T) {
	id := disk.NodeID("0123456789abcdeffedcba9876543210")
	n, err := ParseNodeID(id)
	if err != nil || n != testNode || n.Domain() != id {
		t.Fatalf("%v %v", n, err)
	}
	for _, bad := range []disk.NodeID{"", "0123", "0123456789abcdeffedcba987654321g", id + "00"} {
		if _, err := ParseNodeID(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// goldens are fixed encodings: a change here changes the wire format and
// must be deliberate (go test -update rewrites them and the fuzz seeds).
func goldens(t testing.TB) map[string][]byte {
	out := map[string][]byte{}
	for _, keyed := range []bool{false, true} {
		var kr *Keyring
		suffix := ""
		if keyed {
			kr, suffix = testKeys(t, key1), "-keyed"
		}
		enc := NewEncoder(testNode, testInstance, kr)
		inv := NewInventory(sampleDisks(3))
		out["heartbeat"+suffix] = enc.Heartbeat(42, Heartbeat{Name: "dkd-h1", Digest: inv.Digest(), Interval: 10 * time.Second})
		for i, b := range enc.Announce(42, "dkd-h1", inv) {
			out[fmt.Sprintf("announce%d%s", i, suffix)] = b
		}
		out["query-all"+suffix] = enc.Query(42, nil)
		out["query-one"+suffix] = enc.Query(42, []NodeID{{0xaa, 0xbb}})
		out["goodbye"+suffix] = enc.Goodbye(42)
		d, ok := enc.Delta(43, "dkd-h1", 42, inv, NewInventory(changed(sampleDisks(4), 1)))
		if !ok {
			t.Fatal("no delta")
		}
		out["delta"+suffix] = d
	}
	return out
}

func hexLines(b []byte) string {
	var sb strings.Builder
	for i := 0; i < len(b); i += 32 {
		sb.WriteString(hex.EncodeToString(b[i:min(i+32, len(b))]))
		sb.WriteByte('\n')
	}
	return sb.String()
}

func TestGolden(t *testing.T) {
	for name, b := range goldens(t) {
		path := filepath.Join("testdata", "golden", name+".hex")
		seed := filepath.Join("testdata", "fuzz", "FuzzDecode", name)
		if *update {
			for _, d := range []string{filepath.Dir(path), filepath.Dir(seed)} {
				if err := os.MkdirAll(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.WriteFile(path, []byte(hexLines(b)), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(seed, []byte("go test fuzz v1\n[]byte("+strconv.Quote(string(b))+")\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (run go test -update)", err)
		}
		if got := hexLines(b); got != string(want) {
			t.Errorf("%s changed:\ngot\n%swant\n%s", name, got, want)
		}
	}
}

func FuzzDecode(f *testing.F) {
	kr := testKeys(f, key1)
	decs := []*Decoder{NewDecoder(nil), NewDecoder(kr)}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, d := range decs {
			p, err := d.Decode(b)
			if err != nil {
				var de *DropError
				if !errors.As(err, &de) || de.Reason == ReasonNone {
					t.Fatalf("untyped error %v", err)
				}
				continue
			}
			if len(b) > MaxDatagram {
				t.Fatalf("accepted %d bytes", len(b))
			}
			switch p.Type {
			case TypeHeartbeat:
				if p.Heartbeat == nil || len(p.Heartbeat.Name) > MaxNodeName || len(p.Heartbeat.Addrs) > MaxAddrs || hasControl(p.Heartbeat.Name) {
					t.Fatalf("heartbeat %+v", p.Heartbeat)
				}
			case TypeQuery:
				if p.Query == nil || len(p.Query.Targets) > MaxQueryTargets {
					t.Fatalf("query %+v", p.Query)
				}
			case TypeAnnounce:
				a := p.Announce
				if a == nil || a.Chunk >= a.Chunks || a.Chunks > MaxChunks {
					t.Fatalf("announce %+v", a)
				}
				if hasControl(a.Name) {
					t.Fatalf("node name %q decoded", a.Name)
				}
				for i := range a.Disks {
					d := &a.Disks[i]
					if err := d.validate(); err != nil {
						t.Fatal(err)
					}
					for _, v := range append([]string{d.Name, d.Device, d.MajMin, d.UUID, d.PartUUID, d.Type, d.Usage}, d.Mounts...) {
						if hasControl(v) {
							t.Fatalf("disk field %q decoded", v)
						}
					}
				}
				// Whatever decodes must not upset an assembler either.
				asm := NewAssembler(AssemblerLimits{})
				_, _ = asm.Add(time.Now(), p.Header, a)
			case TypeDelta:
				dl := p.Delta
				if dl == nil || dl.Base >= p.Generation || hasControl(dl.Name) || len(dl.Upserts) > maxDisksChunk {
					t.Fatalf("delta %+v", dl)
				}
				for i := range dl.Upserts {
					if err := dl.Upserts[i].validate(); err != nil {
						t.Fatal(err)
					}
				}
				for _, n := range dl.Removed {
					if err := (&Disk{Name: n}).validate(); err != nil {
						t.Fatal(err)
					}
				}
				// Whatever decodes must not upset an assembler holding a
				// base, nor one holding none.
				asm := NewAssembler(AssemblerLimits{})
				_, _ = asm.AddDelta(time.Now(), p.Header, dl)
				h := p.Header
				h.Generation = dl.Base
				for _, b := range NewEncoder(h.Node, h.Instance, nil).Announce(dl.Base, "x", NewInventory(sampleDisks(3))) {
					q, err := NewDecoder(nil).Decode(b)
					if err != nil {
						t.Fatal(err)
					}
					_, _ = asm.Add(time.Now(), q.Header, q.Announce)
				}
				_, _ = asm.AddDelta(time.Now(), p.Header, dl)
			case TypeGoodbye, TypeRequest, TypeReply, TypeRelay:
				// Checked by their own decoders' tests (request_test.go,
				// relay); here only: they decode without panicking.
			default:
				t.Fatalf("type %v decoded", p.Type)
			}
		}
	})
}
