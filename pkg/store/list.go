package store

import (
	"bytes"
	"io"
	"time"

	"github.com/diskd/diskd/pkg/disk"
)

// The list reply is the daemon's largest (100,000 disks, about 40 MB of
// JSON), and between two changes it is the same bytes. So each row keeps
// its own encoding (rowJSON), made the first time it is listed after it
// changed, and a list is the cached encodings in table order. Two things
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

// rowJSON is one row's disk encoded as disk.AppendJSON encodes it, but
// for what is written twice: the node ID, the same 46 bytes in every row
// of a node, is left out at b[idEnd] (just after the identity) and
// written by the list once per node (nodeKey); the UUID, when the
// identity is "uuid:" and that very UUID (as blkid prints most), is left
// out at b[uuidOff] and written from the identity (uuidOff is 0 when it
// is in b). last_seen is at b[tsOff:tsEnd] (inside the quotes), encoding
// ts.
type rowJSON struct {
	b                            []byte
	idEnd, uuidOff, tsOff, tsEnd int32
	ts                           time.Time
}

var (
	uuidKey = []byte(`,"uuid":`)
	idUUID  = `{"id":"` + disk.IdentityUUID // how an encoding with uuidOff starts
)

// nodeKey is what a rowJSON leaves out: `,"node_id":"NODE"`.
func nodeKey(node disk.NodeID) []byte {
	return disk.AppendJSONString([]byte(`,"node_id":`), string(node))
}

// appendTo appends the encoding with the node's part put back (node is
// nodeKey's) and last_seen replaced by ts unless ts is nil.
func (c *rowJSON) appendTo(b, node, ts []byte) []byte {
	b = append(b, c.b[:c.idEnd]...)
	b = append(b, node...)
	rest := c.idEnd
	if c.uuidOff > 0 {
		// The identity's string is "uuid:" and the UUID's, escaped alike.
		b = append(b, c.b[rest:c.uuidOff]...)
		b = append(b, uuidKey...)
		b = append(b, '"')
		b = append(b, c.b[len(idUUID):c.idEnd]...)
		rest = c.uuidOff
	}
	if ts == nil {
		return append(b, c.b[rest:]...)
	}
	b = append(b, c.b[rest:c.tsOff]...)
	b = append(b, ts...)
	return append(b, c.b[c.tsEnd:]...)
}

// sameTime reports whether a and b format the same way: the same instant
// in the same location.
func sameTime(a, b time.Time) bool { return a.Equal(b) && a.Location() == b.Location() }

var lastSeenKey = []byte(`,"last_seen":"`)

// encodeRow encodes d (whose LastSeen is the row's own), into a slice of
// its own length: 100,000 of them are kept.
func encodeRow(d *disk.Disk) *rowJSON {
	if d.Mounts == nil {
		// As readers see it (cloneMounts): "mountpoints": [], never null.
		c := *d
		c.Mounts = []string{}
		d = &c
	}
	var scratch [1024]byte
	full := disk.AppendJSON(scratch[:0], d)
	// The identity is the first key, the node ID the second.
	idEnd := len(disk.AppendJSONString([]byte(`{"id":`), d.ID))
	nodeEnd := idEnd + len(nodeKey(d.Node))
	cut := nodeEnd - idEnd
	uOff, uEnd := 0, 0
	if d.UUID != "" && d.ID == disk.IdentityUUID+d.UUID {
		// A quote is escaped inside a string, so the key's first
		// occurrence is the key.
		uOff = bytes.Index(full[nodeEnd:], uuidKey) + nodeEnd
		uEnd = uOff + len(disk.AppendJSONString(uuidKey, d.UUID))
		cut += uEnd - uOff
	}
	b := make([]byte, 0, len(full)-cut)
	b = append(b, full[:idEnd]...)
	if uOff > 0 {
		b = append(b, full[nodeEnd:uOff]...)
		b = append(b, full[uEnd:]...)
		uOff -= nodeEnd - idEnd
	} else {
		b = append(b, full[nodeEnd:]...)
	}
	// last_seen is the last key but not_unique; find it from the end.
	off := lastIndex(b, lastSeenKey) + len(lastSeenKey)
	end := off
	for b[end] != '"' {
		end++
	}
	return &rowJSON{b: b, idEnd: int32(idEnd), uuidOff: int32(uOff), tsOff: int32(off), tsEnd: int32(end), ts: d.LastSeen}
}

func lastIndex(b, sep []byte) int {
	for i := len(b) - len(sep); i >= 0; i-- {
		if string(b[i:i+len(sep)]) == string(sep) {
			return i
		}
	}
	return -1
}

// withTime returns c with last_seen changed to t.
func (c *rowJSON) withTime(t time.Time) *rowJSON {
	var scratch [64]byte
	ts := t.AppendFormat(scratch[:0], time.RFC3339Nano)
	b := make([]byte, 0, int(c.tsOff)+len(ts)+len(c.b)-int(c.tsEnd))
	b = append(b, c.b[:c.tsOff]...)
	b = append(b, ts...)
	end := len(b)
	b = append(b, c.b[c.tsEnd:]...)
	return &rowJSON{b: b, idEnd: c.idEnd, uuidOff: c.uuidOff, tsOff: c.tsOff, tsEnd: int32(end), ts: t}
}

// encodingLocked returns r's encoding with its own last-seen, splicing
// in the time an unchanged report refreshed. Called under the read lock
// by any number of readers at once: each would store the same bytes.
func (r *row) encodingLocked() *rowJSON {
	c := r.enc.Load()
	if sameTime(c.ts, r.d.LastSeen) {
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
	rs := make([]*row, 0, len(e.rows))
	for r := range e.rows {
		rs = append(rs, r)
	}
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
			it := listItem{node: ni}
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
			buf = it.c.appendTo(buf, nd.key, nd.ts)
		} else {
			buf = it.c.appendTo(buf, nd.key, nil)
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
