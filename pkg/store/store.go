// Package store owns diskd's network-wide table: every node (this one and
// its peers) and every disk they have reported, present or remembered. It is
// the only place the table changes; scanners and the peer receiver feed it,
// and readers either query it or subscribe to its typed change events. It
// also persists the table (see persist.go) so history survives restarts.
package store

import (
	"cmp"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/diskd/diskd/pkg/disk"
)

// Options configures a Store.
type Options struct {
	// Local is this node. Its ID must be set.
	Local disk.Node
	// MaxPeers bounds the number of peer nodes; when full, the peer offline
	// the longest is forgotten with its disks. 0 means 4096.
	MaxPeers int
	// MaxDisksPerNode bounds one node's disks, present and remembered. A
	// report beyond it is truncated (and counted). 0 means 4096.
	MaxDisksPerNode int
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
	localGen uint64
	subs     map[*Subscription]struct{}
	dirty    dirtySet
	dirtyC   chan struct{} // signalled (non-blocking) when dirty gains entries
	stats    Stats
	version  atomic.Uint64
}

type nodeEntry struct {
	node  disk.Node
	disks map[string]*disk.Disk // by kernel name
}

// Stats counts what the store did that a user may want to know about.
type Stats struct {
	TruncatedReports uint64 // peer reports cut to MaxDisksPerNode
	EvictedPeers     uint64 // peers forgotten to stay under MaxPeers
	DroppedSubs      uint64 // subscribers closed for falling behind
}

// ErrOverflow is a Subscription's Err when it fell behind and was closed.
var ErrOverflow = errors.New("subscriber fell behind; re-read the table and subscribe again")

// New returns an empty store holding only the local node.
func New(opts Options) *Store {
	if opts.MaxPeers <= 0 {
		opts.MaxPeers = 4096
	}
	if opts.MaxDisksPerNode <= 0 {
		opts.MaxDisksPerNode = 4096
	}
	s := &Store{
		opts:   opts,
		log:    opts.Logger,
		now:    opts.Now,
		nodes:  make(map[disk.NodeID]*nodeEntry),
		subs:   make(map[*Subscription]struct{}),
		dirty:  newDirtySet(),
		dirtyC: make(chan struct{}, 1),
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
	s.nodes[local.ID] = &nodeEntry{node: local, disks: make(map[string]*disk.Disk)}
	return s
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
	for _, d := range s.nodes[s.opts.Local.ID].disks {
		if d.Present {
			disks = append(disks, cloneDisk(d))
		}
	}
	sortDisks(disks)
	return s.localGen, disks
}

// SetLocal replaces the local inventory with a full scan's result: listed
// disks are present, local disks not listed become not present (history).
// Fields the store maintains (Node, Host, Present, times) are filled in.
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
		s.stats.TruncatedReports++
		disks = disks[:s.opts.MaxDisksPerNode]
	}
	s.replaceLocked(e, disks)
}

// TouchPeer records that a peer was heard (a heartbeat): it is online now.
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
	for _, d := range e.disks {
		if d.Present {
			d.Present = false
			d.LastSeen = e.node.LastSeen
			s.markDisk(d)
			s.publish(disk.Event{Kind: disk.DiskChanged, Disk: ptr(cloneDisk(d))})
		}
	}
}

// touchLocked creates or refreshes a peer entry and marks it online.
func (s *Store) touchLocked(n disk.Node) *nodeEntry {
	now := s.now()
	e, ok := s.nodes[n.ID]
	if !ok {
		s.evictForNewPeerLocked()
		e = &nodeEntry{node: disk.Node{ID: n.ID}, disks: make(map[string]*disk.Disk)}
		s.nodes[n.ID] = e
	}
	changed := !ok || !e.node.Online || e.node.Name != n.Name ||
		(n.Addresses != nil && !slices.Equal(e.node.Addresses, n.Addresses))
	e.node.Name = n.Name
	if n.Addresses != nil {
		e.node.Addresses = slices.Clone(n.Addresses)
	}
	e.node.Online = true
	e.node.LastSeen = now
	s.markNode(e)
	if changed {
		s.publish(disk.Event{Kind: disk.NodeChanged, Node: ptr(s.nodeCopy(e))})
	}
	return e
}

// evictForNewPeerLocked makes room for one more peer by forgetting the
// peer offline the longest. If every peer is online the table grows past
// the bound by one rather than forget a live machine.
func (s *Store) evictForNewPeerLocked() {
	if len(s.nodes)-1 < s.opts.MaxPeers {
		return
	}
	var oldest *nodeEntry
	for _, e := range s.nodes {
		if e.node.Local || e.node.Online {
			continue
		}
		if oldest == nil || e.node.LastSeen.Before(oldest.node.LastSeen) {
			oldest = e
		}
	}
	if oldest == nil {
		return
	}
	s.stats.EvictedPeers++
	s.forgetNodeLocked(oldest)
}

func (s *Store) forgetNodeLocked(e *nodeEntry) {
	for _, d := range e.disks {
		s.dirty.forgetDisk(d.Key())
		s.publish(disk.Event{Kind: disk.DiskForgotten, Disk: ptr(cloneDisk(d))})
	}
	delete(s.nodes, e.node.ID)
	s.dirty.forgetNode(e.node.ID)
	s.signalDirty()
	s.publish(disk.Event{Kind: disk.NodeForgotten, Node: ptr(s.nodeCopy(e))})
}

// replaceLocked makes e's present set exactly disks and reports whether
// anything changed.
func (s *Store) replaceLocked(e *nodeEntry, disks []disk.Disk) bool {
	now := s.now()
	changed := false
	seen := make(map[string]bool, len(disks))
	for i := range disks {
		in := disks[i]
		if in.Name == "" || seen[in.Name] {
			continue
		}
		seen[in.Name] = true
		in.Node = e.node.ID
		in.Host = e.node.Name
		in.Mounts = cloneMounts(in.Mounts)
		old, ok := e.disks[in.Name]
		switch {
		case !ok:
			if len(e.disks) >= s.opts.MaxDisksPerNode && !s.dropOldestHistoryLocked(e) {
				s.stats.TruncatedReports++
				continue
			}
			in.Present, in.FirstSeen, in.LastSeen = true, now, now
			d := &in
			e.disks[in.Name] = d
			s.markDisk(d)
			s.publish(disk.Event{Kind: disk.DiskAdded, Disk: ptr(cloneDisk(d))})
			changed = true
		case !old.Present || !disk.SameDevice(old, &in):
			in.Present, in.FirstSeen, in.LastSeen = true, old.FirstSeen, now
			*old = in
			s.markDisk(old)
			s.publish(disk.Event{Kind: disk.DiskChanged, Disk: ptr(cloneDisk(old))})
			changed = true
		default:
			// Unchanged: refresh last-seen without an event or a write.
			// Persisted last-seen is refreshed when something else changes
			// or at a clean stop (see Flush), which is what "last seen"
			// needs: the peer's offline time bounds it from below.
			old.LastSeen = now
		}
	}
	for name, d := range e.disks {
		if !seen[name] && d.Present {
			d.Present = false
			d.LastSeen = now
			s.markDisk(d)
			s.publish(disk.Event{Kind: disk.DiskChanged, Disk: ptr(cloneDisk(d))})
			changed = true
		}
	}
	return changed
}

// dropOldestHistoryLocked forgets e's longest-gone absent disk to make room.
func (s *Store) dropOldestHistoryLocked(e *nodeEntry) bool {
	var oldest *disk.Disk
	for _, d := range e.disks {
		if !d.Present && (oldest == nil || d.LastSeen.Before(oldest.LastSeen)) {
			oldest = d
		}
	}
	if oldest == nil {
		return false
	}
	delete(e.disks, oldest.Name)
	s.dirty.forgetDisk(oldest.Key())
	s.signalDirty()
	s.publish(disk.Event{Kind: disk.DiskForgotten, Disk: ptr(cloneDisk(oldest))})
	return true
}

// Disks returns copies of the disks keep accepts (all when keep is nil),
// sorted by host, then device.
func (s *Store) Disks(keep func(*disk.Disk) bool) []disk.Disk {
	s.mu.RLock()
	defer s.mu.RUnlock()
	// Sort nodes, then pointers within each node: swapping pointers rather
	// than whole disks keeps a 100,000-disk list cheap.
	nodes := make([]*nodeEntry, 0, len(s.nodes))
	total := 0
	for _, e := range s.nodes {
		nodes = append(nodes, e)
		total += len(e.disks)
	}
	slices.SortFunc(nodes, func(a, b *nodeEntry) int {
		return cmp.Or(cmp.Compare(a.node.Name, b.node.Name), cmp.Compare(a.node.ID, b.node.ID))
	})
	if keep == nil {
		out := make([]disk.Disk, 0, total)
		return s.appendDisks(out, nodes, keep)
	}
	return s.appendDisks(nil, nodes, keep)
}

func (s *Store) appendDisks(out []disk.Disk, nodes []*nodeEntry, keep func(*disk.Disk) bool) []disk.Disk {
	var ptrs []*disk.Disk
	for _, e := range nodes {
		ptrs = ptrs[:0]
		for _, d := range e.disks {
			if keep == nil || keep(d) {
				ptrs = append(ptrs, d)
			}
		}
		slices.SortFunc(ptrs, func(a, b *disk.Disk) int {
			return cmp.Or(cmp.Compare(a.Device, b.Device), cmp.Compare(a.Name, b.Name))
		})
		for _, d := range ptrs {
			c := cloneDisk(d)
			// A present disk was seen as recently as its node was heard.
			if c.Present && e.node.LastSeen.After(c.LastSeen) {
				c.LastSeen = e.node.LastSeen
			}
			out = append(out, c)
		}
	}
	return out
}

// Disk returns one disk by key.
func (s *Store) Disk(k disk.Key) (disk.Disk, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	e, ok := s.nodes[k.Node]
	if !ok {
		return disk.Disk{}, false
	}
	d, ok := e.disks[k.Name]
	if !ok {
		return disk.Disk{}, false
	}
	c := cloneDisk(d)
	if c.Present && e.node.LastSeen.After(c.LastSeen) {
		c.LastSeen = e.node.LastSeen
	}
	return c, true
}

// Where returns the disks q names (label, UUID, PARTUUID, device): present
// ones first, then history, most recently seen first.
func (s *Store) Where(q string) []disk.Disk {
	out := s.Disks(func(d *disk.Disk) bool { return d.Matches(q) })
	slices.SortStableFunc(out, func(a, b disk.Disk) int {
		if a.Present != b.Present {
			if a.Present {
				return -1
			}
			return 1
		}
		return b.LastSeen.Compare(a.LastSeen)
	})
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
	var c Counts
	for _, e := range s.nodes {
		c.Nodes++
		if e.node.Online {
			c.NodesOnline++
		}
		for _, d := range e.disks {
			c.Disks++
			if d.Present {
				c.DisksPresent++
				if e.node.Local {
					c.LocalPresent++
				}
			}
		}
	}
	return c
}

// Stats returns the store's counters.
func (s *Store) Stats() Stats {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.stats
}

func (s *Store) nodeCopy(e *nodeEntry) disk.Node {
	n := e.node
	n.Addresses = slices.Clone(n.Addresses)
	n.Disks = 0
	for _, d := range e.disks {
		if d.Present {
			n.Disks++
		}
	}
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
			cmp.Compare(a.Device, b.Device), cmp.Compare(a.Name, b.Name))
	})
}

func ptr[T any](v T) *T { return &v }

// SetPeerReach records how a peer is reached (disk.Node.Reach). It is
// saved with the node only when something else about the node changes: a
// restarted daemon learns it again.
func (s *Store) SetPeerReach(id disk.NodeID, reach string) {
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
