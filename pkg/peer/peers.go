package peer

import (
	"log/slog"
	"net/netip"
	"slices"
	"time"

	"github.com/diskd/diskd/pkg/disk"
	"github.com/diskd/diskd/pkg/wire"
)

// The peer table: what the machine knows of each node it hears.

// peerState is what the machine knows of one peer node.
type peerState struct {
	id         wire.NodeID
	did        disk.NodeID
	instance   uint64
	goodbye    bool // this instance said goodbye
	ended      bool // offline or goodbye: any instance may take over
	win        wire.ReplayWindow
	name       string
	addrs      []string // source addresses heard, oldest first, at most wire.MaxAddrs
	advAddrs   []string // routable addresses it advertises, sorted, at most wire.MaxAddrs
	addrsNew   bool
	interval   time.Duration
	firstHeard time.Time // of this instance
	lastHeard  time.Time
	lastTouch  time.Time
	online     bool
	advKnown   bool // advGen holds what the instance last advertised
	advGen     uint64
	advDigest  *wire.Digest // from the latest heartbeat at advGen
	wantAt     time.Time    // when to ask for its inventory if still missing
	wantTries  int
	lastQuery  time.Time
	answers    bucket // answers we gave it
	requests   bucket // requests it made of us
	lruPrev    *peerState
	lruNext    *peerState
	lruOff     bool // on the offline list
}

// newPeer adds a peer to the table. When the table is full the least
// recently heard peer makes room, offline ones first: a new machine is
// never refused, and a flood of forged node IDs can only push out nodes
// heard less recently than its own (which it must keep sending to stay).
func (m *Machine) newPeer(now time.Time, id wire.NodeID) *peerState {
	if len(m.peers) >= m.cfg.MaxPeers {
		old := m.lru.oldest()
		delete(m.peers, old.id)
		m.lru.remove(old)
		m.asm.Forget(old.id)
		if old.online {
			// Nothing here will tell the store it went silent any more.
			m.fx.PeerOffline(old.did)
		}
		m.ctr.inc(peersEvicted)
		m.logLimited(now, logPeerEvicted, slog.LevelWarn, "peer table full; forgot the peer heard least recently",
			"peer", old.did, "name", old.name, "online", old.online, "last_heard", old.lastHeard, "max_peers", m.cfg.MaxPeers)
	}
	ps := &peerState{id: id, did: id.Domain(), lastHeard: now}
	m.peers[id] = ps
	m.lru.push(ps)
	return ps
}

// restart makes instance the peer's current one.
func (m *Machine) restart(ps *peerState, instance uint64, now time.Time) {
	ps.instance = instance
	ps.win = wire.ReplayWindow{}
	ps.goodbye, ps.ended = false, false
	ps.firstHeard = now
	ps.advKnown, ps.advGen, ps.advDigest = false, 0, nil
	ps.wantAt, ps.wantTries = time.Time{}, 0
	m.asm.Forget(ps.id)
}

func (m *Machine) addAddr(ps *peerState, a netip.Addr) {
	s := a.String()
	if slices.Contains(ps.addrs, s) {
		return
	}
	ps.addrs = append(ps.addrs, s)
	if len(ps.addrs) > wire.MaxAddrs {
		ps.addrs = ps.addrs[1:]
	}
	ps.addrsNew = true
}

// setAdvertised records the routable addresses a heartbeat lists. Most
// heartbeats list none (see heartbeat): those keep what was heard before.
// Only unicast addresses beyond the link count: a peer cannot make us list
// a loopback, multicast or link-local address it did not send from.
func (m *Machine) setAdvertised(ps *peerState, addrs []netip.Addr) {
	if len(addrs) == 0 {
		return
	}
	var adv []string
	for _, a := range addrs {
		if a = a.Unmap(); a.IsGlobalUnicast() && len(adv) < wire.MaxAddrs {
			adv = append(adv, a.String())
		}
	}
	slices.Sort(adv)
	adv = slices.Compact(adv)
	if !slices.Equal(adv, ps.advAddrs) {
		ps.advAddrs, ps.addrsNew = adv, true
	}
}

func (m *Machine) node(ps *peerState) disk.Node {
	addrs := append(slices.Clone(ps.addrs), ps.advAddrs...)
	slices.Sort(addrs)
	return disk.Node{ID: ps.did, Name: ps.name, Addresses: slices.Compact(addrs)}
}

// touch tells the store the peer is alive, at most every touchEvery unless
// something it shows changed.
func (m *Machine) touch(now time.Time, ps *peerState, force bool) {
	if force || !ps.online || ps.addrsNew || now.Sub(ps.lastTouch) >= touchEvery {
		m.fx.PeerSeen(m.node(ps))
		ps.online, ps.addrsNew, ps.lastTouch = true, false, now
	}
}
