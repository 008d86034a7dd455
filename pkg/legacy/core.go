package legacy

import (
	"encoding/hex"
	"net/netip"
	"strings"
	"time"

	"github.com/diskd/diskd/pkg/disk"
)

// Receiving behaviour (docs/protocol.md, "Legacy bridge").
const (
	// MaxPeers bounds the legacy peers tracked; when full, a new source
	// takes the place of one offline, else it is dropped.
	MaxPeers = 256
	// ApplyGap is the least time between two lists applied for one peer:
	// the original sends one every 600 s, so only a flood is slowed, and
	// the newest list always wins.
	ApplyGap = time.Second
	// Settle is how long a new source's first list waits: a diskd that
	// runs the bridge too is known through the peer network by then, and
	// its legacy datagrams are not taken for a legacy peer.
	Settle = 250 * time.Millisecond
	// OfflineAfter is how many announce periods of silence make a legacy
	// peer offline.
	OfflineAfter = 3
)

// NodeID is a legacy peer's node ID: "legacy" and its IPv4 address in hex.
// It is not 32 hex digits, so it can never be a diskd node's, and a
// legacy datagram can never reach a diskd peer's records; it is letters
// and digits only, as a D-Bus object path element needs.
func NodeID(a netip.Addr) disk.NodeID {
	b := a.Unmap().AsSlice()
	return disk.NodeID("legacy" + hex.EncodeToString(b))
}

// Sink is where legacy peers' lists go: the store.
type Sink interface {
	ApplyPeer(n disk.Node, disks []disk.Disk)
	SetPeerOffline(id disk.NodeID)
}

type lpeer struct {
	addr       netip.Addr
	id         disk.NodeID
	name       string
	last       []Entry // last applied
	pending    []Entry
	hasPending bool
	due        time.Time
	lastHeard  time.Time
	applied    time.Time // last application; zero before the first
	online     bool
}

// core is the receiving side's state machine: datagrams and the clock in,
// store updates out. One goroutine owns it.
type core struct {
	sink     Sink
	ctr      *counters
	interval time.Duration // the legacy peers' announce period
	isDiskd  func(netip.Addr) bool
	peers    map[netip.Addr]*lpeer
	onNew    func(netip.Addr) // a source seen for the first time (name lookup)
}

func newCore(sink Sink, ctr *counters, interval time.Duration, isDiskd func(netip.Addr) bool) *core {
	if isDiskd == nil {
		isDiskd = func(netip.Addr) bool { return false }
	}
	return &core{sink: sink, ctr: ctr, interval: interval, isDiskd: isDiskd,
		peers: make(map[netip.Addr]*lpeer), onNew: func(netip.Addr) {}}
}

// receive takes one parsed list from src. It is applied at once, or when
// the peer's ApplyGap or a new source's Settle has passed (see tick).
func (c *core) receive(now time.Time, src netip.Addr, es []Entry) {
	p := c.peers[src]
	if c.isDiskd(src) {
		c.ctr.inc(dropDiskdPeer)
		if p != nil && p.online {
			// It turned out to be a diskd node: its own announces speak
			// for it.
			p.online = false
			c.sink.SetPeerOffline(p.id)
		}
		return
	}
	if p == nil {
		if len(c.peers) >= MaxPeers && !c.evictOffline() {
			c.ctr.inc(dropPeersFull)
			return
		}
		p = &lpeer{addr: src, id: NodeID(src), name: src.String(), due: now.Add(Settle)}
		c.peers[src] = p
		c.onNew(src)
	}
	if p.hasPending {
		c.ctr.inc(dropCoalesced)
	}
	p.pending, p.hasPending, p.lastHeard = es, true, now
	if !p.applied.IsZero() {
		p.due = p.applied.Add(ApplyGap)
	}
	c.tick(now)
}

// evictOffline forgets (here, not in the store) the peer offline longest.
func (c *core) evictOffline() bool {
	var old *lpeer
	for _, p := range c.peers {
		if !p.online && !p.hasPending && (old == nil || p.lastHeard.Before(old.lastHeard)) {
			old = p
		}
	}
	if old == nil {
		return false
	}
	delete(c.peers, old.addr)
	return true
}

// tick applies what is due and marks silent peers offline.
func (c *core) tick(now time.Time) {
	for _, p := range c.peers {
		if p.hasPending && !now.Before(p.due) {
			p.hasPending = false
			if c.isDiskd(p.addr) {
				c.ctr.inc(dropDiskdPeer)
				if p.online {
					// It turned out to be a diskd node: its own
					// announces speak for it.
					p.online = false
					c.sink.SetPeerOffline(p.id)
				}
				if p.applied.IsZero() {
					delete(c.peers, p.addr)
				}
				continue
			}
			c.apply(now, p, p.pending)
			p.pending = nil
		}
		if p.online && now.Sub(p.lastHeard) >= OfflineAfter*c.interval {
			p.online = false
			c.ctr.inc(peersWentOffline)
			c.sink.SetPeerOffline(p.id)
		}
	}
}

func (c *core) apply(now time.Time, p *lpeer, es []Entry) {
	p.last, p.applied, p.online = es, now, true
	c.ctr.inc(listsApplied)
	c.sink.ApplyPeer(disk.Node{ID: p.id, Name: p.name, Addresses: []string{p.addr.String()}, Reach: disk.ReachLegacy},
		c.disks(es))
}

// rename gives a peer the name reverse DNS found; its disks carry it too.
func (c *core) rename(now time.Time, a netip.Addr, name string) {
	p := c.peers[a]
	if p == nil || name == "" || p.name == name {
		return
	}
	p.name = name
	if p.online {
		c.apply(now, p, p.last)
	}
}

// next is when tick has something to do (zero: nothing).
func (c *core) next() time.Time {
	var t time.Time
	consider := func(u time.Time) {
		if t.IsZero() || u.Before(t) {
			t = u
		}
	}
	for _, p := range c.peers {
		if p.hasPending {
			consider(p.due)
		}
		if p.online {
			consider(p.lastHeard.Add(OfflineAfter * c.interval))
		}
	}
	return t
}

// disks turns a legacy list into the store's disks. A disk's key is its
// device path without "/dev/" (the UUID or label when there is none); a
// second entry with the same key is dropped and counted.
func (c *core) disks(es []Entry) []disk.Disk {
	out := make([]disk.Disk, 0, len(es))
	seen := make(map[string]bool, len(es))
	for _, e := range es {
		name := strings.TrimPrefix(e.Device, "/dev/")
		switch {
		case name != "":
		case e.UUID != "":
			name = "uuid=" + e.UUID
		case e.Label != "":
			name = "label=" + e.Label
		default:
			continue
		}
		if seen[name] {
			c.ctr.inc(entriesDuplicate)
			continue
		}
		seen[name] = true
		out = append(out, disk.Disk{Name: name, Device: e.Device, UUID: e.UUID, Label: e.Label})
	}
	return out
}

// counts reports the peers known and online.
func (c *core) counts() (known, online int) {
	for _, p := range c.peers {
		if !p.applied.IsZero() {
			known++
			if p.online {
				online++
			}
		}
	}
	return known, online
}
