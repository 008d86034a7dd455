package store

import (
	"bytes"
	"slices"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/diskd/diskd/pkg/disk"
)

// A row does not keep a disk.Disk. With 100,000 rows the struct alone
// (twenty string headers, three times) was 40 MB beside the 45 MB of JSON
// that lists write, and the JSON already holds every field. So a row
// keeps, as plain fields, only what the store works with on every change
// (rowDisk: identity, key, placement, presence, times), and the other
// fields (host, device, UUIDs, labels, type, size, flags, mount points)
// only inside its JSON encoding (rowJSON), which is made when the row
// changes. The rare readers of a whole disk (where, history, events, the
// state file) decode it (row.disk).
//
// JSON loses one thing: invalid UTF-8 is written as U+FFFD. A row whose
// disk does not come back from its encoding exactly (checked on every
// change, not assumed) keeps the reported disk beside it (row.raw).

// rowDisk is the part of a row's disk kept as plain fields.
type rowDisk struct {
	ID        string
	Row       disk.Key
	Node      disk.NodeID
	Name      string
	Present   bool
	NotUnique bool
	hidx      int32 // the row's index in Store.absent; -1 while present
	FirstSeen time.Time
	LastSeen  time.Time
}

// placements is what a row knows of its placements beyond the disk.
type placements struct {
	since time.Time       // when the current placement began; zero: FirstSeen
	past  []disk.Sighting // earlier placements, newest first
}

// since is when the row's current placement began.
func (r *row) since() time.Time {
	if r.moved == nil || r.moved.since.IsZero() {
		return r.d.FirstSeen
	}
	return r.moved.since
}

// setSince records when the current placement began; a row never moved
// (since is its FirstSeen) keeps nothing for it.
func (r *row) setSince(t time.Time) {
	switch {
	case r.moved != nil:
		r.moved.since = t
	case !sameTime(t, r.d.FirstSeen):
		r.moved = &placements{since: t}
	}
}

// past is the row's earlier placements, newest first.
func (r *row) past() []disk.Sighting {
	if r.moved == nil {
		return nil
	}
	return r.moved.past
}

// set makes d the row's disk: its plain fields and its encoding.
func (r *row) set(d *disk.Disk) {
	r.d = rowDisk{ID: d.ID, Row: d.Row, Node: d.Node, Name: d.Name, Present: d.Present,
		NotUnique: d.NotUnique, hidx: r.d.hidx, FirstSeen: d.FirstSeen, LastSeen: d.LastSeen}
	c := encodeRow(d)
	r.enc.Store(c)
	r.raw = nil
	if back := c.decode(d.ID); !sameCold(&back, d) {
		raw := cloneDisk(d)
		r.raw = &raw
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
	if r.raw != nil {
		d = cloneDisk(r.raw)
	} else {
		d = r.enc.Load().decode(r.d.ID)
	}
	h := &r.d
	d.ID, d.Row, d.Node, d.Name, d.Present, d.NotUnique, d.FirstSeen, d.LastSeen =
		h.ID, h.Row, h.Node, h.Name, h.Present, h.NotUnique, h.FirstSeen, h.LastSeen
	return d
}

// hotDisk is the row's disk with only the plain fields set: what the
// list filters look at, without decoding the rest.
func (r *row) hotDisk() disk.Disk {
	h := &r.d
	return disk.Disk{ID: h.ID, Row: h.Row, Node: h.Node, Name: h.Name, Present: h.Present,
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
// (disk.ParseOwnJSON: the strings share its bytes, which are never
// modified); id is the row's identity, which holds the UUID when the
// encoding left it out. Mounts is never nil. An encoding it cannot read
// comes back as an empty disk, which set, checking every encoding it
// makes, then keeps beside it as reported.
func (c *rowJSON) decode(id string) disk.Disk {
	d, ok := quickDecode(c.b)
	if !ok {
		if d, ok = disk.ParseOwnJSON(c.b); !ok {
			d = disk.Disk{}
		}
	}
	if c.uuidOff > 0 {
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
	if r.raw != nil {
		return r.raw.Device
	}
	return r.enc.Load().decode(r.d.ID).Device
}

// label returns the row's filesystem label.
func (r *row) label() string {
	if r.raw != nil {
		return r.raw.Label
	}
	return r.enc.Load().decode(r.d.ID).Label
}

// quickDecode reads an encoding that has no escapes, with its keys where
// encodeRow puts them, four times faster than disk.ParseOwnJSON (which
// reads any key order): a table of 100,000 disks and every unchanged
// report of a peer decode rows. It gives up (false) on anything else.
// Times and the plain fields are skipped, as decode wants them.
func quickDecode(b []byte) (d disk.Disk, ok bool) {
	q := quick{b: b, ok: true}
	q.str(`{"id":`)
	d.Host = q.str(`,"host":`)
	q.str(`,"name":`)
	d.Device = q.str(`,"device":`)
	d.MajMin = q.opt(`,"majmin":`)
	d.UUID = q.opt(`,"uuid":`)
	d.PartUUID = q.opt(`,"partuuid":`)
	d.Label = q.opt(`,"label":`)
	d.PartLabel = q.opt(`,"partlabel":`)
	d.Type = q.opt(`,"type":`)
	d.Usage = q.opt(`,"usage":`)
	d.Size = q.uint(`,"size":`)
	d.ReadOnly = q.bool(`,"read_only":`)
	d.Removable = q.bool(`,"removable":`)
	if q.key(`,"mountpoints":[`) {
		d.Mounts = []string{}
		for q.ok && q.i < len(b) && b[q.i] != ']' {
			if len(d.Mounts) > 0 && !q.key(",") {
				break
			}
			d.Mounts = append(d.Mounts, q.str(""))
		}
		q.key("]")
	}
	q.bool(`,"present":`)
	q.str(`,"first_seen":`)
	q.str(`,"last_seen":`)
	if q.key(`,"not_unique":true`) {
		d.NotUnique = true
	}
	return d, q.ok && q.key("}") && q.i == len(b)
}

// quick is quickDecode's position; ok goes false at the first surprise.
type quick struct {
	b  []byte
	i  int
	ok bool
}

// key consumes k if it is next.
func (q *quick) key(k string) bool {
	if q.ok && len(q.b)-q.i >= len(k) && string(q.b[q.i:q.i+len(k)]) == k {
		q.i += len(k)
		return true
	}
	return false
}

// str reads key k and a string without escapes, sharing b's bytes.
func (q *quick) str(k string) string {
	if !q.key(k) || !q.key(`"`) {
		q.ok = false
		return ""
	}
	rest := q.b[q.i:]
	n := bytes.IndexByte(rest, '"')
	if n < 0 || bytes.IndexByte(rest[:n], '\\') >= 0 {
		q.ok = false
		return ""
	}
	q.i += n + 1
	if n == 0 {
		return ""
	}
	return unsafe.String(&rest[0], n)
}

// opt reads an optional string field: "" when key k is not next.
func (q *quick) opt(k string) string {
	if !q.ok || len(q.b)-q.i < len(k) || string(q.b[q.i:q.i+len(k)]) != k {
		return ""
	}
	return q.str(k)
}

func (q *quick) uint(k string) uint64 {
	if !q.key(k) {
		q.ok = false
		return 0
	}
	i := q.i
	for i < len(q.b) && '0' <= q.b[i] && q.b[i] <= '9' {
		i++
	}
	v, err := strconv.ParseUint(string(q.b[q.i:i]), 10, 64)
	q.i = i
	q.ok = q.ok && err == nil
	return v
}

func (q *quick) bool(k string) bool {
	switch {
	case !q.key(k):
	case q.key("true"):
		return true
	case q.key("false"):
		return false
	}
	q.ok = false
	return false
}
