package store

import (
	"encoding/binary"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/diskd/diskd/pkg/disk"
)

// The list reply is the daemon's largest (100,000 disks, about 40 MB of
// JSON), and between two changes it is the same bytes. So each row keeps
// its own encoding (rowJSON), made when it changes, and each node keeps
// its rows in list order with their identities and encodings laid end to
// end in a few strings (nodePack), made by the first list after a change
// (and at load). A list writes the packs in order with the keys between
// the values (rowJSON.write): it reads 40 MB in order, allocates nothing
// per disk, and holds no lock while it writes. Two things would make the
// encodings churn, and are handled apart:
//
//   - A present disk is reported as last seen when its node was last heard
//     (diskCopy), which moves with every heartbeat: such a row is written
//     as its bytes around its node's time, formatted once per list.
//   - An unchanged report refreshes a row's own last-seen without marking
//     it changed: its node's pack is dropped, and the next one splices the
//     new time into the row's encoding.
//
// Every other change goes through markRow, which makes the row's
// encoding again and drops its node's pack (see invalidateLocked).

// rowJSON is one row's disk as disk.AppendJSON encodes it, less what
// every row writes alike: the keys, the quotes, the node ID (the same 46
// bytes in every row of a node, written by the list once per node:
// nodeKey), the booleans (flags), the identity when it needs no escape
// (flags&rowIDOut: the list has it at hand, from the row) and, when the
// identity is "uuid:" and that very UUID (as blkid prints most), the UUID
// (flags&rowUUIDInID: written from the identity's bytes, escaped alike).
//
// b is a byte of flags, then the values, each after its length as a
// uvarint: last_seen first (at hand for at and withTime), then in
// AppendJSON's order id, host, name, device, majmin, uuid, partuuid,
// label, partlabel, type, usage (an empty optional one is left out of the
// JSON), each as AppendJSON escapes it, without its quotes; size as a
// uvarint (no length); the number of mount points (no length) and each;
// first_seen. The times are stamps (see stamp.go), or text when
// flags&rowTextTimes. A list writes the keys from
// appendTo's constants, so the bytes written are AppendJSON's
// (TestCompactRoundTrip): with 100,000 disks the keys were 17 MB of the
// 40 MB of encodings, and the times as text 5 MB.
type rowJSON struct {
	b string
}

// flags are the first byte.
func (c *rowJSON) flags() uint8 { return c.b[0] }

// at reports whether last_seen is t as formatted.
func (c *rowJSON) at(t time.Time) bool {
	v := values{s: c.b, i: 1}
	rest := v.next()
	if c.flags()&rowTextTimes != 0 {
		var buf [64]byte
		return string(t.AppendFormat(buf[:0], time.RFC3339Nano)) == rest
	}
	var buf [32]byte
	return string(stampOf(t).appendBinary(buf[:0])) == rest
}

// toFirstSeen skips the values before first_seen, from id on.
func (v *values) toFirstSeen() {
	for range 11 { // id to usage
		v.next()
	}
	v.uvarint() // size
	for range v.count() {
		v.next()
	}
}

// rowJSON.flags.
const (
	rowUUIDInID uint8 = 1 << iota
	rowIDOut
	rowReadOnly
	rowRemovable
	rowPresent
	rowNotUnique
	rowTextTimes
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

// next returns the next value; past the end (a bug), empty ones. It is
// small enough to inline: a list reads 100,000 rows of values.
func (v *values) next() string {
	i, n := v.i, uint(0)
	for shift := uint(0); i < len(v.s); shift += 7 {
		c := v.s[i]
		i++
		n |= uint(c&0x7f) << shift
		if c < 0x80 {
			break
		}
	}
	if n > uint(len(v.s)-i) {
		v.i = len(v.s)
		return ""
	}
	v.i = i + int(n)
	return v.s[i:v.i]
}

// uvarint reads a uvarint.
func (v *values) uvarint() (uint64, bool) {
	var u uint64
	for shift := 0; v.i < len(v.s) && shift < 64; shift += 7 {
		c := v.s[v.i]
		v.i++
		u |= uint64(c&0x7f) << shift
		if c < 0x80 {
			return u, true
		}
	}
	v.i = len(v.s)
	return 0, false
}

// count reads a number written as a value's length (the mount points').
func (v *values) count() int {
	u, _ := v.uvarint()
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
	return c.write(b, id, node, ts, nil)
}

// write is appendTo with the times formatted through tc (nil: none).
func (c *rowJSON) write(b []byte, id string, node, ts []byte, tc *timeCache) []byte {
	v := values{s: c.b, i: 1}
	last := v.next()
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
	size, _ := v.uvarint()
	b = tc.appendSize(b, size)
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
	text := c.flags()&rowTextTimes != 0
	b = append(b, `,"first_seen":"`...)
	b = tc.append(b, v.next(), text, 0)
	b = append(b, `","last_seen":"`...)
	if ts == nil {
		b = tc.append(b, last, text, 1)
	} else {
		b = append(b, ts...)
	}
	b = append(b, '"')
	if c.flags()&rowNotUnique != 0 {
		b = append(b, `,"not_unique":true`...)
	}
	return append(b, '}')
}

// appendTime appends a time as encoded: text, or a stamp formatted.
func appendTime(b []byte, x string, text bool) []byte {
	if text {
		return append(b, x...)
	}
	st, _ := readStamp(x)
	return st.format(b)
}

// timeCache remembers the last first_seen and last_seen formatted, and
// the last size: rows listed together mostly share their times (a
// report's disks are seen at once) and often their sizes (a node's disks
// of one model), and formatting is most of what a list costs beyond
// copying (a size's digits were 1.3 ms of a list of 100,000 disks).
type timeCache struct {
	key     [2]string // the stamps (substrings of immutable encodings)
	txt     [2][]byte
	size    uint64
	sizeTxt []byte
}

// appendSize appends size in decimal.
func (tc *timeCache) appendSize(b []byte, size uint64) []byte {
	if tc == nil {
		return strconv.AppendUint(b, size, 10)
	}
	if tc.sizeTxt == nil || tc.size != size {
		tc.sizeTxt = strconv.AppendUint(tc.sizeTxt[:0], size, 10)
		tc.size = size
	}
	return append(b, tc.sizeTxt...)
}

// append appends a time as encoded (see appendTime), slot 0 for
// first_seen and 1 for last_seen.
func (tc *timeCache) append(b []byte, x string, text bool, slot int) []byte {
	if tc == nil || text {
		return appendTime(b, x, text)
	}
	if tc.txt[slot] == nil || tc.key[slot] != x {
		tc.txt[slot] = appendTime(tc.txt[slot][:0], x, false)
		tc.key[slot] = x
	}
	return append(b, tc.txt[slot]...)
}

// sameTime reports whether a and b format the same way: the same instant
// in the same location.
func sameTime(a, b time.Time) bool { return a.Equal(b) && a.Location() == b.Location() }

// encodeRow encodes d (whose LastSeen is the row's own), into a string of
// its own length: 100,000 of them are kept. Mount points are written as
// readers see them (cloneMounts): [], never null.
func encodeRow(d *disk.Disk) rowJSON {
	var scratch [512]byte
	return rowJSON{b: string(appendRow(scratch[:0], d))}
}

// appendRow appends d's encoding (encodeRow's) to b.
func appendRow(b []byte, d *disk.Disk) []byte {
	var tmp [512]byte
	start := len(b)
	put := func(s string) {
		q := disk.AppendJSONString(tmp[:0], s)
		q = q[1 : len(q)-1]
		b = binary.AppendUvarint(b, uint64(len(q)))
		b = append(b, q...)
	}
	var flags uint8
	b = append(b, 0) // flags, set below
	text := !formatsExactly(d.FirstSeen) || !formatsExactly(d.LastSeen)
	last := stampOf(d.LastSeen).appendBinary(tmp[:0])
	if text {
		flags |= rowTextTimes
		last = d.LastSeen.AppendFormat(tmp[:0], time.RFC3339Nano)
	}
	b = binary.AppendUvarint(b, uint64(len(last)))
	b = append(b, last...)
	if q := disk.AppendJSONString(tmp[:0], d.ID); string(q[1:len(q)-1]) == d.ID {
		flags |= rowIDOut
		put("")
	} else {
		put(d.ID)
	}
	put(d.Host)
	put(d.Name)
	put(d.Device)
	put(d.MajMin)
	if id, ok := strings.CutPrefix(d.ID, disk.IdentityUUID); ok && d.UUID != "" && id == d.UUID {
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
	b = binary.AppendUvarint(b, d.Size)
	b = binary.AppendUvarint(b, uint64(len(d.Mounts)))
	for _, m := range d.Mounts {
		put(m)
	}
	first := stampOf(d.FirstSeen).appendBinary(tmp[:0])
	if text {
		first = d.FirstSeen.AppendFormat(tmp[:0], time.RFC3339Nano)
	}
	b = binary.AppendUvarint(b, uint64(len(first)))
	b = append(b, first...)
	for _, f := range []struct {
		on  bool
		bit uint8
	}{{d.ReadOnly, rowReadOnly}, {d.Removable, rowRemovable}, {d.Present, rowPresent}, {d.NotUnique, rowNotUnique}} {
		if f.on {
			flags |= f.bit
		}
	}
	b[start] = flags
	return b
}

// withTime returns c with last_seen changed to t.
func (c *rowJSON) withTime(t time.Time) rowJSON {
	v := values{s: c.b, i: 1}
	v.next() // last_seen
	rest, flags := c.b[v.i:], c.flags()
	var scratch, firstText [64]byte
	ts := scratch[:0]
	switch {
	case flags&rowTextTimes != 0:
		ts = t.AppendFormat(ts, time.RFC3339Nano)
	case formatsExactly(t):
		ts = stampOf(t).appendBinary(ts)
	default:
		// t is not a time stamp.format writes: both times as text.
		flags |= rowTextTimes
		ts = t.AppendFormat(ts, time.RFC3339Nano)
		w := v
		w.toFirstSeen()
		firstAt := w.i
		first := appendTime(firstText[:0], w.next(), false)
		b := make([]byte, 0, len(c.b)+len(ts)+len(first))
		b = append(b, flags)
		b = binary.AppendUvarint(b, uint64(len(ts)))
		b = append(b, ts...)
		b = append(b, c.b[v.i:firstAt]...)
		b = binary.AppendUvarint(b, uint64(len(first)))
		b = append(b, first...)
		return rowJSON{b: string(b)}
	}
	b := make([]byte, 0, len(c.b)+len(ts))
	b = append(b, flags)
	b = binary.AppendUvarint(b, uint64(len(ts)))
	b = append(b, ts...)
	b = append(b, rest...)
	return rowJSON{b: string(b)}
}

// nodePack is one node's rows in list order (sortRowPtrs) and, laid end
// to end in strings of at most packChunk bytes, each row's identity and
// encoding, and, for a row whose times are text (rowTextTimes), its
// last-seen as a stamp. Every value is after its length as a uvarint; a
// row never spans two strings. The rows' own strings (enc, the identity,
// the kernel name) are moved into it (packLocked), so the pack costs no
// memory beyond what the rows held, and a list reads one node's bytes in
// order rather than chasing 100,000 rows through the heap.
type nodePack struct {
	rows []*row // the node's rows (nodeEntry.rows), sorted
	b    []string
}

// packChunk is the most bytes a string of a pack holds (a longer row has
// one of its own). The chunks are all of one size so that the pages of a
// node's chunks, once freed, serve any other's: Load packs 100,000 rows
// into the pages their first encodings held (loadArena).
const packChunk = 64 << 10

// packsStaleLocked reports whether a node changed since its pack was made.
func (s *Store) packsStaleLocked() bool {
	for _, e := range s.nodes {
		if e.pack == nil {
			return true
		}
	}
	return false
}

// packAllLocked makes the pack of every node that has none. Called with
// the write lock held: it moves the rows' strings.
func (s *Store) packAllLocked() {
	for _, e := range s.nodes {
		if e.pack == nil {
			e.pack = s.packLocked(e)
		}
	}
}

// packLocked makes e's pack. A last-seen that an unchanged report
// refreshed is spliced into its row's encoding first (withTime). Each
// row's encoding, identity (and the key and index entries that share
// it) and kernel name are then moved into the pack.
func (s *Store) packLocked(e *nodeEntry) *nodePack {
	rows := e.rows // sorted in place: the pack's order is the node's until a change drops both
	sortRowPtrs(rows)
	for i, r := range rows {
		r.nidx = int32(i)
	}
	size := 0
	for _, r := range rows {
		if r.refreshed {
			if !r.enc.at(r.d.LastSeen) {
				r.enc = r.enc.withTime(r.d.LastSeen)
			}
			r.refreshed = false
		}
		size += packedSize(r)
	}
	// Each chunk is a strings.Builder's buffer (its String is not a copy).
	var b strings.Builder
	p := &nodePack{rows: rows}
	at := make([]int32, 0, 2*len(rows)) // in its chunk
	chunk := make([]int32, len(rows))
	var n, st [3 * binary.MaxVarintLen64]byte
	put := func(v string) {
		b.Write(binary.AppendUvarint(n[:0], uint64(len(v))))
		at = append(at, int32(b.Len()))
		b.WriteString(v)
	}
	for i, r := range rows {
		need := packedSize(r)
		if b.Len()+need > b.Cap() {
			if b.Len() > 0 {
				p.b = append(p.b, b.String())
			}
			b = strings.Builder{}
			b.Grow(max(min(packChunk, size), need))
		}
		size -= need
		chunk[i] = int32(len(p.b))
		put(r.d.ID)
		put(r.enc.b)
		if r.enc.flags()&rowTextTimes != 0 {
			last := stampOf(r.d.LastSeen).appendBinary(st[:0])
			b.Write(binary.AppendUvarint(n[:0], uint64(len(last))))
			b.Write(last)
		}
	}
	if b.Len() > 0 {
		p.b = append(p.b, b.String())
	}
	for i, r := range rows {
		c := p.b[chunk[i]]
		id := c[at[2*i] : int(at[2*i])+len(r.d.ID)]
		if k := disk.Key(r.d.ID); r.key() == k && s.rows[k] == r {
			s.rows[disk.Key(id)] = r // a string key is replaced by the one assigned
		}
		r.d.ID = id
		r.enc.b = c[at[2*i+1] : int(at[2*i+1])+len(r.enc.b)]
		v := values{s: r.enc.b, i: 1}
		v.next() // last_seen
		v.next() // id
		v.next() // host
		if name := v.next(); name == r.d.Name {
			r.d.Name = name
		}
	}
	return p
}

// packedSize is the most bytes r takes in a pack.
func packedSize(r *row) int {
	n := uvarintLen(len(r.d.ID)) + len(r.d.ID) + uvarintLen(len(r.enc.b)) + len(r.enc.b)
	if r.enc.flags()&rowTextTimes != 0 {
		n += 1 + 3*binary.MaxVarintLen64
	}
	return n
}

func uvarintLen(v int) int {
	var b [binary.MaxVarintLen64]byte
	return len(binary.AppendUvarint(b[:0], uint64(v)))
}

// sortedLocked returns e's rows in list order: its pack's, or sorted now
// when a change dropped the pack.
func (e *nodeEntry) sortedLocked() []*row {
	if e.pack != nil {
		return e.pack.rows
	}
	rs := slices.Clone(e.rows)
	sortRowPtrs(rs)
	return rs
}

// invalidateLocked makes r's encoding again and drops its node's pack.
// Called with the write lock held on every change.
func (s *Store) invalidateLocked(r *row) {
	r.reencode()
	r.node.pack = nil
}

// JSONList is a list of disks encoded as JSON, ready to be written: it
// refers to the store's encodings and packs (which are never modified,
// only replaced), so writing it holds no lock.
type JSONList struct {
	nodes []listNode
	items []listItem // a filtered list's disks; nil when whole packs are listed
	n     int
}

// listItem is one disk of a filtered list: its encoding, its node (an
// index in JSONList.nodes), and whether last_seen is replaced by its
// node's.
type listItem struct {
	c      rowJSON
	id     string // the row's identity (rowIDOut)
	node   int32
	nodeTS bool
}

// listNode is what a list writes for each row of a node: its nodeKey and
// its last-seen time (what a present disk seen before it shows),
// formatted once; and, for an unfiltered list, its pack.
type listNode struct {
	key, ts []byte
	last    stamp    // the node's last-seen
	pack    []string // nodePack.b
}

// Len returns the number of disks.
func (l *JSONList) Len() int { return l.n }

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
		l.items, l.n = l.items[:n], n
	}
	return l
}

func (s *Store) disksJSON(keep func(*disk.Disk) bool, withLabels bool) (l *JSONList, labels []string) {
	s.mu.RLock()
	if s.packsStaleLocked() {
		// The first list after a change: pack the nodes that changed,
		// which moves strings, so under the write lock.
		s.mu.RUnlock()
		s.mu.Lock()
		defer s.mu.Unlock()
		s.packAllLocked()
	} else {
		defer s.mu.RUnlock()
	}
	whole := keep == nil && !withLabels
	l = &JSONList{}
	for _, e := range s.sortedNodesLocked() {
		ni := int32(len(l.nodes))
		l.nodes = append(l.nodes, listNode{key: nodeKey(e.node.ID), last: stampOf(e.node.LastSeen),
			ts: e.node.LastSeen.AppendFormat(nil, time.RFC3339Nano)})
		if whole {
			l.nodes[ni].pack = e.pack.b
			l.n += len(e.pack.rows)
			continue
		}
		for _, r := range e.pack.rows {
			if keep != nil {
				if h := r.hotDisk(); !keep(&h) {
					continue
				}
			}
			l.items = append(l.items, listItem{c: r.enc, id: r.d.ID, node: ni,
				nodeTS: r.d.Present && e.node.LastSeen.After(r.d.LastSeen)})
			if withLabels {
				labels = append(labels, r.label())
			}
		}
	}
	if !whole {
		l.n = len(l.items)
	}
	return l, labels
}

// before reports whether s is an earlier instant than t.
func (s stamp) before(t stamp) bool {
	return s.sec < t.sec || s.sec == t.sec && s.nsec < t.nsec
}

// WriteTo writes the list as a JSON array ("[]" when empty), in chunks of
// listChunk bytes, so a 40 MB list costs a few hundred writes and one
// small buffer.
func (l *JSONList) WriteTo(w io.Writer) (int64, error) {
	buf := make([]byte, 0, listChunk)
	var tc timeCache
	var n int64
	flush := func() error {
		m, err := w.Write(buf)
		n += int64(m)
		buf = buf[:0]
		return err
	}
	buf = append(buf, '[')
	first := true
	put := func(c *rowJSON, id string, nd *listNode, nodeTS bool) error {
		if !first {
			buf = append(buf, ',')
		}
		first = false
		if nodeTS {
			buf = c.write(buf, id, nd.key, nd.ts, &tc)
		} else {
			buf = c.write(buf, id, nd.key, nil, &tc)
		}
		if len(buf) >= listChunk-1024 {
			return flush()
		}
		return nil
	}
	for i := range l.nodes {
		nd := &l.nodes[i]
		for _, chunk := range nd.pack {
			for v := (values{s: chunk}); v.i < len(v.s); {
				id := v.next()
				c := rowJSON{b: v.next()}
				var last stamp
				if c.flags()&rowTextTimes != 0 {
					last, _ = readStamp(v.next())
				} else if c.flags()&rowPresent != 0 {
					last = c.lastSeen()
				}
				nodeTS := c.flags()&rowPresent != 0 && last.before(nd.last)
				if err := put(&c, id, nd, nodeTS); err != nil {
					return n, err
				}
			}
		}
	}
	for i := range l.items {
		it := &l.items[i]
		if err := put(&it.c, it.id, &l.nodes[it.node], it.nodeTS); err != nil {
			return n, err
		}
	}
	buf = append(buf, ']')
	return n, flush()
}

// lastSeen reads last_seen, a stamp unless rowTextTimes.
func (c *rowJSON) lastSeen() stamp {
	v := values{s: c.b, i: 1}
	st, _ := readStamp(v.next())
	return st
}

// listChunk is the size of the writes of a JSONList.
const listChunk = 64 << 10
