package peer

import (
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"slices"
	"time"

	"github.com/diskd/diskd/pkg/disk"
	"github.com/diskd/diskd/pkg/wire"
)

// Protocol timing (docs/protocol.md, "Behaviour").
const (
	answerMinDelay          = 20 * time.Millisecond
	answerMaxDelay          = 120 * time.Millisecond
	answerDelayPerPeer      = 5 * time.Millisecond // beyond answerSmallNet peers
	answerSmallNet          = 8
	answerDelayCap          = time.Second
	announcedLately         = time.Second // an announce this recent serves a query
	askerRate, askerBurst   = 0.5, 3      // answers per querier
	answerRate, answerBurst = 5, 10       // answers overall
	wantDelayMin            = 100 * time.Millisecond
	wantDelayMax            = 300 * time.Millisecond
	queryEvery              = time.Second // per node we miss
	wantTries               = 3
	progressGrace           = 300 * time.Millisecond // an assembly this fresh is left to finish
	offlineAfter            = 3                      // intervals of silence
	pendingIdle             = 30 * time.Second
	expireEvery             = 5 * time.Second
	goodbyeCopies           = 3
	goodbyeGap              = 20 * time.Millisecond
	pingEvery               = time.Second
	touchEvery              = time.Second // refresh the store's last-heard at most this often
	advertiseEvery          = 6           // heartbeats between two that list our addresses
)

// MachineConfig is what a Machine needs to know of its node.
type MachineConfig struct {
	Self     wire.NodeID
	Name     string // the local node's name, in heartbeats and announces
	Instance uint64 // this run's instance ID (wire.NewInstance)
	Keys     *wire.Keyring
	// HeartbeatInterval, AnnouncesPerMinute and MaxPeers are Config's.
	HeartbeatInterval  time.Duration
	AnnouncesPerMinute int
	MaxPeers           int
	// Rand is the machine's only source of randomness (answer and query
	// delays, heartbeat jitter): a seeded one makes a run reproducible.
	Rand *rand.Rand
	Log  *slog.Logger
}

// Effects receives what a Machine decides. The driver puts datagrams on
// its sockets and updates the store; a simulation delivers datagrams to
// the other machines and keeps a light table. A Machine calls its Effects
// only from within one of its own methods, so an Effects needs no lock of
// its own for the machine's sake; an Effects must not call the machine
// back (Act hands the request on, and FinishRequest comes later).
type Effects interface {
	// Send puts datagrams on the link: to the group, on every joined
	// interface of every family, in order.
	Send(dgs [][]byte)
	// PeerSeen: the peer is alive, shown as n (store.TouchPeer).
	PeerSeen(n disk.Node)
	// PeerInventory: the peer's complete inventory of instance at
	// generation, shown as n (store.ApplyPeer). It also means PeerSeen.
	PeerInventory(n disk.Node, instance, generation uint64, disks []disk.Disk)
	// PeerOffline: the peer went silent, said goodbye or was forgotten.
	PeerOffline(id disk.NodeID)
	// PeerReach: how a relayed node is reached (store.SetPeerReach).
	PeerReach(id disk.NodeID, reach disk.Reach)
	// Act hands a request addressed to us to whoever acts on it, off the
	// machine; the reply comes back through Machine.FinishRequest. It
	// returns false when nobody takes requests (the machine refuses it).
	Act(a *Action) bool
	// Replied hands over the reply to a request of ours (Machine.SendRequest).
	Replied(r wire.Reply)
}

// Machine is the peer protocol of one node as a state machine: decoded
// datagrams, the clock, local changes and the local API's requests go in
// (Receive, Tick, SetLocal, LocalChanged, Interfaces, Ping, ...);
// datagrams and store updates come out through Effects, and NextWake says
// when it wants the next Tick. It has no goroutines, sockets or clock of
// its own: every method takes the time, and one goroutine at a time may
// call it. The Service's driver (driver.go) runs one over real sockets;
// package sim runs a thousand over a simulated link.
type Machine struct {
	cfg  MachineConfig
	fx   Effects
	rand *rand.Rand
	log  *slog.Logger
	ctr  *counters
	logs *logLimiter

	enc   *wire.Encoder
	asm   *wire.Assembler
	peers map[wire.NodeID]*peerState
	lru   peerLRU // the same peers, by when last heard

	inv          *wire.Inventory // announce.go
	invGen       uint64
	invSet       bool // SetLocal was called
	lastAnnounce time.Time
	announcedGen uint64
	requested    bool // an announce was asked for (RequestAnnounce), paced as a change
	pace         pacer
	answer       *pendingAnswer // answer.go
	answersAll   bucket
	lastPing     time.Time
	routable     []netip.Addr // our addresses beyond the link, for heartbeats
	advertiseDue bool         // routable changed since a heartbeat last listed it
	heartbeats   uint64
	waiting      map[[wire.RequestIDSize]byte]wire.NodeID // requests.go: ours, by ID: their target
	served       map[[wire.RequestIDSize]byte]*served
	busy         int         // requests being acted on
	relay        relayState  // relay.go
	delta        deltaSender // delta.go

	nextHeartbeat, nextCheck, nextExpire, wantDue time.Time
}

// NewMachine returns the protocol state of a node that has not started
// (see Start), with an empty local inventory at generation 0.
func NewMachine(cfg MachineConfig, fx Effects) *Machine {
	return newMachine(cfg, fx, &counters{}, &logLimiter{})
}

func newMachine(cfg MachineConfig, fx Effects, ctr *counters, logs *logLimiter) *Machine {
	def := DefaultConfig()
	if cfg.HeartbeatInterval == 0 {
		cfg.HeartbeatInterval = def.HeartbeatInterval
	}
	if cfg.AnnouncesPerMinute <= 0 {
		cfg.AnnouncesPerMinute = def.AnnouncesPerMinute
	}
	if cfg.MaxPeers <= 0 {
		cfg.MaxPeers = def.MaxPeers
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.New(rand.NewPCG(cfg.Instance, 0))
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Machine{
		cfg: cfg, fx: fx, rand: cfg.Rand, log: cfg.Log, ctr: ctr, logs: logs,
		enc:     wire.NewEncoder(cfg.Self, cfg.Instance, cfg.Keys),
		asm:     wire.NewAssembler(wire.AssemblerLimits{MaxNodes: cfg.MaxPeers}),
		peers:   make(map[wire.NodeID]*peerState),
		inv:     wire.NewInventory(nil),
		pace:    pacer{perMinute: cfg.AnnouncesPerMinute},
		waiting: make(map[[wire.RequestIDSize]byte]wire.NodeID),
		served:  make(map[[wire.RequestIDSize]byte]*served),
	}
}

// Instance is the instance ID the machine announces.
func (m *Machine) Instance() uint64 { return m.enc.Instance() }

// Counters returns the machine's counters, named as Status shows them.
func (m *Machine) Counters() map[string]uint64 { return m.ctr.snapshot() }

// Start says hello (the machine joins the network) and starts its timers.
func (m *Machine) Start(now time.Time) {
	m.hello(now)
	m.nextCheck = now.Add(m.checkEvery())
	m.nextExpire = now.Add(expireEvery)
}

// hello is what a daemon says when it joins (or joins a new link): it is
// alive, wants everyone's inventory, and here is its own.
func (m *Machine) hello(now time.Time) {
	m.heartbeat(now)
	m.announce(now, "start")
	m.query(nil)
	m.nextHeartbeat = now.Add(m.heartbeatGap())
}

func (m *Machine) heartbeatGap() time.Duration {
	iv := m.cfg.HeartbeatInterval
	return iv - time.Duration(m.rand.Int64N(int64(iv/10)+1))
}

func (m *Machine) checkEvery() time.Duration {
	return min(max(m.cfg.HeartbeatInterval/10, 100*time.Millisecond), time.Second)
}

// NextWake is when the machine wants its next Tick (zero before Start).
func (m *Machine) NextWake() time.Time {
	t := m.nextHeartbeat
	for _, u := range []time.Time{m.nextCheck, m.nextExpire, m.wantDue, m.pace.at, m.delta.at} {
		if !u.IsZero() && u.Before(t) {
			t = u
		}
	}
	if m.answer != nil && m.answer.at.Before(t) {
		t = m.answer.at
	}
	return t
}

// Tick runs what is due at now. Calling it early does nothing; calling it
// late does what was due once.
func (m *Machine) Tick(now time.Time) {
	if m.nextHeartbeat.IsZero() {
		return // not started
	}
	if !now.Before(m.nextHeartbeat) {
		m.heartbeat(now)
		m.nextHeartbeat = now.Add(m.heartbeatGap())
	}
	if m.answer != nil && !now.Before(m.answer.at) {
		m.fireAnswer(now)
	}
	if m.pace.due(now) {
		// Unless an answer carried the change already.
		if m.invGen != m.announcedGen || m.requested {
			m.announce(now, "change or request")
		}
	}
	if !m.delta.at.IsZero() && !now.Before(m.delta.at) {
		m.LocalChanged(now) // the budget allows the change that waited
	}
	if !m.wantDue.IsZero() && !now.Before(m.wantDue) {
		m.askMissing(now)
	}
	if !now.Before(m.nextCheck) {
		m.checkOffline(now)
		m.nextCheck = now.Add(m.checkEvery())
	}
	if !now.Before(m.nextExpire) {
		m.asm.Expire(now.Add(-pendingIdle))
		m.assemblerStats()
		m.nextExpire = now.Add(expireEvery)
	}
}

// Interfaces tells the machine our addresses beyond the link (for
// heartbeats) after an interface scan; grew says a link was joined, whose
// peers have not heard us: a started machine says hello again.
func (m *Machine) Interfaces(now time.Time, routable []netip.Addr, grew bool) {
	if !slices.Equal(routable, m.routable) {
		m.routable, m.advertiseDue = slices.Clone(routable), true
	}
	if grew && !m.nextHeartbeat.IsZero() {
		m.hello(now)
	}
}

// Receive takes one datagram that passed the driver's checks (decoded,
// authenticated, not our own), from src, arrived at now.
func (m *Machine) Receive(now time.Time, p *wire.Packet, src netip.Addr) {
	ps := m.peers[p.Node]
	if ps == nil {
		if p.Type == wire.TypeGoodbye {
			m.ctr.inc(datagramsAccepted) // a goodbye of a node we do not know: nothing to forget
			return
		}
		ps = m.newPeer(now, p.Node)
	}
	switch {
	case ps.instance == 0, p.Instance > ps.instance:
		m.restart(ps, p.Instance, now)
	case p.Instance < ps.instance:
		if !ps.ended {
			m.ctr.dropDatagramAs(dropStaleInstance)
			return
		}
		m.restart(ps, p.Instance, now) // a clock gone backwards, or a replay; see docs
	case ps.goodbye:
		m.ctr.dropDatagramAs(dropStaleInstance) // said goodbye: anything more is a replay
		return
	}
	if r := ps.win.Accept(p.Seq); r != wire.ReasonNone {
		m.ctr.dropDatagram(r)
		if r == wire.ReasonDuplicate && ps.online {
			// Usually the other family's copy: it tells us the peer's other
			// address. (A replay would have to come within the window.)
			m.addAddr(ps, src)
			if ps.addrsNew {
				m.touch(now, ps, true)
			}
		}
		return
	}
	m.ctr.inc(datagramsAccepted)
	ps.lastHeard = now
	m.lru.touch(ps)
	ps.ended = false
	m.addAddr(ps, src)
	if !ps.advKnown || p.Generation > ps.advGen {
		ps.advKnown, ps.advGen, ps.advDigest = true, p.Generation, nil
	}
	switch p.Type {
	case wire.TypeHeartbeat:
		hb := p.Heartbeat
		renamed := ps.name != hb.Name
		ps.name, ps.interval = hb.Name, m.clampInterval(now, ps, hb.Interval)
		m.setAdvertised(ps, hb.Addrs)
		if p.Generation == ps.advGen {
			d := hb.Digest
			ps.advDigest = &d
		}
		m.touch(now, ps, renamed)
		m.checkWant(now, ps)
	case wire.TypeAnnounce:
		ps.name = p.Announce.Name
		m.offer(now, ps, p)
	case wire.TypeDelta:
		ps.name = p.Delta.Name
		m.onDelta(now, ps, p)
	case wire.TypeQuery:
		m.touch(now, ps, false)
		m.onQuery(now, ps, p.Query)
		m.relayOnQuery(now, p.Query)
		m.checkWant(now, ps)
	case wire.TypeRequest:
		m.touch(now, ps, false)
		m.onRequest(now, ps, p.Request)
	case wire.TypeReply:
		m.touch(now, ps, false)
		m.onReply(ps, p.Reply)
	case wire.TypeRelay:
		m.touch(now, ps, false)
		m.onRelay(now, ps, p.Relay)
	case wire.TypeGoodbye:
		m.ctr.inc(goodbyesReceived)
		ps.goodbye, ps.ended, ps.online, ps.wantAt = true, true, false, time.Time{}
		m.asm.Forget(ps.id)
		m.fx.PeerOffline(ps.did)
		m.lru.setOffline(ps)
		m.logLimited(now, logPeerGoodbye, slog.LevelDebug, "peer said goodbye", "peer", ps.did, "name", ps.name)
	}
}

// logLimited logs a line of kind k unless that kind is over its budget
// (see Service.logLimited).
func (m *Machine) logLimited(now time.Time, k logKind, level slog.Level, msg string, args ...any) {
	logLimitedAt(m.log, m.logs, m.ctr, now, k, level, msg, args...)
}
