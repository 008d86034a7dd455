package store

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/diskd/diskd/pkg/disk"
)

// hostile are strings a report may carry: every escape JSON knows, what
// encoding/json escapes for HTML, U+2028/9, invalid UTF-8 (which JSON
// cannot carry), a literal U+FFFD, NUL, long ones.
var hostile = []string{
	"", "plain", `"quoted"`, `back\slash`, "<b>&amp;</b>", "tab\tnew\nline\rcr\bbs\fff",
	"\x00nul\x01\x1f\x7f", "line\u2028sep\u2029", "\xff\xfe broken", "\ufffd replacement",
	"mixed \xc3\x28 and é", "日本語ラベル", "emoji 😀", "trailing\\", strings.Repeat("x", 4000),
	"\\u0041 not an escape", `{"id":"fake"}`, `","size":1,"x":"`, "null", "[]",
}

// TestCompactRoundTrip: a row gives back exactly the disk it was given,
// every field, for hostile strings in every string field, and lists the
// bytes encoding/json would write (disk.AppendJSON).
func TestCompactRoundTrip(t *testing.T) {
	base := disk.Disk{ID: "uuid:x", Row: "uuid:x", Node: "00000000000000000000000000000abc", Host: "h",
		Name: "sda1", Device: "/dev/sda1", MajMin: "8:1", UUID: "X", PartUUID: "p", Label: "L",
		PartLabel: "PL", Type: "ext4", Usage: "filesystem", Size: 1 << 40, ReadOnly: true,
		Removable: true, Mounts: []string{"/a", "/b"}, Present: true, NotUnique: true,
		FirstSeen: time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC),
		LastSeen:  time.Date(2026, 1, 2, 3, 4, 5, 7000, time.FixedZone("x", 3600))}
	fields := []func(*disk.Disk) *string{
		func(d *disk.Disk) *string { return &d.ID }, func(d *disk.Disk) *string { return (*string)(&d.Node) },
		func(d *disk.Disk) *string { return &d.Host }, func(d *disk.Disk) *string { return &d.Name },
		func(d *disk.Disk) *string { return &d.Device }, func(d *disk.Disk) *string { return &d.MajMin },
		func(d *disk.Disk) *string { return &d.UUID }, func(d *disk.Disk) *string { return &d.PartUUID },
		func(d *disk.Disk) *string { return &d.Label }, func(d *disk.Disk) *string { return &d.PartLabel },
		func(d *disk.Disk) *string { return &d.Type }, func(d *disk.Disk) *string { return &d.Usage },
		func(d *disk.Disk) *string { return (*string)(&d.Row) },
	}
	var cases []disk.Disk
	for _, f := range fields {
		for _, s := range hostile {
			d := base
			d.Mounts = []string{"/a", s}
			*f(&d) = s
			cases = append(cases, d)
		}
	}
	for _, s := range hostile {
		d := base
		d.Mounts = []string{s, s}
		cases = append(cases, d)
		// The identity holds the UUID (the encoding leaves it out).
		d.ID, d.UUID = disk.IdentityUUID+s, s
		cases = append(cases, d)
	}
	zero := disk.Disk{}
	nilMounts := base
	nilMounts.Mounts = nil
	oddTimes := base // times stamp.format does not write: kept as text
	oddTimes.FirstSeen = time.Date(12000, 1, 1, 0, 0, 0, 0, time.UTC)
	oddTimes.LastSeen = time.Date(2026, 1, 1, 0, 0, 0, 0, time.FixedZone("odd", -61))
	cases = append(cases, oddTimes)
	manyMounts := base // their count takes two bytes of uvarint
	for i := range 300 {
		manyMounts.Mounts = append(manyMounts.Mounts, fmt.Sprintf("/m/%d\t", i))
	}
	cases = append(cases, zero, nilMounts, manyMounts)
	for i, d := range cases {
		checkRoundTrip(t, i, d)
	}
}

func checkRoundTrip(t *testing.T, i int, d disk.Disk) {
	t.Helper()
	if d.Row == "" {
		d.Row = disk.Key(d.ID) // a row always has a key; "" stands for its identity
	}
	r := row{node: newNodeEntry(disk.Node{ID: d.Node})}
	r.set(&d)
	r.setKey(d.Row)
	got := r.disk()
	want := cloneDisk(&d) // as readers see it: Mounts never nil
	// Only what JSON cannot carry (invalid UTF-8 in a field kept in the
	// encoding) is kept beside it.
	lossy := false
	for _, s := range append([]string{d.Host, d.Device, d.MajMin, d.UUID, d.PartUUID, d.Label,
		d.PartLabel, d.Type, d.Usage}, d.Mounts...) {
		lossy = lossy || !utf8.ValidString(s)
	}
	if lossy != (r.rawDisk() != nil) {
		t.Errorf("case %d: invalid UTF-8 %v, kept as reported %v", i, lossy, r.rawDisk() != nil)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("case %d: round trip\n got %#v\nwant %#v", i, got, want)
	}
	if shared := d.UUID != "" && d.ID == disk.IdentityUUID+d.UUID; shared != ((&r.enc).flags()&rowUUIDInID != 0) {
		t.Errorf("case %d: UUID in the identity %v, left out of the encoding %v", i, shared, (&r.enc).flags()&rowUUIDInID != 0)
	}
	// Encodings without escapes take the quick way.
	plain := true
	for _, s := range append([]string{d.ID, d.Host, d.Name, d.Device, d.MajMin, d.UUID, d.PartUUID,
		d.Label, d.PartLabel, d.Type, d.Usage}, d.Mounts...) {
		plain = plain && string(disk.AppendJSONString(nil, s)) == `"`+s+`"`
	}
	if _, quick := quickDecode((&r.enc)); quick != plain {
		t.Errorf("case %d: no escapes %v, decoded the quick way %v", i, plain, quick)
	}
	if got.Device != r.device() || got.Label != r.label() {
		t.Errorf("case %d: device %q label %q, decoded %q %q", i, r.device(), r.label(), got.Device, got.Label)
	}
	if enc, json := string((&r.enc).appendTo(nil, want.ID, nodeKey(want.Node), nil)), string(disk.AppendJSON(nil, &want)); enc != json {
		t.Errorf("case %d: encoding\n got %s\nwant %s", i, enc, json)
	}
	// A refreshed last-seen (withTime) and a node's time written in
	// its place (a present disk's, in a list) give AppendJSON's bytes.
	// Also a time stamp.format does not write (an offset in seconds): the
	// encoding turns to text (rowTextTimes).
	for _, lt := range []time.Time{time.Date(2027, 5, 6, 7, 8, 9, 123456789, time.FixedZone("y", -7200)),
		time.Date(2027, 5, 6, 7, 8, 9, 0, time.FixedZone("odd", 61))} {
		later := want
		later.LastSeen = lt
		ts := later.LastSeen.AppendFormat(nil, time.RFC3339Nano)
		json := string(disk.AppendJSON(nil, &later))
		c := (&r.enc).withTime(later.LastSeen)
		if enc := string(c.appendTo(nil, want.ID, nodeKey(want.Node), nil)); enc != json {
			t.Errorf("case %d: encoding with a new time\n got %s\nwant %s", i, enc, json)
		}
		if !c.at(lt) || c.at(lt.Add(time.Nanosecond)) {
			t.Errorf("case %d: encoding at %v: %v", i, lt, c.at(lt))
		}
		if enc := string((&r.enc).appendTo(nil, want.ID, nodeKey(want.Node), ts)); enc != json {
			t.Errorf("case %d: encoding with its node's time\n got %s\nwant %s", i, enc, json)
		}
	}
	// The plain fields change apart from the rest; the encoding follows.
	r.d.Present, r.d.NotUnique = !r.d.Present, !r.d.NotUnique
	r.d.LastSeen = r.d.LastSeen.Add(time.Second)
	r.reencode()
	want.Present, want.NotUnique, want.LastSeen = !want.Present, !want.NotUnique, want.LastSeen.Add(time.Second)
	if got := r.disk(); !reflect.DeepEqual(got, want) {
		t.Errorf("case %d: after a change\n got %#v\nwant %#v", i, got, want)
	}
	if enc, json := string((&r.enc).appendTo(nil, want.ID, nodeKey(want.Node), nil)), string(disk.AppendJSON(nil, &want)); enc != json {
		t.Errorf("case %d: encoding after a change\n got %s\nwant %s", i, enc, json)
	}
}

// FuzzCompactRoundTrip: any strings in any field come back as they went in.
func FuzzCompactRoundTrip(f *testing.F) {
	for i, s := range hostile {
		f.Add(s, hostile[(i+1)%len(hostile)], hostile[(i+2)%len(hostile)], uint64(i), i%2 == 0)
	}
	f.Fuzz(func(t *testing.T, a, b, c string, size uint64, flag bool) {
		d := disk.Disk{ID: a, Row: disk.Key(b), Node: disk.NodeID(c), Host: b, Name: c, Device: a,
			MajMin: b, UUID: c, PartUUID: a, Label: b, PartLabel: c, Type: a, Usage: b, Size: size,
			ReadOnly: flag, Removable: !flag, Mounts: []string{a, b, c}, Present: flag,
			NotUnique: !flag, FirstSeen: time.Unix(int64(size%1e10), 0).UTC(), LastSeen: time.Unix(0, int64(size%1e18))}
		if size%2 == 0 {
			d.ID = disk.IdentityUUID + d.UUID
		}
		checkRoundTrip(t, 0, d)
	})
}
