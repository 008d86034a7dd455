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

func (l *loop) relays() *relayState {
	if l.relay.asm == nil {
		l.relay = relayState{out: map[wire.NodeID]*relayOut{}, in: map[wire.NodeID]*relayIn{},
			asm: wire.NewAssembler(wire.AssemblerLimits{MaxNodes: l.cfg.MaxPeers})}
	}
	return &l.relay
}

// SetRelayed replaces the set of nodes this daemon announces on its links
// on their behalf. A changed or new one is announced at once; one left out
// is announced offline.
func (s *Service) SetRelayed(ctx context.Context, rs []Relayed) error {
	return s.do(ctx, func(l *loop) { l.setRelayed(rs) })
}

func (l *loop) setRelayed(rs []Relayed) {
	st := l.relays()
	keep := map[wire.NodeID]bool{}
	gen, _ := l.current()
	for _, r := range rs {
		id, err := wire.ParseNodeID(r.ID)
		if err != nil || id == l.s.self {
			continue
		}
		if ps := l.peers[id]; ps != nil && ps.online {
			continue // heard first hand here: it speaks for itself
		}
		keep[id] = true
		if o := st.out[id]; o != nil && o.r.Instance == r.Instance && o.r.Generation == r.Generation && o.r.Name == r.Name && slices.Equal(o.r.Addresses, r.Addresses) {
			continue
		}
		o := &relayOut{r: r, id: id, inv: wire.NewInventory(r.Disks)}
		st.out[id] = o
		l.send(l.enc.Relay(gen, id, r.Instance, r.Generation, r.Name, o.inv, false, r.Addresses))
		l.s.ctr.inc(relaysSent)
	}
	for id, o := range st.out {
		if !keep[id] {
			delete(st.out, id)
			l.send(l.enc.Relay(gen, id, o.r.Instance, o.r.Generation, o.r.Name, nil, true, nil))
			l.s.ctr.inc(relaysSent)
		}
	}
}

// relayRefresh sends every relayed inventory again every few heartbeats:
// receivers keep a relayed node online while copies keep coming.
func (l *loop) relayRefresh() {
	st := l.relays()
	st.beats++
	if st.beats%relayRefreshEvery != 0 || len(st.out) == 0 {
		return
	}
	l.resendRelayed()
}

// resendRelayed sends every relayed inventory again.
func (l *loop) resendRelayed() {
	gen, _ := l.current()
	for id, o := range l.relay.out {
		l.send(l.enc.Relay(gen, id, o.r.Instance, o.r.Generation, o.r.Name, o.inv, false, o.r.Addresses))
		l.s.ctr.inc(relaysSent)
	}
}

// relayOnQuery answers a query for everyone (a daemon starting, or
// pinging), or one naming a node we relay, with the relayed inventories,
// at most every relayAnswerGap: a daemon that starts after a relay sent
// them need not wait for the next refresh.
func (l *loop) relayOnQuery(now time.Time, q *wire.Query) {
	st := l.relays()
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
	l.resendRelayed()
}

// onRelay takes a relayed announce from relay ps.
func (l *loop) onRelay(now time.Time, ps *peerState, r *wire.Relay) {
	st := l.relays()
	if r.Origin == l.s.self {
		return
	}
	if direct := l.peers[r.Origin]; direct != nil && direct.online {
		l.s.ctr.inc(relaysIgnored) // we hear it first hand
		return
	}
	did := r.Origin.Domain()
	ri := st.in[r.Origin]
	if ri == nil {
		if r.Offline {
			return
		}
		if len(st.in) >= l.cfg.MaxPeers {
			l.s.ctr.inc(dropRelayedFull)
			return
		}
		ri = &relayIn{}
		st.in[r.Origin] = ri
	}
	if ri.online && r.Instance < ri.instance {
		l.s.ctr.inc(dropStaleInstance)
		return
	}
	if r.Offline {
		if ri.via == ps.id && ri.online {
			ri.online = false
			st.asm.Forget(r.Origin)
			l.s.st.SetPeerOffline(did)
		}
		return
	}
	viaChanged := !ri.online || ri.via != ps.id || ri.viaName != ps.name
	ri.via, ri.viaName, ri.instance, ri.lastHeard = ps.id, ps.name, r.Instance, now
	h := wire.Header{Type: wire.TypeAnnounce, Node: r.Origin, Instance: r.Instance, Generation: r.Generation}
	c, err := st.asm.Add(now, h, &r.Announce)
	if err != nil && wire.ReasonOf(err) != wire.ReasonHaveGeneration {
		l.s.ctr.drop(wire.ReasonOf(err))
	}
	node := disk.Node{ID: did, Name: r.Announce.Name, Addresses: r.AddrStrings()}
	switch inst, _, _, ok := st.asm.Applied(r.Origin); {
	case c != nil:
		l.s.st.ApplyPeer(node, c.Disks)
		l.s.ctr.inc(relaysApplied)
	case ok && inst == r.Instance:
		l.s.st.TouchPeer(node)
	default:
		return // not complete yet
	}
	ri.online = true
	if viaChanged {
		l.s.st.SetPeerReach(did, relayReach(ps))
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
func (l *loop) relayExpire(now time.Time) {
	st := l.relays()
	if st.answerDue && now.Sub(st.answered) >= relayAnswerGap {
		st.answerDue, st.answered = false, now
		l.resendRelayed()
	}
	for id, ri := range st.in {
		if !ri.online {
			continue
		}
		via := l.peers[ri.via]
		iv := l.cfg.HeartbeatInterval
		if via != nil && via.interval != 0 {
			iv = via.interval
		}
		if via == nil || !via.online || now.Sub(ri.lastHeard) > relayExpireAfter*iv {
			ri.online = false
			st.asm.Forget(id)
			l.s.st.SetPeerOffline(id.Domain())
			continue
		}
		if via.name != ri.viaName {
			ri.viaName = via.name
			l.s.st.SetPeerReach(id.Domain(), relayReach(via))
		}
	}
}
