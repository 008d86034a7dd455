// Package store owns diskd's network-wide table: every node (this one and
// its peers) and every disk they have reported, present or remembered. It is
// the only place the table changes; scanners and the peer receiver feed it,
// and readers either query it or subscribe to its typed change events. It
// also persists the table (see persist.go) so history survives restarts.
//
// A disk is a row keyed by its identity (disk.Identity: filesystem UUID,
// else partition UUID, else the weak node/name/size), not by where it sits:
// the node and kernel name are its current placement, and earlier
// placements are its history (bounded, newest first). A report of a device
// is matched to a row in this order (see matchLocked):
//
//  1. the row whose current placement is exactly that node and kernel name
//     and that carries that identity (the primary row, or a clone row);
//  2. else the primary row of that identity if it is not present elsewhere
//     (the disk was moved or reattached: the placement moves, the old one
//     goes to the history);
//  3. else a clone row, keyed disk.CloneKey(identity, node, name): the same
//     identity is present twice at once (a filesystem copied with dd), and
//     neither overwrites the other. Both rows say NotUnique.
//
// When a primary row goes absent while exactly one clone row of it is
// present, the clone is merged into the primary (promoted): the primary
// takes the clone's placement, keeping its own history, and the clone row
// is forgotten. That is one event for each row, and it is what keeps a
// disk moved between machines one row even when the new machine reports it
// before the old one is known to have lost it.
//
// Bounds: peers (MaxPeers), rows placed on one node (MaxDisksPerNode), rows
// in total (MaxDisks) and sightings per row (HistoryPerDisk). When a bound
// is reached, the oldest thing that is not present makes room (the peer
// heard least recently, offline ones first; the row absent the longest);
// every such decision is counted in Stats.
//
// Readers of 100,000 rows do not walk them: each row is kept as the values
// of its JSON encoding, which a list writes between constant keys
// (compact.go, list.go, stamp.go), each node's rows are packed in list
// order until a change, and `where` looks names up in an index
// (index.go). Every change of a row goes through markRow (which encodes
// it again and drops its node's pack) and every
// change of the names it answers to through fill, promoteLocked or
// forgetRowLocked (which keep the index in step); TestDerivedViewsStayInStep
// holds both to a scan.
package store

import (
	"cmp"
	"container/heap"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/diskd/diskd/pkg/disk"
)

// Defaults of the bounds.
const (
	DefaultMaxPeers        = 4096
	DefaultMaxDisksPerNode = 4096
	// DefaultMaxDisks is sized for a network that has seen 100,000 disks,
	// with room to spare; about 350 B of live heap each (README figures).
	DefaultMaxDisks = 131072
	// DefaultHistoryPerDisk is how many placements a disk remembers,
	// the current one included.
	DefaultHistoryPerDisk = 16
)

// Options configures a Store.
type Options struct {
	// Local is this node. Its ID must be set.
	Local disk.Node
	// MaxPeers bounds the number of peer nodes; when full, the peer heard
	// least recently (offline ones first, then online ones) is forgotten
	// with its disks, so a new machine always finds room. 0 means
	// DefaultMaxPeers.
	MaxPeers int
	// MaxDisksPerNode bounds the rows placed on one node, present and
	// remembered. A report beyond it first displaces that node's oldest
	// absent rows, then is truncated (and counted). 0 means
	// DefaultMaxDisksPerNode.
	MaxDisksPerNode int
	// MaxDisks bounds the rows in total (local and remote, present and
	// remembered): the row absent the longest makes room; when every row
	// is present, the peer heard least recently does. 0 means
	// DefaultMaxDisks.
	MaxDisks int
	// HistoryPerDisk bounds the sightings a row keeps, the current one
	// included; the oldest are dropped. 0 means DefaultHistoryPerDisk.
	HistoryPerDisk int
	// Logger receives the store's few messages. nil discards them.
	Logger *slog.Logger
	// Now returns the current time; nil means time.Now. Tests set it.
	Now func() time.Time
}

// Store is the table. All methods are safe for concurrent use.
type Store struct {
	opts Options
	log  *slog.Logger
	now  func() time.Time

	mu       sync.RWMutex
	nodes    map[disk.NodeID]*nodeEntry
	rows     map[disk.Key]*row
	clones   map[string][]*row // clone rows by identity; only identities that have any
	absent   absentHeap        // rows not present, the longest gone first
	localGen uint64
	subs     map[*Subscription]struct{}
	dirty    dirtySet
	dirtyC   chan struct{} // signalled (non-blocking) when dirty gains entries
	stats    Stats
	where    whereIndex // rows by the names `where` matches
	version  atomic.Uint64
	flushes  atomic.Uint64
}

type nodeEntry struct {
	node disk.Node
	rows []*row // rows whose current placement is on this node, in no order (row.nidx)
	// pack is rows in list order with their bytes laid end to end, made
	// by the first list after a change (see list.go); nil until then.
	pack *nodePack
}

// row is one disk: d holds its current (or last) placement and state (its
// key is row.key); the rest of the disk is in enc (see compact.go).
type row struct {
	d    rowDisk
	node *nodeEntry // the node it is placed on (placeLocked)
	// extra is what few rows have: placements beyond the current one (a
	// disk never moved, whose placement began when it was first seen,
	// has none: see since) and the disk as reported when enc cannot give
	// it back (raw). nil for most rows.
	extra *placements
	// enc is the disk's JSON values (disk.AppendJSON's, see rowJSON),
	// made on every change (markRow); never empty while the row is in
	// the table. Its bytes are in its node's pack once a list made one.
	enc rowJSON
	// nidx is the row's index in its node's rows (nodeEntry.rows).
	nidx int32
	// refreshed says d.LastSeen may have moved since enc was made (an
	// unchanged report refreshed it: updateLocked): the next pack
	// splices it in (packLocked). It fits in the row's padding.
	refreshed bool
}

// Stats counts what the store did that a user may want to know about:
// one counter per bound, and subscribers dropped.
type Stats struct {
	TruncatedReports     uint64 // disks of a report beyond MaxDisksPerNode, not kept
	EvictedPeers         uint64 // peers forgotten to stay under MaxPeers
	EvictedDisks         uint64 // absent rows forgotten to stay under MaxDisks
	EvictedPeersForDisks uint64 // peers forgotten to stay under MaxDisks (every row present)
	RefusedDisks         uint64 // disks not kept: MaxDisks reached and nothing could make room
	NodeHistoryEvicted   uint64 // absent rows of a node forgotten to stay under MaxDisksPerNode
	HistoryTrimmed       uint64 // sightings dropped to stay under HistoryPerDisk
	DroppedSubs          uint64 // subscribers closed for falling behind
	StateWrites          uint64 // state file transactions committed (Flushes)
}

// Map returns the counters by the names status shows.
func (st Stats) Map() map[string]uint64 {
	return map[string]uint64{
		"truncated_reports":       st.TruncatedReports,
		"evicted_peers":           st.EvictedPeers,
		"evicted_disks":           st.EvictedDisks,
		"evicted_peers_for_disks": st.EvictedPeersForDisks,
		"refused_disks":           st.RefusedDisks,
		"node_history_evicted":    st.NodeHistoryEvicted,
		"history_trimmed":         st.HistoryTrimmed,
		"dropped_subscribers":     st.DroppedSubs,
		"state_writes":            st.StateWrites,
	}
}

// ErrOverflow is a Subscription's Err when it fell behind and was closed.
var ErrOverflow = errors.New("subscriber fell behind; re-read the table and subscribe again")

// New returns an empty store holding only the local node.
func New(opts Options) *Store {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&opts.MaxPeers, DefaultMaxPeers)
	def(&opts.MaxDisksPerNode, DefaultMaxDisksPerNode)
	def(&opts.MaxDisks, DefaultMaxDisks)
	def(&opts.HistoryPerDisk, DefaultHistoryPerDisk)
	s := &Store{
		opts:   opts,
		log:    opts.Logger,
		now:    opts.Now,
		nodes:  make(map[disk.NodeID]*nodeEntry),
		rows:   make(map[disk.Key]*row),
		clones: make(map[string][]*row),
		subs:   make(map[*Subscription]struct{}),
		dirty:  newDirtySet(),
		dirtyC: make(chan struct{}, 1),
		where:  newWhereIndex(),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	// Times are kept to the microsecond, the precision of the D-Bus API's
	// LastSeen (t, µs since the epoch), so the socket and the bus report
	// the very same instants.
	clock := s.now
	s.now = func() time.Time { return clock().Truncate(time.Microsecond) }
	local := opts.Local
	local.Local = true
	local.Online = true
	local.LastSeen = s.now()
	s.nodes[local.ID] = newNodeEntry(local)
	return s
}

func newNodeEntry(n disk.Node) *nodeEntry {
	return &nodeEntry{node: n}
}

// LocalNode returns this node.
func (s *Store) LocalNode() disk.Node {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.nodeCopy(s.nodes[s.opts.Local.ID])
}

// SetLocalAddresses records this node's addresses, as peers would see them.
func (s *Store) SetLocalAddresses(addrs []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.nodes[s.opts.Local.ID]
	if slices.Equal(e.node.Addresses, addrs) {
		return
	}
	e.node.Addresses = slices.Clone(addrs)
	s.markNode(e)
	s.publish(disk.Event{Kind: disk.NodeChanged, Node: ptr(s.nodeCopy(e))})
}

// LocalDisks returns the present local disks and the local inventory
// generation, which grows by one on every change of that set.
func (s *Store) LocalDisks() (gen uint64, disks []disk.Disk) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, r := range s.nodes[s.opts.Local.ID].rows {
		if r.d.Present {
			disks = append(disks, r.disk())
		}
	}
	sortDisks(disks)
	return s.localGen, disks
}

// SetLocal replaces the local inventory with a full scan's result: listed
// disks are present, local disks not listed become not present (history).
// Fields the store maintains (ID, Node, Host, Present, times) are filled in.
func (s *Store) SetLocal(disks []disk.Disk) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.nodes[s.opts.Local.ID]
	e.node.LastSeen = s.now()
	if s.replaceLocked(e, disks) {
		s.localGen++
	}
}

// ApplyPeer replaces a peer's inventory with a complete report and marks
// the peer online and heard now. Name and addresses are taken from n.
func (s *Store) ApplyPeer(n disk.Node, disks []disk.Disk) {
	if n.ID == s.opts.Local.ID {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.touchLocked(n)
	if len(disks) > s.opts.MaxDisksPerNode {
		s.stats.TruncatedReports += uint64(len(disks) - s.opts.MaxDisksPerNode)
		disks = disks[:s.opts.MaxDisksPerNode]
	}
	s.replaceLocked(e, disks)
}

// TouchPeer records that a peer was heard (a heartbeat): it is online now.
// A heartbeat that changes nothing but the time is not written to the
// state file; the time is, with the next real change or at a clean stop.
func (s *Store) TouchPeer(n disk.Node) {
	if n.ID == s.opts.Local.ID {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.touchLocked(n)
}

// SetPeerOffline marks a peer offline; its disks stay in history, marked
// not present, with their last-seen times.
func (s *Store) SetPeerOffline(id disk.NodeID) {
	if id == s.opts.Local.ID {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.nodes[id]
	if !ok || !e.node.Online {
		return
	}
	e.node.Online = false
	s.markNode(e)
	s.publish(disk.Event{Kind: disk.NodeChanged, Node: ptr(s.nodeCopy(e))})
	leaving := e.presentRows()
	set := rowSet(leaving)
	for _, r := range leaving {
		s.goneLocked(r, e.node.LastSeen, set)
	}
}

// touchLocked creates or refreshes a peer entry and marks it online.
func (s *Store) touchLocked(n disk.Node) *nodeEntry {
	now := s.now()
	e, ok := s.nodes[n.ID]
	if !ok {
		s.evictForNewPeerLocked()
		e = newNodeEntry(disk.Node{ID: n.ID})
		s.nodes[n.ID] = e
	}
	// Only the legacy path says it is one when it touches a node; the
	// other paths are set with SetPeerReach.
	legacy := n.Reach.Legacy() != e.node.Reach.Legacy()
	changed := !ok || !e.node.Online || e.node.Name != n.Name || legacy ||
		(n.Addresses != nil && !slices.Equal(e.node.Addresses, n.Addresses))
	e.node.Name = n.Name
	if legacy {
		e.node.Reach = n.Reach
	}
	if n.Addresses != nil && !slices.Equal(e.node.Addresses, n.Addresses) {
		e.node.Addresses = slices.Clone(n.Addresses)
	}
	e.node.Online = true
	e.node.LastSeen = now
	if changed {
		s.markNode(e)
		s.publish(disk.Event{Kind: disk.NodeChanged, Node: ptr(s.nodeCopy(e))})
	}
	return e
}

// evictForNewPeerLocked makes room for one more peer by forgetting the
// peer heard least recently: offline ones first, then online ones. A
// flood of made-up nodes then displaces itself, while a real machine,
// heard every heartbeat, stays and a new one always gets in.
func (s *Store) evictForNewPeerLocked() {
	if len(s.nodes)-1 < s.opts.MaxPeers {
		return
	}
	if e := s.leastRecentPeerLocked(""); e != nil {
		s.stats.EvictedPeers++
		s.forgetNodeLocked(e)
	}
}

// leastRecentPeerLocked returns the peer (not the local node, nor spare)
// heard least recently, offline ones before online ones; nil if none.
func (s *Store) leastRecentPeerLocked(spare disk.NodeID) *nodeEntry {
	var best *nodeEntry
	for _, e := range s.nodes {
		if e.node.Local || e.node.ID == spare {
			continue
		}
		if best == nil || e.node.Online != best.node.Online && !e.node.Online ||
			e.node.Online == best.node.Online && (e.node.LastSeen.Before(best.node.LastSeen) ||
				e.node.LastSeen.Equal(best.node.LastSeen) && e.node.ID < best.node.ID) {
			best = e
		}
	}
	return best
}

func (s *Store) forgetNodeLocked(e *nodeEntry) {
	var ids []string // identities that may have lost a present copy
	for _, r := range sortedRowSet(e.rows) {
		if r.d.Present {
			ids = append(ids, r.d.ID)
		}
		s.forgetRowLocked(r)
	}
	delete(s.nodes, e.node.ID)
	s.dirty.forgetNode(e.node.ID)
	s.signalDirty()
	s.publish(disk.Event{Kind: disk.NodeForgotten, Node: ptr(s.nodeCopy(e))})
	for _, id := range ids {
		s.uniqueLocked(id, nil)
	}
}

// replaceLocked makes e's present set exactly disks and reports whether
// anything changed.
func (s *Store) replaceLocked(e *nodeEntry, disks []disk.Disk) bool {
	now := s.now()
	changed := false
	// What was present before this report: whatever of it the report does
	// not name goes absent at the end.
	before := e.presentRows()
	in := make([]disk.Disk, 0, len(disks))
	names := make(map[string]bool, len(disks))
	for i := range disks {
		d := disks[i]
		if d.Name == "" || names[d.Name] {
			continue
		}
		names[d.Name] = true
		d.Node = e.node.ID
		d.Host = e.node.Name
		d.Mounts = cloneMounts(d.Mounts)
		d.ID = disk.Identity(&d)
		d.Row, d.NotUnique = "", false
		in = append(in, d)
	}
	// Pass 1: devices still where they were, so that the order of a report
	// never decides which of two clones is which.
	matched := make(map[*row]bool, len(in))
	var rest []*disk.Disk
	for i := range in {
		d := &in[i]
		r := s.atPlaceLocked(d.ID, d.Node, d.Name)
		if r == nil || matched[r] {
			rest = append(rest, d)
			continue
		}
		matched[r] = true
		changed = s.updateLocked(r, d, now) || changed
	}
	// Pass 2: moved, reattached, new, or a clone.
	for _, d := range rest {
		p := s.rows[disk.Key(d.ID)]
		switch {
		case p != nil && !matched[p] && (!p.d.Present || p.nodeID() == e.node.ID):
			// Absent, or present on this very node but not in this full
			// report: it moved (here, or from elsewhere on this node).
			matched[p] = true
			s.moveLocked(p, e, d, now)
			changed = true
		case p == nil:
			if r := s.addLocked(e, disk.Key(d.ID), d, now); r != nil {
				matched[r] = true
				changed = true
			}
		default:
			if r := s.addLocked(e, disk.CloneKey(d.ID, d.Node, d.Name), d, now); r != nil {
				matched[r] = true
				changed = true
			}
		}
	}
	var leaving []*row
	for _, r := range before {
		if !matched[r] && r.d.Present && s.rows[r.key()] == r {
			leaving = append(leaving, r)
		}
	}
	set := rowSet(leaving)
	for _, r := range leaving {
		s.goneLocked(r, now, set)
		changed = true
	}
	return changed
}

// atPlaceLocked returns the row of identity id whose current placement is
// node/name, primary or clone.
func (s *Store) atPlaceLocked(id string, node disk.NodeID, name string) *row {
	if r := s.rows[disk.Key(id)]; r != nil && r.nodeID() == node && r.d.Name == name {
		return r
	}
	return s.rows[disk.CloneKey(id, node, name)]
}

// updateLocked applies a report to the row placed where it was reported.
func (s *Store) updateLocked(r *row, in *disk.Disk, now time.Time) bool {
	if r.d.Present && r.sameDevice(in) {
		// Unchanged: refresh last-seen without an event or a write.
		// Persisted last-seen is refreshed when something else changes or
		// at a clean stop (see Flush), which is what "last seen" needs:
		// the peer's offline time bounds it from below.
		r.d.LastSeen = now
		r.refreshed = true
		r.node.pack = nil
		return false
	}
	wasPresent := r.d.Present
	s.fill(r, in, now)
	if !wasPresent {
		s.setPresentLocked(r)
	}
	s.uniqueLocked(r.d.ID, r)
	s.markRow(r)
	s.publish(disk.Event{Kind: disk.DiskChanged, Disk: ptr(r.disk())})
	return true
}

// fill copies a report into r, keeping what the store maintains.
func (s *Store) fill(r *row, in *disk.Disk, now time.Time) {
	first, key, nu := r.d.FirstSeen, r.key(), r.d.NotUnique
	s.where.remove(r)
	d := *in
	d.FirstSeen, d.LastSeen, d.Present, d.NotUnique = first, now, true, nu
	r.set(&d)
	if key != "" { // not a new row: its key stays, whatever the identity's spelling now
		r.setKey(key)
	}
	s.where.add(r)
}

// moveLocked gives p (the primary row of in's identity) in's placement on
// e; its old placement goes to its history.
func (s *Store) moveLocked(p *row, e *nodeEntry, in *disk.Disk, now time.Time) {
	if p.nodeID() != in.Node || p.d.Name != in.Name {
		if p.nodeID() != e.node.ID && !s.roomOnNodeLocked(e, p) {
			// No room on e: the row stays where it was, absent; the
			// report is counted as truncated.
			s.stats.TruncatedReports++
			if p.d.Present {
				s.goneLocked(p, now, nil)
			}
			return
		}
		s.pushPastLocked(p, s.sighting(p))
		s.unplaceLocked(p)
		p.setSince(now)
		s.fill(p, in, now)
		s.placeLocked(p, e)
	} else {
		s.fill(p, in, now)
	}
	s.setPresentLocked(p)
	s.uniqueLocked(p.d.ID, p)
	s.markRow(p)
	s.publish(disk.Event{Kind: disk.DiskChanged, Disk: ptr(p.disk())})
}

// addLocked creates a row under key for a report on e; nil when no room
// could be made.
func (s *Store) addLocked(e *nodeEntry, key disk.Key, in *disk.Disk, now time.Time) *row {
	if !s.roomOnNodeLocked(e, nil) {
		s.stats.TruncatedReports++
		return nil
	}
	if !s.roomInTableLocked(e) {
		s.stats.RefusedDisks++
		return nil
	}
	r := &row{node: e}
	s.fill(r, in, now)
	r.d.FirstSeen, r.d.hidx = now, -1
	r.setKey(key)
	r.setSince(now)
	s.rows[key] = r
	if key.IsClone() {
		s.clones[r.d.ID] = append(s.clones[r.d.ID], r)
	}
	s.placeLocked(r, e)
	s.setPresentLocked(r)
	s.uniqueLocked(r.d.ID, r)
	s.markRow(r)
	s.publish(disk.Event{Kind: disk.DiskAdded, Disk: ptr(r.disk())})
	return r
}

// roomOnNodeLocked makes room for one more row on e (not counting keep,
// which is already there or arriving) by forgetting e's longest-absent row.
func (s *Store) roomOnNodeLocked(e *nodeEntry, keep *row) bool {
	if len(e.rows) < s.opts.MaxDisksPerNode {
		return true
	}
	var oldest *row
	for _, r := range e.rows {
		if r != keep && !r.d.Present && (oldest == nil || olderRow(r, oldest)) {
			oldest = r
		}
	}
	if oldest == nil {
		return false
	}
	s.stats.NodeHistoryEvicted++
	s.forgetRowLocked(oldest)
	return true
}

// roomInTableLocked makes room for one more row in the table: the row
// absent the longest goes; when every row is present, the peer heard
// least recently (never e itself) goes with its rows.
func (s *Store) roomInTableLocked(e *nodeEntry) bool {
	for len(s.rows) >= s.opts.MaxDisks {
		if len(s.absent) > 0 {
			s.stats.EvictedDisks++
			s.forgetRowLocked(s.absent[0])
			continue
		}
		victim := s.leastRecentPeerLocked(e.node.ID)
		if victim == nil || len(victim.rows) == 0 {
			return false
		}
		s.stats.EvictedPeersForDisks++
		s.forgetNodeLocked(victim)
	}
	return true
}

// goneLocked marks r not present since at. A primary whose only present
// clone stays (is not in leaving, the rows going with it in this change)
// becomes that clone (see the package doc).
func (s *Store) goneLocked(r *row, at time.Time, leaving map[*row]bool) {
	if c := s.soleCloneLocked(r, leaving); c != nil {
		s.promoteLocked(r, c)
		return
	}
	r.d.Present = false
	r.d.LastSeen = at
	heap.Push(&s.absent, r)
	s.uniqueLocked(r.d.ID, r, leaving)
	s.markRow(r)
	s.publish(disk.Event{Kind: disk.DiskChanged, Disk: ptr(r.disk())})
}

// soleCloneLocked returns the one present clone of primary row p that is
// not leaving, or nil when p is not a primary or has none or several.
func (s *Store) soleCloneLocked(p *row, leaving map[*row]bool) *row {
	if p.key().IsClone() {
		return nil
	}
	var sole *row
	for _, c := range s.clones[p.d.ID] {
		if c.d.Present && !leaving[c] {
			if sole != nil {
				return nil
			}
			sole = c
		}
	}
	return sole
}

// promoteLocked merges clone c into primary p, which is going absent: p
// takes c's placement and state, its old placement goes to its history,
// and c is forgotten. One event each.
func (s *Store) promoteLocked(p, c *row) {
	s.pushPastLocked(p, s.sighting(p))
	for i := len(c.past()) - 1; i >= 0; i-- {
		s.pushPastLocked(p, c.past()[i])
	}
	first := min64(p.d.FirstSeen, c.d.FirstSeen)
	e := c.node
	s.forgetRowLocked(c)
	s.unplaceLocked(p)
	key := p.key()
	s.where.remove(p)
	hidx := p.d.hidx
	p.d = c.d
	p.setRaw(c.rawDisk())
	p.d.hidx = hidx
	p.enc = c.enc
	p.d.FirstSeen = first
	p.setKey(key)
	s.where.add(p)
	p.setSince(c.since())
	s.placeLocked(p, e)
	s.setPresentLocked(p)
	s.uniqueLocked(p.d.ID, p)
	s.markRow(p)
	s.publish(disk.Event{Kind: disk.DiskChanged, Disk: ptr(p.disk())})
}

func rowSet(rs []*row) map[*row]bool {
	m := make(map[*row]bool, len(rs))
	for _, r := range rs {
		m[r] = true
	}
	return m
}

func min64(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// uniqueLocked sets NotUnique on every row of identity id: true while two
// or more of them are present. Rows other than self that change are
// published; self is published by the caller. Rows in leaving (going
// absent in this same change) count as gone and are left to their own
// turn, so no row gets two events for one change.
func (s *Store) uniqueLocked(id string, self *row, leaving ...map[*row]bool) {
	gone := func(r *row) bool {
		for _, l := range leaving {
			if l[r] && r != self {
				return true
			}
		}
		return false
	}
	p := s.rows[disk.Key(id)]
	cs := s.clones[id]
	n := 0
	if p != nil && p.d.Present && !gone(p) {
		n++
	}
	for _, c := range cs {
		if c.d.Present && !gone(c) {
			n++
		}
	}
	nu := n >= 2
	set := func(r *row) {
		if r == nil || r.d.NotUnique == nu || gone(r) {
			return
		}
		r.d.NotUnique = nu
		if r != self {
			s.markRow(r)
			s.publish(disk.Event{Kind: disk.DiskChanged, Disk: ptr(r.disk())})
		}
	}
	set(p)
	for _, c := range cs {
		set(c)
	}
}

// sighting is r's current placement as a history entry.
func (s *Store) sighting(r *row) disk.Sighting {
	last := r.d.LastSeen
	if r.d.Present {
		if r.node.node.LastSeen.After(last) {
			last = r.node.node.LastSeen
		}
	}
	d := r.disk()
	return disk.Sighting{Node: d.Node, Host: d.Host, Name: d.Name, Device: d.Device,
		FirstSeen: r.since(), LastSeen: last}
}

// pushPastLocked adds a sighting at the front of r's history, dropping
// the oldest beyond the bound (which counts the current placement).
func (s *Store) pushPastLocked(r *row, sg disk.Sighting) {
	since := r.since()
	if r.extra == nil {
		r.extra = &placements{since: since}
	}
	r.extra.past = slices.Insert(r.extra.past, 0, sg)
	if max := s.opts.HistoryPerDisk - 1; len(r.extra.past) > max {
		s.stats.HistoryTrimmed += uint64(len(r.extra.past) - max)
		r.extra.past = slices.Clip(r.extra.past[:max])
	}
}

func (s *Store) placeLocked(r *row, e *nodeEntry) {
	r.node = e
	e.pack = nil
	if i := int(r.nidx); i >= len(e.rows) || e.rows[i] != r { // not there yet
		r.nidx = int32(len(e.rows))
		e.rows = append(e.rows, r)
	}
}

func (s *Store) unplaceLocked(r *row) {
	e := r.node
	e.pack = nil
	if i := int(r.nidx); i < len(e.rows) && e.rows[i] == r {
		last := e.rows[len(e.rows)-1]
		e.rows[i], last.nidx = last, int32(i)
		e.rows[len(e.rows)-1] = nil
		e.rows = e.rows[:len(e.rows)-1]
	}
}

// setPresentLocked records that r is present at its placement.
func (s *Store) setPresentLocked(r *row) {
	r.d.Present = true
	if r.d.hidx >= 0 {
		heap.Remove(&s.absent, int(r.d.hidx))
	}
}

// forgetRowLocked removes r from the table.
func (s *Store) forgetRowLocked(r *row) {
	s.unplaceLocked(r)
	if r.d.hidx >= 0 {
		heap.Remove(&s.absent, int(r.d.hidx))
	}
	delete(s.rows, r.key())
	s.where.remove(r)
	if r.key().IsClone() {
		cs := slices.DeleteFunc(s.clones[r.d.ID], func(c *row) bool { return c == r })
		if len(cs) == 0 {
			delete(s.clones, r.d.ID)
		} else {
			s.clones[r.d.ID] = cs
		}
	}
	s.dirty.forgetRow(r.key())
	s.signalDirty()
	s.publish(disk.Event{Kind: disk.DiskForgotten, Disk: ptr(r.disk())})
}

// Disks returns copies of the disks keep accepts (all when keep is nil),
// sorted by host, then device. keep sees the row's own disk (LastSeen not
// yet raised to its node's) and must not hold on to it.
func (s *Store) Disks(keep func(*disk.Disk) bool) []disk.Disk {
	s.mu.RLock()
	defer s.mu.RUnlock()
	nodes := s.sortedNodesLocked()
	var out []disk.Disk
	if keep == nil {
		out = make([]disk.Disk, 0, len(s.rows))
	}
	for _, e := range nodes {
		for _, r := range e.sortedLocked() {
			d := r.disk()
			if keep != nil && !keep(&d) {
				continue
			}
			if d.Present && e.node.LastSeen.After(d.LastSeen) {
				d.LastSeen = e.node.LastSeen // as diskCopy
			}
			out = append(out, d)
		}
	}
	return out
}

// sortedNodesLocked returns the nodes by name, then ID. Rows are sorted
// per node (nodeEntry.sortedLocked), and only again after a change.
func (s *Store) sortedNodesLocked() []*nodeEntry {
	nodes := make([]*nodeEntry, 0, len(s.nodes))
	for _, e := range s.nodes {
		nodes = append(nodes, e)
	}
	slices.SortFunc(nodes, func(a, b *nodeEntry) int {
		return cmp.Or(cmp.Compare(a.node.Name, b.node.Name), cmp.Compare(a.node.ID, b.node.ID))
	})
	return nodes
}

// sortRowPtrs orders one node's rows by device, then kernel name, present
// before remembered, then key. The device is read from each row's
// encoding once, not at every comparison.
func sortRowPtrs(ptrs []*row) {
	type sortKey struct {
		dev string
		r   *row
	}
	ks := make([]sortKey, len(ptrs))
	for i, r := range ptrs {
		ks[i] = sortKey{r.device(), r}
	}
	slices.SortFunc(ks, func(x, y sortKey) int {
		a, b := x.r, y.r
		return cmp.Or(cmp.Compare(x.dev, y.dev), cmp.Compare(a.d.Name, b.d.Name),
			-cmpBool(a.d.Present, b.d.Present), cmp.Compare(a.key(), b.key()))
	})
	for i := range ks {
		ptrs[i] = ks[i].r
	}
}

func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}

// diskCopy is r's disk as readers see it: a present disk was seen as
// recently as its node was heard.
func (r *row) diskCopy() disk.Disk {
	c := r.disk()
	if c.Present && r.node.node.LastSeen.After(c.LastSeen) {
		c.LastSeen = r.node.node.LastSeen
	}
	return c
}

// Disk returns one disk by its row key.
func (s *Store) Disk(k disk.Key) (disk.Disk, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	r, ok := s.rows[k]
	if !ok {
		return disk.Disk{}, false
	}
	return r.diskCopy(), true
}

// Where returns the disks q names (label, UUID, PARTUUID, device, identity):
// present ones first, then history, most recently seen first.
func (s *Store) Where(q string) []disk.Disk {
	s.mu.RLock()
	rs := s.where.lookup(q, s.idCandidates(q)...)
	out := make([]disk.Disk, 0, len(rs))
	for _, r := range rs {
		out = append(out, r.diskCopy())
	}
	s.mu.RUnlock()
	SortWhere(out)
	return out
}

// idCandidates returns the rows whose identity is q, or "uuid:" or
// "partuuid:" and q folded (the index leaves out a UUID its identity
// spells: see whereIndex.keys): for each, the primary keyed by it and its
// clones. Called with the lock held.
func (s *Store) idCandidates(q string) []*row {
	var out []*row
	f := foldKey(q)
	for _, id := range [3]string{q, disk.IdentityUUID + f, disk.IdentityPartUUID + f} {
		out = append(out, s.clones[id]...)
		if p := s.rows[disk.Key(id)]; p != nil {
			out = append(out, p)
		}
	}
	return out
}

// SortWhere orders disks as Where does: present first, then the most
// recently seen, then by row key (so equal times keep one order).
func SortWhere(ds []disk.Disk) {
	slices.SortStableFunc(ds, func(a, b disk.Disk) int {
		return cmp.Or(-cmpBool(a.Present, b.Present), b.LastSeen.Compare(a.LastSeen), cmp.Compare(a.Row, b.Row))
	})
}

// History returns the disks q names, as Where orders them but at most
// disk.MaxHistoryDisks, each with its sightings newest first; the first is
// the current placement.
func (s *Store) History(q string) []disk.History {
	ds := s.Where(q)
	if len(ds) > disk.MaxHistoryDisks {
		ds = ds[:disk.MaxHistoryDisks]
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]disk.History, 0, len(ds))
	for _, d := range ds {
		r, ok := s.rows[d.Row]
		if !ok {
			continue // forgotten between the two locks
		}
		h := disk.History{Disk: r.diskCopy()}
		h.Sightings = append(make([]disk.Sighting, 0, 1+len(r.past())), s.sighting(r))
		h.Sightings = append(h.Sightings, r.past()...)
		out = append(out, h)
	}
	return out
}

// Nodes returns every known node, the local one first, then by name.
func (s *Store) Nodes() []disk.Node {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]disk.Node, 0, len(s.nodes))
	for _, e := range s.nodes {
		out = append(out, s.nodeCopy(e))
	}
	slices.SortFunc(out, func(a, b disk.Node) int {
		if a.Local != b.Local {
			if a.Local {
				return -1
			}
			return 1
		}
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.ID, b.ID))
	})
	return out
}

// Node returns one node by ID.
func (s *Store) Node(id disk.NodeID) (disk.Node, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	e, ok := s.nodes[id]
	if !ok {
		return disk.Node{}, false
	}
	return s.nodeCopy(e), true
}

// Counts summarises the table for status lines.
type Counts struct {
	Nodes, NodesOnline, Disks, DisksPresent, LocalPresent int
}

// Counts returns the table's sizes.
func (s *Store) Counts() Counts {
	s.mu.RLock()
	defer s.mu.RUnlock()
	c := Counts{Disks: len(s.rows)}
	for _, e := range s.nodes {
		c.Nodes++
		if e.node.Online {
			c.NodesOnline++
		}
		n := e.presentCount()
		c.DisksPresent += n
		if e.node.Local {
			c.LocalPresent += n
		}
	}
	return c
}

// Stats returns the store's counters.
func (s *Store) Stats() Stats {
	s.mu.RLock()
	defer s.mu.RUnlock()
	st := s.stats
	st.StateWrites = s.flushes.Load()
	return st
}

func (s *Store) nodeCopy(e *nodeEntry) disk.Node {
	n := e.node
	n.Addresses = slices.Clone(n.Addresses)
	n.Disks = e.presentCount()
	return n
}

func cloneDisk(d *disk.Disk) disk.Disk {
	c := *d
	c.Mounts = cloneMounts(d.Mounts)
	return c
}

// cloneMounts never returns nil, so JSON shows "mountpoints": [] rather
// than null.
func cloneMounts(m []string) []string {
	if len(m) == 0 {
		return []string{}
	}
	return slices.Clone(m)
}

func sortDisks(ds []disk.Disk) {
	slices.SortFunc(ds, func(a, b disk.Disk) int {
		return cmp.Or(cmp.Compare(a.Host, b.Host), cmp.Compare(a.Node, b.Node),
			cmp.Compare(a.Device, b.Device), cmp.Compare(a.Name, b.Name), cmp.Compare(a.Row, b.Row))
	})
}

// presentRows returns e's present rows in key order, so that what a
// change does (events, promotions) never depends on the order of e.rows.
func (e *nodeEntry) presentRows() []*row {
	var out []*row
	for _, r := range e.rows {
		if r.d.Present {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b *row) int { return cmp.Compare(a.key(), b.key()) })
	return out
}

// presentCount is the number of e's present rows.
func (e *nodeEntry) presentCount() int {
	n := 0
	for _, r := range e.rows {
		if r.d.Present {
			n++
		}
	}
	return n
}

// sortedRowSet returns a copy of rows in key order.
func sortedRowSet(rows []*row) []*row {
	out := slices.Clone(rows)
	slices.SortFunc(out, func(a, b *row) int { return cmp.Compare(a.key(), b.key()) })
	return out
}

// olderRow orders absent rows for eviction: the longest gone first.
func olderRow(a, b *row) bool {
	if c := a.d.LastSeen.Compare(b.d.LastSeen); c != 0 {
		return c < 0
	}
	return a.key() < b.key()
}

// absentHeap holds the rows that are not present, the longest gone at
// the top, so the MaxDisks bound finds its victim in O(log n).
type absentHeap []*row

func (h absentHeap) Len() int           { return len(h) }
func (h absentHeap) Less(i, j int) bool { return olderRow(h[i], h[j]) }
func (h absentHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].d.hidx, h[j].d.hidx = int32(i), int32(j)
}
func (h *absentHeap) Push(x any) {
	r := x.(*row)
	r.d.hidx = int32(len(*h))
	*h = append(*h, r)
}
func (h *absentHeap) Pop() any {
	old := *h
	r := old[len(old)-1]
	old[len(old)-1] = nil
	r.d.hidx = -1
	*h = old[:len(old)-1]
	return r
}

func ptr[T any](v T) *T { return &v }

// SetPeerReach records how a peer is reached (disk.Node.Reach). It is
// saved with the node only when something else about the node changes: a
// restarted daemon learns it again.
func (s *Store) SetPeerReach(id disk.NodeID, reach disk.Reach) {
	if id == s.opts.Local.ID {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.nodes[id]
	if !ok || e.node.Reach == reach {
		return
	}
	e.node.Reach = reach
	s.publish(disk.Event{Kind: disk.NodeChanged, Node: ptr(s.nodeCopy(e))})
}
