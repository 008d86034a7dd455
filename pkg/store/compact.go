package store

import (
	"slices"
	"strings"
	"time"

	"github.com/diskd/diskd/pkg/disk"
)

// A row does not keep a disk.Disk. With 100,000 rows the struct alone
// (twenty string headers, three times) was 40 MB beside the 45 MB of JSON
// that lists write, and the JSON already holds every field. So a row
// keeps, as plain fields, only what the store works with on every change
// (rowDisk: identity, key, placement, presence, times), and the other
// fields (host, device, UUIDs, labels, type, size, flags, mount points)
// only inside its JSON encoding (rowJSON: the values, without keys),
// which is made when the row changes. The rare readers of a whole disk (where, history, events, the
// state file) decode it (row.disk).
//
// JSON loses one thing: invalid UTF-8 is written as U+FFFD. A row whose
// disk does not come back from its encoding exactly (checked on every
// change, not assumed) keeps the reported disk beside it (placements.raw).

// rowDisk is the part of a row's disk kept as plain fields.
// Its key (disk.Disk.Row) is the identity, or, for a clone row or a row
// saved under another key, placements.key; its node is the row's node.
type rowDisk struct {
	ID        string
	Name      string
	Present   bool
	NotUnique bool
	hidx      int32 // the row's index in Store.absent; -1 while present
	FirstSeen time.Time
	LastSeen  time.Time
}

// key is the row's key in the table.
func (r *row) key() disk.Key {
	if r.extra != nil && r.extra.key != "" {
		return r.extra.key
	}
	return disk.Key(r.d.ID)
}

// setKey makes k the row's key: its identity, or kept apart.
func (r *row) setKey(k disk.Key) {
	switch {
	case r.extra != nil:
		r.extra.key = ""
		if k != disk.Key(r.d.ID) {
			r.extra.key = k
		}
	case k != disk.Key(r.d.ID):
		r.extra = &placements{key: k}
	}
}

// nodeID is the ID of the node the row is placed on.
func (r *row) nodeID() disk.NodeID { return r.node.node.ID }

// placements is what a row knows of its placements beyond the disk, and
// the rare disk kept as reported (row.extra).
type placements struct {
	key   disk.Key        // the row's key when it is not its identity (a clone row)
	since time.Time       // when the current placement began; zero: FirstSeen
	past  []disk.Sighting // earlier placements, newest first
	// raw is the disk as reported when the row's encoding cannot give it
	// back exactly (invalid UTF-8); nil for nearly every row.
	raw *disk.Disk
}

// rawDisk is the disk kept as reported, or nil.
func (r *row) rawDisk() *disk.Disk {
	if r.extra == nil {
		return nil
	}
	return r.extra.raw
}

// setRaw keeps p as the disk as reported (nil: none).
func (r *row) setRaw(p *disk.Disk) {
	switch {
	case r.extra != nil:
		r.extra.raw = p
	case p != nil:
		r.extra = &placements{raw: p}
	}
}

// setPast makes past the row's earlier placements.
func (r *row) setPast(past []disk.Sighting) {
	if r.extra == nil {
		r.extra = &placements{}
	}
	r.extra.past = past
}

// since is when the row's current placement began.
func (r *row) since() time.Time {
	if r.extra == nil || r.extra.since.IsZero() {
		return r.d.FirstSeen
	}
	return r.extra.since
}

// setSince records when the current placement began; a row never moved
// (since is its FirstSeen) keeps nothing for it.
func (r *row) setSince(t time.Time) {
	switch {
	case r.extra != nil:
		r.extra.since = t
	case !sameTime(t, r.d.FirstSeen):
		r.extra = &placements{since: t}
	}
}

// past is the row's earlier placements, newest first.
func (r *row) past() []disk.Sighting {
	if r.extra == nil {
		return nil
	}
	return r.extra.past
}

// set makes d the row's disk: its plain fields and its encoding.
func (r *row) set(d *disk.Disk) { r.setEncoded(d, encodeRow(d)) }

// setEncoded is set with d's encoding made: encodeRow's bytes, in a
// string of its own or elsewhere (Load's arena).
func (r *row) setEncoded(d *disk.Disk, c rowJSON) {
	r.d = rowDisk{ID: d.ID, Name: d.Name, Present: d.Present,
		NotUnique: d.NotUnique, hidx: r.d.hidx, FirstSeen: d.FirstSeen, LastSeen: d.LastSeen}
	r.enc = c
	r.refreshed = false
	r.setRaw(nil)
	if back := c.decode(d.ID); !sameCold(&back, d) {
		raw := cloneDisk(d)
		r.setRaw(&raw)
	}
}

// reencode makes the row's encoding again after its plain fields changed.
func (r *row) reencode() {
	d := r.disk()
	r.set(&d)
}

// disk returns the row's disk (its own LastSeen, not raised to its
// node's), a copy the caller owns. Strings may share the encoding's bytes,
// which are never modified.
func (r *row) disk() disk.Disk {
	var d disk.Disk
	if raw := r.rawDisk(); raw != nil {
		d = cloneDisk(raw)
	} else {
		d = r.enc.decode(r.d.ID)
	}
	h := &r.d
	d.ID, d.Row, d.Node, d.Name, d.Present, d.NotUnique, d.FirstSeen, d.LastSeen =
		h.ID, r.key(), r.nodeID(), h.Name, h.Present, h.NotUnique, h.FirstSeen, h.LastSeen
	return d
}

// hotDisk is the row's disk with only the plain fields set: what the
// list filters look at, without decoding the rest.
func (r *row) hotDisk() disk.Disk {
	h := &r.d
	return disk.Disk{ID: h.ID, Row: r.key(), Node: r.nodeID(), Name: h.Name, Present: h.Present,
		NotUnique: h.NotUnique, FirstSeen: h.FirstSeen, LastSeen: h.LastSeen}
}

// sameCold reports whether a and b agree on the fields a row keeps only
// in its encoding. Mount lists compare as lists: nil and empty are both
// written as [].
func sameCold(a, b *disk.Disk) bool {
	return a.Host == b.Host && a.Device == b.Device && a.MajMin == b.MajMin && a.UUID == b.UUID &&
		a.PartUUID == b.PartUUID && a.Label == b.Label && a.PartLabel == b.PartLabel &&
		a.Type == b.Type && a.Usage == b.Usage && a.Size == b.Size &&
		a.ReadOnly == b.ReadOnly && a.Removable == b.Removable && slices.Equal(a.Mounts, b.Mounts)
}

// decode reads the fields a row keeps only in its encoding back from it
// (the strings share its bytes, which are never modified); id is the
// row's identity, which holds the UUID when the encoding left it out.
// Mounts is never nil. An encoding it cannot read comes back as an
// empty disk, which set, checking every encoding it makes, then keeps
// beside it as reported.
func (c *rowJSON) decode(id string) disk.Disk {
	d, ok := quickDecode(c)
	if !ok {
		// A value with escapes: the JSON as listed, read by
		// encoding/json's rules (disk.ParseOwnJSON).
		if d, ok = disk.ParseOwnJSON(c.appendTo(nil, id, nodeKey(""), nil)); !ok {
			d = disk.Disk{}
		}
	}
	if c.flags()&rowUUIDInID != 0 {
		d.UUID = strings.TrimPrefix(id, disk.IdentityUUID)
	}
	if d.Mounts == nil {
		d.Mounts = []string{}
	}
	return d
}

// sameDevice reports whether in describes the row's device as it is
// (disk.SameDevice).
func (r *row) sameDevice(in *disk.Disk) bool {
	d := r.disk()
	return disk.SameDevice(&d, in)
}

// device returns the row's device path.
func (r *row) device() string {
	if raw := r.rawDisk(); raw != nil {
		return raw.Device
	}
	return r.enc.decode(r.d.ID).Device
}

// label returns the row's filesystem label.
func (r *row) label() string {
	if raw := r.rawDisk(); raw != nil {
		return raw.Label
	}
	return r.enc.decode(r.d.ID).Label
}

// quickDecode reads an encoding whose values have no escapes (as they
// are, then), sharing its bytes: a table of 100,000 disks and every
// unchanged report of a peer decode rows. It gives up (false) on a value
// with an escape. Times and the plain fields are skipped, as decode
// wants them.
func quickDecode(c *rowJSON) (d disk.Disk, ok bool) {
	v := values{s: c.b, i: 1}
	v.next() // last_seen
	ok = true
	str := func() string {
		x := v.next()
		ok = ok && strings.IndexByte(x, '\\') < 0
		return x
	}
	str() // id
	d.Host = str()
	str() // name
	d.Device = str()
	d.MajMin = str()
	d.UUID = str()
	d.PartUUID = str()
	d.Label = str()
	d.PartLabel = str()
	d.Type = str()
	d.Usage = str()
	size, sizeOK := v.uvarint()
	ok = ok && sizeOK
	d.Size = size
	d.ReadOnly = c.flags()&rowReadOnly != 0
	d.Removable = c.flags()&rowRemovable != 0
	d.Mounts = make([]string, v.count())
	for i := range d.Mounts {
		d.Mounts[i] = str()
	}
	v.next() // first_seen
	return d, ok && v.i == len(c.b)
}
