package store

import (
	"encoding/binary"
	"io"
	"slices"
	"strconv"
	"time"

	"github.com/diskd/diskd/pkg/disk"
)

// The list reply is the daemon's largest (100,000 disks, about 40 MB of
// JSON), and between two changes it is the same bytes. So each row keeps
// its own encoding (rowJSON), made the first time it is listed after it
// changed, and a list is the cached encodings in table order, written
// with their keys (rowJSON.appendTo). Two things
// would make that cache churn, and are handled apart:
//
//   - A present disk is reported as last seen when its node was last heard
//     (diskCopy), which moves with every heartbeat: such a row is written
//     as its cached bytes around its node's time, formatted once per list.
//   - An unchanged report refreshes a row's own last-seen without marking
//     it changed: the cached bytes get the new time spliced in.
//
// Every other change goes through markRow, which drops the row's encoding
// and its node's sorted order (see invalidateLocked).

// rowJSON is one row's disk as disk.AppendJSON encodes it, less what
// every row writes alike: the keys, the quotes, the node ID (the same 46
// bytes in every row of a node, written by the list once per node:
// nodeKey), the booleans (flags), the identity when it needs no escape
// (flags&rowIDOut: the list has it at hand, from the row) and, when the
// identity is "uuid:" and that very UUID (as blkid prints most), the UUID
// (flags&rowUUIDInID: written from the identity's bytes, escaped alike). b holds the values
// only, each as disk.AppendJSON escapes it (without its quotes) after its
// length as a uvarint, after a byte of flags, in AppendJSON's order: id, host, name, device,
// majmin, uuid, partuuid, label, partlabel, type, usage (an empty
// optional one is left out of the JSON), size's digits, the number of
// mount points and each, first_seen; last_seen is the rest (tsOff),
// the time stamp says (sec, nsec, off: formatted alike, see at). A list writes the keys from appendTo's constants, so the
// bytes written are disk.AppendJSON's (TestCompactRoundTrip): with
// 100,000 disks the keys were 17 MB of the 40 MB of encodings.
type rowJSON struct {
	b         string
	sec       int64
	nsec, off int32
}

// flags are the first byte.
func (c *rowJSON) flags() uint8 { return c.b[0] }

// at reports whether last_seen is t as formatted: the same instant and
// the same offset from UTC (RFC 3339 shows no more of the zone).
func (c *rowJSON) at(t time.Time) bool {
	_, off := t.Zone()
	return t.Unix() == c.sec && int32(t.Nanosecond()) == c.nsec && int32(off) == c.off
}

// stamp sets the time stamp c's last_seen is.
func (c *rowJSON) stamp(t time.Time) *rowJSON {
	_, off := t.Zone()
	c.sec, c.nsec, c.off = t.Unix(), int32(t.Nanosecond()), int32(off)
	return c
}

// tsOff is where last_seen starts in b: past the values before it.
func (c *rowJSON) tsOff() int {
	v := values{s: c.b, i: 1}
	for range 12 { // id to size
		v.next()
	}
	for range v.count() {
		v.next()
	}
	v.next() // first_seen
	return v.i
}

// rowJSON.flags.
const (
	rowUUIDInID uint8 = 1 << iota
	rowIDOut
	rowReadOnly
	rowRemovable
	rowPresent
	rowNotUnique
)

// nodeKey is what a rowJSON leaves out: `,"node_id":"NODE"`.
func nodeKey(node disk.NodeID) []byte {
	return disk.AppendJSONString([]byte(`,"node_id":`), string(node))
}

// values reads a rowJSON's values in order.
type values struct {
	s string
	i int
}

// next returns the next value; past the end (a bug), empty ones.
func (v *values) next() string {
	if v.i >= len(v.s) {
		return ""
	}
	n := int(v.s[v.i])
	if n < 0x80 {
		v.i++
	} else {
		u, k := binary.Uvarint([]byte(v.s[v.i:min(len(v.s), v.i+binary.MaxVarintLen64)]))
		if k <= 0 {
			v.i = len(v.s)
			return ""
		}
		n, v.i = int(u), v.i+k
	}
	if n > len(v.s)-v.i {
		v.i = len(v.s)
		return ""
	}
	x := v.s[v.i : v.i+n]
	v.i += n
	return x
}

// count reads a number written as a value's length (the mount points').
func (v *values) count() int {
	if v.i >= len(v.s) {
		return 0
	}
	u, k := binary.Uvarint([]byte(v.s[v.i:min(len(v.s), v.i+binary.MaxVarintLen64)]))
	if k <= 0 {
		v.i = len(v.s)
		return 0
	}
	v.i += k
	return int(min(u, uint64(len(v.s))))
}

func appendStr(b []byte, key, v string) []byte {
	b = append(b, key...)
	b = append(b, v...)
	return append(b, '"')
}

func appendOptStr(b []byte, key, v string) []byte {
	if v == "" {
		return b
	}
	return appendStr(b, key, v)
}

func appendFlag(b []byte, key string, on bool) []byte {
	b = append(b, key...)
	if on {
		return append(b, "true"...)
	}
	return append(b, "false"...)
}

// appendTo appends the disk as disk.AppendJSON would, id being the row's
// identity, node its nodeKey, and last_seen replaced by ts unless ts is
// nil.
func (c *rowJSON) appendTo(b []byte, id string, node, ts []byte) []byte {
	v := values{s: c.b, i: 1}
	if x := v.next(); c.flags()&rowIDOut == 0 {
		id = x
	}
	b = appendStr(b, `{"id":"`, id)
	b = append(b, node...)
	b = appendStr(b, `,"host":"`, v.next())
	b = appendStr(b, `,"name":"`, v.next())
	b = appendStr(b, `,"device":"`, v.next())
	b = appendOptStr(b, `,"majmin":"`, v.next())
	if u := v.next(); c.flags()&rowUUIDInID != 0 {
		b = appendStr(b, `,"uuid":"`, id[len(disk.IdentityUUID):])
	} else {
		b = appendOptStr(b, `,"uuid":"`, u)
	}
	b = appendOptStr(b, `,"partuuid":"`, v.next())
	b = appendOptStr(b, `,"label":"`, v.next())
	b = appendOptStr(b, `,"partlabel":"`, v.next())
	b = appendOptStr(b, `,"type":"`, v.next())
	b = appendOptStr(b, `,"usage":"`, v.next())
	b = append(b, `,"size":`...)
	b = append(b, v.next()...)
	b = appendFlag(b, `,"read_only":`, c.flags()&rowReadOnly != 0)
	b = appendFlag(b, `,"removable":`, c.flags()&rowRemovable != 0)
	b = append(b, `,"mountpoints":[`...)
	for i := range v.count() {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendStr(b, `"`, v.next())
	}
	b = append(b, ']')
	b = appendFlag(b, `,"present":`, c.flags()&rowPresent != 0)
	b = appendStr(b, `,"first_seen":"`, v.next())
	b = append(b, `,"last_seen":"`...)
	if ts == nil {
		b = append(b, c.b[v.i:]...)
	} else {
		b = append(b, ts...)
	}
	b = append(b, '"')
	if c.flags()&rowNotUnique != 0 {
		b = append(b, `,"not_unique":true`...)
	}
	return append(b, '}')
}

// sameTime reports whether a and b format the same way: the same instant
// in the same location.
func sameTime(a, b time.Time) bool { return a.Equal(b) && a.Location() == b.Location() }

// encodeRow encodes d (whose LastSeen is the row's own), into a string of
// its own length: 100,000 of them are kept. Mount points are written as
// readers see them (cloneMounts): [], never null.
func encodeRow(d *disk.Disk) *rowJSON {
	var scratch, tmp [512]byte
	b := scratch[:0]
	put := func(s string) {
		q := disk.AppendJSONString(tmp[:0], s)
		q = q[1 : len(q)-1]
		b = binary.AppendUvarint(b, uint64(len(q)))
		b = append(b, q...)
	}
	var flags uint8
	b = append(b, 0) // flags, set below
	if string(disk.AppendJSONString(tmp[:0], d.ID)) == `"`+d.ID+`"` {
		flags |= rowIDOut
		put("")
	} else {
		put(d.ID)
	}
	put(d.Host)
	put(d.Name)
	put(d.Device)
	put(d.MajMin)
	if d.UUID != "" && d.ID == disk.IdentityUUID+d.UUID {
		flags |= rowUUIDInID
		put("")
	} else {
		put(d.UUID)
	}
	put(d.PartUUID)
	put(d.Label)
	put(d.PartLabel)
	put(d.Type)
	put(d.Usage)
	size := strconv.AppendUint(tmp[:0], d.Size, 10)
	b = binary.AppendUvarint(b, uint64(len(size)))
	b = append(b, size...)
	b = binary.AppendUvarint(b, uint64(len(d.Mounts)))
	for _, m := range d.Mounts {
		put(m)
	}
	first := d.FirstSeen.AppendFormat(tmp[:0], time.RFC3339Nano)
	b = binary.AppendUvarint(b, uint64(len(first)))
	b = append(b, first...)
	b = d.LastSeen.AppendFormat(b, time.RFC3339Nano)
	for _, f := range []struct {
		on  bool
		bit uint8
	}{{d.ReadOnly, rowReadOnly}, {d.Removable, rowRemovable}, {d.Present, rowPresent}, {d.NotUnique, rowNotUnique}} {
		if f.on {
			flags |= f.bit
		}
	}
	b[0] = flags
	return (&rowJSON{b: string(b)}).stamp(d.LastSeen)
}

// withTime returns c with last_seen changed to t.
func (c *rowJSON) withTime(t time.Time) *rowJSON {
	var scratch [64]byte
	ts := t.AppendFormat(scratch[:0], time.RFC3339Nano)
	return (&rowJSON{b: c.b[:c.tsOff()] + string(ts)}).stamp(t)
}

// encodingLocked returns r's encoding with its own last-seen, splicing
// in the time an unchanged report refreshed. Called under the read lock
// by any number of readers at once: each would store the same bytes.
func (r *row) encodingLocked() *rowJSON {
	c := r.enc.Load()
	if c.at(r.d.LastSeen) {
		return c
	}
	c = c.withTime(r.d.LastSeen)
	r.enc.Store(c)
	return c
}

// sortedLocked returns e's rows in list order (sortRowPtrs), sorting them
// only when a row of e changed since the last list.
func (e *nodeEntry) sortedLocked() []*row {
	if p := e.sorted.Load(); p != nil {
		return *p
	}
	rs := slices.Clone(e.rows)
	sortRowPtrs(rs)
	e.sorted.Store(&rs)
	return rs
}

// invalidateLocked makes r's encoding again and drops its node's list
// order. Called with the write lock held on every change.
func (s *Store) invalidateLocked(r *row) {
	r.reencode()
	if e := s.nodes[r.d.Node]; e != nil {
		e.sorted.Store(nil)
	}
}

// JSONList is a list of disks encoded as JSON, ready to be written: it
// refers to the store's cached encodings (which are never modified, only
// replaced), so writing it holds no lock.
type JSONList struct {
	items []listItem
	nodes []listNode
}

// listItem is one disk: its cached encoding, its node (an index in
// JSONList.nodes), and whether last_seen is replaced by its node's.
type listItem struct {
	c      *rowJSON
	id     string // the row's identity (rowIDOut)
	node   int32
	nodeTS bool
}

// listNode is what a list writes for each row of a node: its nodeKey and
// its last-seen time (what a present disk shows), formatted once.
type listNode struct {
	key, ts []byte
}

// Len returns the number of disks.
func (l *JSONList) Len() int { return len(l.items) }

// DisksJSON returns the disks keep accepts (all when keep is nil) and
// whose label byLabel accepts (all when nil), as Disks would return them,
// encoded as disk.AppendJSONArray would encode them. keep sees only the
// fields a row keeps at hand, so a filter runs over 100,000 rows without
// decoding them: ID, Row, Node, Name, Present, NotUnique, FirstSeen and
// LastSeen (the row's own, not yet raised to its node's); the other
// fields are empty (api.ListFilter.Keep looks at Node and Present).
// byLabel runs after the table's lock is released: a costly predicate
// (a glob over long labels) holds up no writer.
func (s *Store) DisksJSON(keep func(*disk.Disk) bool, byLabel func(string) bool) *JSONList {
	l, labels := s.disksJSON(keep, byLabel != nil)
	if byLabel != nil {
		n := 0
		for i, it := range l.items {
			if byLabel(labels[i]) {
				l.items[n] = it
				n++
			}
		}
		clear(l.items[n:])
		l.items = l.items[:n]
	}
	return l
}

func (s *Store) disksJSON(keep func(*disk.Disk) bool, withLabels bool) (l *JSONList, labels []string) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	l = &JSONList{}
	if keep == nil {
		l.items = make([]listItem, 0, len(s.rows))
	}
	for _, e := range s.sortedNodesLocked() {
		ni := int32(len(l.nodes))
		l.nodes = append(l.nodes, listNode{key: nodeKey(e.node.ID)})
		nd := &l.nodes[ni]
		for _, r := range e.sortedLocked() {
			if keep != nil {
				if h := r.hotDisk(); !keep(&h) {
					continue
				}
			}
			it := listItem{id: r.d.ID, node: ni}
			if r.d.Present && e.node.LastSeen.After(r.d.LastSeen) {
				// Seen as recently as its node was heard (diskCopy): any
				// encoding of the row will do, its own time is not shown.
				if nd.ts == nil {
					nd.ts = e.node.LastSeen.AppendFormat(nil, time.RFC3339Nano)
				}
				it.c = r.enc.Load()
				it.nodeTS = true
			} else {
				it.c = r.encodingLocked()
			}
			l.items = append(l.items, it)
			if withLabels {
				labels = append(labels, r.label())
			}
		}
	}
	return l, labels
}

// WriteTo writes the list as a JSON array ("[]" when empty), in chunks of
// listChunk bytes, so a 40 MB list costs a few hundred writes and one
// small buffer.
func (l *JSONList) WriteTo(w io.Writer) (int64, error) {
	buf := make([]byte, 0, listChunk)
	var n int64
	flush := func() error {
		m, err := w.Write(buf)
		n += int64(m)
		buf = buf[:0]
		return err
	}
	buf = append(buf, '[')
	for i, it := range l.items {
		if i > 0 {
			buf = append(buf, ',')
		}
		nd := &l.nodes[it.node]
		if it.nodeTS {
			buf = it.c.appendTo(buf, it.id, nd.key, nd.ts)
		} else {
			buf = it.c.appendTo(buf, it.id, nd.key, nil)
		}
		if len(buf) >= listChunk-1024 {
			if err := flush(); err != nil {
				return n, err
			}
		}
	}
	buf = append(buf, ']')
	return n, flush()
}

// listChunk is the size of the writes of a JSONList.
const listChunk = 64 << 10
