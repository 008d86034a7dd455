package peer

import (
	"context"
	"net/netip"
	"slices"
	"time"

	"github.com/diskd/diskd/pkg/disk"
	"github.com/diskd/diskd/pkg/wire"
)

// Relayed announces (wire.TypeRelay, docs/protocol.md "Relayed
// announce"): a daemon on the gossip network announces on its links the
// nodes it learned by gossip, so the zero-configuration daemons there list
// them too; every daemon takes such announces from a relay it hears.
// Loops are impossible by construction: what a daemon hears relayed is
// never in Heard (the gossip path relays only nodes heard first hand),
// and a node heard first hand is never taken from a relay.

// Relayed is one node to announce on our links on its behalf.
type Relayed struct {
	ID         disk.NodeID
	Name       string
	Instance   uint64
	Generation uint64
	Disks      []disk.Disk
	Addresses  []netip.Addr // its routable addresses, sent with it (wire key 10)
}

const (
	relayRefreshEvery = 3  // heartbeats between two copies of every relayed inventory
	relayExpireAfter  = 10 // relay's intervals without a copy: the origin is offline
	relayAnswerGap    = time.Second
)

type relayState struct {
	out       map[wire.NodeID]*relayOut
	in        map[wire.NodeID]*relayIn
	asm       *wire.Assembler
	beats     int
	answered  time.Time // relayed inventories last sent for a query
	answerDue bool      // a query came within relayAnswerGap of the last answer
}

type relayOut struct {
	r   Relayed
	id  wire.NodeID
	inv *wire.Inventory
}

type relayIn struct {
	via       wire.NodeID
	viaName   string
	instance  uint64
	lastHeard time.Time
	online    bool
}

func (m *Machine) relays() *relayState {
	if m.relay.asm == nil {
		m.relay = relayState{out: map[wire.NodeID]*relayOut{}, in: map[wire.NodeID]*relayIn{},
			// No deltas are relayed: keep no bases.
			asm: wire.NewAssembler(wire.AssemblerLimits{MaxNodes: m.cfg.MaxPeers, MaxBaseBytes: -1})}
	}
	return &m.relay
}

// SetRelayed replaces the set of nodes this daemon announces on its links
// on their behalf. A changed or new one is announced at once; one left out
// is announced offline.
func (s *Service) SetRelayed(ctx context.Context, rs []Relayed) error {
	return s.do(ctx, func(d *driver) { d.m.SetRelayed(rs) })
}

// SetRelayed replaces the set of nodes the machine relays (see
// Service.SetRelayed).
func (m *Machine) SetRelayed(rs []Relayed) {
	st := m.relays()
	keep := map[wire.NodeID]bool{}
	gen := m.invGen
	for _, r := range rs {
		id, err := wire.ParseNodeID(r.ID)
		if err != nil || id == m.cfg.Self {
			continue
		}
		if ps := m.peers[id]; ps != nil && ps.online {
			continue // heard first hand here: it speaks for itself
		}
		keep[id] = true
		if o := st.out[id]; o != nil && o.r.Instance == r.Instance && o.r.Generation == r.Generation && o.r.Name == r.Name && slices.Equal(o.r.Addresses, r.Addresses) {
			continue
		}
		o := &relayOut{r: r, id: id, inv: wire.NewInventory(r.Disks)}
		st.out[id] = o
		m.fx.Send(m.enc.Relay(gen, id, r.Instance, r.Generation, r.Name, o.inv, false, r.Addresses))
		m.ctr.inc(relaysSent)
	}
	for id, o := range st.out {
		if !keep[id] {
			delete(st.out, id)
			m.fx.Send(m.enc.Relay(gen, id, o.r.Instance, o.r.Generation, o.r.Name, nil, true, nil))
			m.ctr.inc(relaysSent)
		}
	}
}

// relayRefresh sends every relayed inventory again every few heartbeats:
// receivers keep a relayed node online while copies keep coming.
func (m *Machine) relayRefresh() {
	st := m.relays()
	st.beats++
	if st.beats%relayRefreshEvery != 0 || len(st.out) == 0 {
		return
	}
	m.resendRelayed()
}

// resendRelayed sends every relayed inventory again.
func (m *Machine) resendRelayed() {
	gen := m.invGen
	for id, o := range m.relay.out {
		m.fx.Send(m.enc.Relay(gen, id, o.r.Instance, o.r.Generation, o.r.Name, o.inv, false, o.r.Addresses))
		m.ctr.inc(relaysSent)
	}
}

// relayOnQuery answers a query for everyone (a daemon starting, or
// pinging), or one naming a node we relay, with the relayed inventories,
// at most every relayAnswerGap: a daemon that starts after a relay sent
// them need not wait for the next refresh.
func (m *Machine) relayOnQuery(now time.Time, q *wire.Query) {
	st := m.relays()
	if len(st.out) == 0 {
		return
	}
	want := len(q.Targets) == 0
	for _, t := range q.Targets {
		_, ok := st.out[t]
		want = want || ok
	}
	if !want {
		return
	}
	if now.Sub(st.answered) < relayAnswerGap {
		st.answerDue = true // answered lately: once more when the gap ends (relayExpire)
		return
	}
	st.answered = now
	m.resendRelayed()
}

// onRelay takes a relayed announce from relay ps.
func (m *Machine) onRelay(now time.Time, ps *peerState, r *wire.Relay) {
	st := m.relays()
	if r.Origin == m.cfg.Self {
		return
	}
	if direct := m.peers[r.Origin]; direct != nil && direct.online {
		m.ctr.inc(relaysIgnored) // we hear it first hand
		return
	}
	did := r.Origin.Domain()
	ri := st.in[r.Origin]
	if ri == nil {
		if r.Offline {
			return
		}
		if len(st.in) >= m.cfg.MaxPeers {
			m.ctr.inc(dropRelayedFull)
			return
		}
		ri = &relayIn{}
		st.in[r.Origin] = ri
	}
	if ri.online && r.Instance < ri.instance {
		m.ctr.inc(dropStaleInstance)
		return
	}
	if r.Offline {
		if ri.via == ps.id && ri.online {
			ri.online = false
			st.asm.Forget(r.Origin)
			m.fx.PeerOffline(did)
		}
		return
	}
	viaChanged := !ri.online || ri.via != ps.id || ri.viaName != ps.name
	ri.via, ri.viaName, ri.instance, ri.lastHeard = ps.id, ps.name, r.Instance, now
	h := wire.Header{Type: wire.TypeAnnounce, Node: r.Origin, Instance: r.Instance, Generation: r.Generation}
	c, err := st.asm.Add(now, h, &r.Announce)
	if err != nil && wire.ReasonOf(err) != wire.ReasonHaveGeneration {
		m.ctr.drop(wire.ReasonOf(err))
	}
	node := disk.Node{ID: did, Name: r.Announce.Name, Addresses: r.AddrStrings()}
	switch inst, _, _, ok := st.asm.Applied(r.Origin); {
	case c != nil:
		m.fx.PeerInventory(node, c.Instance, c.Generation, c.Disks)
		m.ctr.inc(relaysApplied)
	case ok && inst == r.Instance:
		m.fx.PeerSeen(node)
	default:
		return // not complete yet
	}
	ri.online = true
	if viaChanged {
		m.fx.PeerReach(did, relayReach(ps))
	}
}

// relayReach is how a node relayed by ps is reached. A relay's relayed
// announces can come before its own name (answering the query of a
// daemon that just started): relayExpire puts the name in once known.
func relayReach(ps *peerState) disk.Reach {
	if ps.name == "" {
		return disk.ReachVia(disk.ReachMulticast, string(ps.did))
	}
	return disk.ReachVia(disk.ReachMulticast, ps.name)
}

// relayExpire takes offline the relayed nodes whose relay went offline or
// stopped sending copies, and sends a query's deferred answer.
func (m *Machine) relayExpire(now time.Time) {
	st := m.relays()
	if st.answerDue && now.Sub(st.answered) >= relayAnswerGap {
		st.answerDue, st.answered = false, now
		m.resendRelayed()
	}
	for id, ri := range st.in {
		if !ri.online {
			continue
		}
		via := m.peers[ri.via]
		iv := m.cfg.HeartbeatInterval
		if via != nil && via.interval != 0 {
			iv = via.interval
		}
		if via == nil || !via.online || now.Sub(ri.lastHeard) > relayExpireAfter*iv {
			ri.online = false
			st.asm.Forget(id)
			m.fx.PeerOffline(id.Domain())
			continue
		}
		if via.name != ri.viaName {
			ri.viaName = via.name
			m.fx.PeerReach(id.Domain(), relayReach(via))
		}
	}
}
