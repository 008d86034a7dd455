package peer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
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
	rescanEvery             = 30 * time.Second
	rescanSettle            = 100 * time.Millisecond // after a netlink event
	goodbyeCopies           = 3
	goodbyeGap              = 20 * time.Millisecond
	pingEvery               = time.Second
	touchEvery              = time.Second // refresh the store's last-heard at most this often
	advertiseEvery          = 6           // heartbeats between two that list our addresses
	maxSources              = 4096
	drainBatch              = 256
)

// inbound is a checked, decoded datagram on its way to the loop.
type inbound struct {
	p   *wire.Packet
	src netip.Addr
	at  time.Time
}

// peerState is what the loop knows of one peer node.
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

type pendingAnswer struct {
	at    time.Time
	since time.Time // first query served by this answer
	full  bool      // announce (else a heartbeat will do)
}

// loop is the protocol state; one goroutine owns it.
type loop struct {
	s      *Service
	cfg    *Config
	enc    *wire.Encoder
	asm    *wire.Assembler
	conns  map[int]mconn // by family: 4, 6
	joined map[int]map[int]ifaceInfo
	peers  map[wire.NodeID]*peerState
	lru    peerLRU // the same peers, by when last heard
	nl     *os.File
	linksC chan struct{}
	wg     sync.WaitGroup

	inv          *wire.Inventory
	invGen       uint64
	lastAnnounce time.Time
	announcedGen uint64
	requested    bool // an announce was asked for (Announce), paced as a change
	pace         pacer
	answer       *pendingAnswer
	answersAll   bucket
	lastPing     time.Time
	routable     []netip.Addr // our addresses beyond the link, for heartbeats
	advertiseDue bool         // routable changed since a heartbeat last listed it
	heartbeats   uint64
	ctx          context.Context // of run: requests acted on end with it
	waiting      map[[wire.RequestIDSize]byte]waiter
	served       map[[wire.RequestIDSize]byte]*served
	busy         int         // requests being acted on
	relay        relayState  // relay.go
	delta        deltaSender // delta.go

	nextHeartbeat, nextCheck, nextExpire, nextRescan, wantDue time.Time
}

func newLoop(s *Service) (*loop, error) {
	instance := s.cfg.Instance
	if instance == 0 {
		instance = wire.NewInstance(time.Now())
	}
	l := &loop{
		s: s, cfg: &s.cfg,
		enc:     wire.NewEncoder(s.self, instance, s.keys),
		asm:     wire.NewAssembler(wire.AssemblerLimits{MaxNodes: s.cfg.MaxPeers}),
		conns:   make(map[int]mconn),
		joined:  map[int]map[int]ifaceInfo{4: {}, 6: {}},
		peers:   make(map[wire.NodeID]*peerState),
		linksC:  make(chan struct{}, 1),
		pace:    pacer{perMinute: s.cfg.AnnouncesPerMinute},
		ctx:     context.Background(),
		waiting: make(map[[wire.RequestIDSize]byte]waiter),
		served:  make(map[[wire.RequestIDSize]byte]*served),
	}
	s.mu.Lock()
	s.inst = l.enc.Instance()
	s.mu.Unlock()
	var errs []error
	err := s.cfg.Enter(func() error {
		if s.cfg.IPv4 {
			c, warn, err := open4(s.cfg.Port, s.cfg.TTL)
			if err != nil {
				errs = append(errs, fmt.Errorf("IPv4: %w", err))
			} else {
				l.conns[4] = c
			}
			if warn != nil {
				s.log.Warn("IPv4 socket", "err", warn)
			}
		}
		if s.cfg.IPv6 {
			c, warn, err := open6(s.cfg.Port, s.cfg.TTL)
			if err != nil {
				errs = append(errs, fmt.Errorf("IPv6: %w", err))
			} else {
				l.conns[6] = c
			}
			if warn != nil {
				s.log.Warn("IPv6 socket", "err", warn)
			}
		}
		nl, err := openLinkWatch()
		if err != nil {
			s.log.Warn("no interface change events; rescanning periodically only", "err", err, "every", rescanEvery)
		}
		l.nl = nl
		return nil
	})
	if err == nil && len(l.conns) == 0 {
		err = errors.Join(errs...)
	}
	if err != nil {
		l.close()
		return nil, fmt.Errorf("peer: open sockets: %w", err)
	}
	for _, e := range errs {
		s.log.Warn("address family unavailable; continuing without it", "err", e)
	}
	return l, nil
}

func (l *loop) close() {
	for _, c := range l.conns {
		c.close()
	}
	if l.nl != nil {
		l.nl.Close()
	}
	l.wg.Wait()
}

func (l *loop) run(ctx context.Context) error {
	defer l.close()
	s := l.s
	l.ctx = ctx
	now := time.Now()
	l.rescan(now)
	localID := s.st.LocalNode().ID
	sub := s.st.Subscribe(1024)
	defer func() { sub.Close() }()
	for fam, c := range l.conns {
		l.wg.Add(1)
		go l.reader(fam, c)
	}
	if l.nl != nil {
		l.wg.Add(1)
		go func() { defer l.wg.Done(); watchLinks(l.nl, l.linksC) }()
	}
	s.running.Store(true)
	defer s.running.Store(false)

	s.log.Info("peer network up", "node_id", s.self, "instance", fmt.Sprintf("%x", l.enc.Instance()),
		"groups", s.Status().Groups, "interfaces", s.Status().Interfaces, "authenticated", s.keys != nil)
	l.hello(now)
	l.nextCheck = now.Add(l.checkEvery())
	l.nextExpire = now.Add(5 * time.Second)
	l.nextRescan = now.Add(rescanEvery)

	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		now = time.Now()
		l.runDue(now)
		timer.Reset(max(time.Until(l.nextDue()), 0))
		select {
		case <-ctx.Done():
			l.goodbye()
			s.log.Info("peer network down")
			return nil
		case in := <-s.in:
			l.handle(in)
			for range drainBatch {
				select {
				case in = <-s.in:
					l.handle(in)
					continue
				default:
				}
				break
			}
		case ev, ok := <-sub.C:
			if !ok {
				if sub.Err() != nil {
					s.log.Warn("store subscription overflowed; announcing the current inventory", "err", sub.Err())
				}
				sub = s.st.Subscribe(1024)
				l.localChanged(time.Now())
				continue
			}
			local := ev.Disk != nil && ev.Disk.Node == localID
			// One store update publishes its events together: take them all
			// before announcing.
			for more := true; more; {
				select {
				case ev, ok = <-sub.C:
					if !ok {
						more = false
						break
					}
					local = local || ev.Disk != nil && ev.Disk.Node == localID
				default:
					more = false
				}
			}
			if local {
				l.localChanged(time.Now())
			}
		case req := <-s.reqs:
			req(l)
		case <-l.linksC:
			if at := time.Now().Add(rescanSettle); at.Before(l.nextRescan) {
				l.nextRescan = at
			}
		case <-timer.C:
		}
	}
}

// hello is what a daemon says when it joins (or joins a new link): it is
// alive, wants everyone's inventory, and here is its own.
func (l *loop) hello(now time.Time) {
	l.heartbeat(now)
	l.announce(now, "start")
	l.query(nil)
	l.nextHeartbeat = now.Add(l.heartbeatGap())
}

func (l *loop) heartbeatGap() time.Duration {
	iv := l.cfg.HeartbeatInterval
	return iv - time.Duration(rand.Int64N(int64(iv/10)+1))
}

func (l *loop) checkEvery() time.Duration {
	return min(max(l.cfg.HeartbeatInterval/10, 100*time.Millisecond), time.Second)
}

func (l *loop) nextDue() time.Time {
	t := l.nextHeartbeat
	for _, u := range []time.Time{l.nextCheck, l.nextExpire, l.nextRescan, l.wantDue, l.pace.at, l.delta.at} {
		if !u.IsZero() && u.Before(t) {
			t = u
		}
	}
	if l.answer != nil && l.answer.at.Before(t) {
		t = l.answer.at
	}
	return t
}

func (l *loop) runDue(now time.Time) {
	if !now.Before(l.nextHeartbeat) {
		l.heartbeat(now)
		l.nextHeartbeat = now.Add(l.heartbeatGap())
	}
	if l.answer != nil && !now.Before(l.answer.at) {
		l.fireAnswer(now)
	}
	if l.pace.due(now) {
		// Unless an answer carried the change already.
		if gen, _ := l.current(); gen != l.announcedGen || l.requested {
			l.announce(now, "change or request")
		}
	}
	if !l.delta.at.IsZero() && !now.Before(l.delta.at) {
		l.localChanged(now) // the budget allows the change that waited
	}
	if !l.wantDue.IsZero() && !now.Before(l.wantDue) {
		l.askMissing(now)
	}
	if !now.Before(l.nextCheck) {
		l.checkOffline(now)
		l.nextCheck = now.Add(l.checkEvery())
	}
	if !now.Before(l.nextExpire) {
		l.asm.Expire(now.Add(-pendingIdle))
		l.assemblerStats()
		l.nextExpire = now.Add(5 * time.Second)
	}
	if !now.Before(l.nextRescan) {
		l.rescan(now)
		l.nextRescan = now.Add(rescanEvery)
	}
}

// reader moves one socket's datagrams to the loop, checking on the way
// everything that needs no protocol state: destination, per-source rate,
// size, magic, version, tag, our own datagrams, the body.
func (l *loop) reader(fam int, c mconn) {
	defer l.wg.Done()
	s := l.s
	groups, recvD, recvB := s.g4, recvDatagrams4, recvBytes4
	if fam == 6 {
		groups, recvD, recvB = s.g6, recvDatagrams6, recvBytes6
	}
	buf := make([]byte, 2048) // longer than MaxDatagram: an oversized one is seen, not cut
	lim := newSourceLimiter(s.cfg.SourceRate, s.cfg.SourceBurst, maxSources)
	self, inst := s.self, l.enc.Instance()
	for {
		n, dst, src, ifindex, err := c.read(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.logLimited(logReceiveError, slog.LevelWarn, "receive", "family", fam, "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		now := time.Now()
		s.ctr.inc(recvD)
		s.ctr.add(recvB, uint64(n))
		if !slices.Contains(groups, dst) {
			s.ctr.dropDatagramAs(dropNotGroup)
			continue
		}
		if ok, broke := lim.allow(now, src); !ok {
			s.ctr.dropDatagramAs(broke)
			if broke == dropSourcesFull {
				s.logLimited(logSourcesFull, slog.LevelWarn, "too many sources sending at once; dropping datagrams of new ones",
					"src", src, "sources", maxSources)
			} else {
				s.logLimited(logRateLimited, slog.LevelWarn, "source over its datagram rate; dropping", "src", src, "rate", s.cfg.SourceRate)
			}
			continue
		}
		h, body, err := s.dec.Open(buf[:n])
		if err != nil {
			l.dropped(err, src)
			continue
		}
		if h.Node == self {
			if h.Instance == inst {
				s.ctr.dropDatagramAs(dropOwn)
			} else {
				s.ctr.dropDatagramAs(dropNodeConflict)
				s.logLimited(logNodeConflict, slog.LevelWarn, "another daemon uses this node ID (a copied state directory?)", "src", src,
					"their_instance", fmt.Sprintf("%x", h.Instance))
			}
			continue
		}
		p, err := wire.DecodeBody(h, body)
		if err == nil && h.Type == wire.TypeDelta && s.cfg.IgnoreDeltas {
			err = &wire.DropError{Reason: wire.ReasonUnknownType} // as a daemon from before deltas
		}
		if err != nil {
			l.dropped(err, src)
			continue
		}
		if src.Is6() && src.IsLinkLocalUnicast() {
			if m := s.ifnames.Load(); m != nil && (*m)[ifindex] != "" {
				src = src.WithZone((*m)[ifindex])
			} else {
				src = src.WithZone(strconv.Itoa(ifindex))
			}
		}
		select {
		case s.in <- inbound{p: p, src: src, at: now}:
		default:
			s.ctr.dropDatagramAs(dropQueueFull)
		}
	}
}

func (l *loop) dropped(err error, src netip.Addr) {
	s := l.s
	r := wire.ReasonOf(err)
	s.ctr.dropDatagram(r)
	switch r {
	case wire.ReasonUntagged, wire.ReasonUnexpectedTag, wire.ReasonUnknownKey, wire.ReasonBadTag:
		s.logLimited(logUnauthenticated, slog.LevelWarn, "dropping unauthenticated datagrams", "src", src, "err", err)
	default:
		s.logLimited(logBadDatagram, slog.LevelInfo, "dropping bad datagrams", "src", src, "err", err)
	}
}

func (l *loop) handle(in inbound) {
	p, now := in.p, in.at
	ps := l.peers[p.Node]
	if ps == nil {
		if p.Type == wire.TypeGoodbye {
			l.s.ctr.inc(datagramsAccepted) // a goodbye of a node we do not know: nothing to forget
			return
		}
		ps = l.newPeer(now, p.Node)
	}
	switch {
	case ps.instance == 0, p.Instance > ps.instance:
		l.restart(ps, p.Instance, now)
	case p.Instance < ps.instance:
		if !ps.ended {
			l.s.ctr.dropDatagramAs(dropStaleInstance)
			return
		}
		l.restart(ps, p.Instance, now) // a clock gone backwards, or a replay; see docs
	case ps.goodbye:
		l.s.ctr.dropDatagramAs(dropStaleInstance) // said goodbye: anything more is a replay
		return
	}
	if r := ps.win.Accept(p.Seq); r != wire.ReasonNone {
		l.s.ctr.dropDatagram(r)
		if r == wire.ReasonDuplicate && ps.online {
			// Usually the other family's copy: it tells us the peer's other
			// address. (A replay would have to come within the window.)
			l.addAddr(ps, in.src)
			if ps.addrsNew {
				l.touch(now, ps, true)
			}
		}
		return
	}
	l.s.ctr.inc(datagramsAccepted)
	ps.lastHeard = now
	l.heard(ps)
	ps.ended = false
	l.addAddr(ps, in.src)
	if !ps.advKnown || p.Generation > ps.advGen {
		ps.advKnown, ps.advGen, ps.advDigest = true, p.Generation, nil
	}
	switch p.Type {
	case wire.TypeHeartbeat:
		hb := p.Heartbeat
		renamed := ps.name != hb.Name
		ps.name, ps.interval = hb.Name, l.clampInterval(ps, hb.Interval)
		l.setAdvertised(ps, hb.Addrs)
		if p.Generation == ps.advGen {
			d := hb.Digest
			ps.advDigest = &d
		}
		l.touch(now, ps, renamed)
		l.checkWant(now, ps)
	case wire.TypeAnnounce:
		ps.name = p.Announce.Name
		l.offer(now, ps, p)
	case wire.TypeDelta:
		ps.name = p.Delta.Name
		l.onDelta(now, ps, p)
	case wire.TypeQuery:
		l.touch(now, ps, false)
		l.onQuery(now, ps, p.Query)
		l.relayOnQuery(now, p.Query)
		l.checkWant(now, ps)
	case wire.TypeRequest:
		l.touch(now, ps, false)
		l.onRequest(now, ps, p.Request)
	case wire.TypeReply:
		l.touch(now, ps, false)
		l.onReply(ps, p.Reply)
	case wire.TypeRelay:
		l.touch(now, ps, false)
		l.onRelay(now, ps, p.Relay)
	case wire.TypeGoodbye:
		l.s.ctr.inc(goodbyesReceived)
		ps.goodbye, ps.ended, ps.online, ps.wantAt = true, true, false, time.Time{}
		l.asm.Forget(ps.id)
		l.s.st.SetPeerOffline(ps.did)
		l.ended(ps)
		l.s.logLimited(logPeerGoodbye, slog.LevelDebug, "peer said goodbye", "peer", ps.did, "name", ps.name)
	}
}

// newPeer adds a peer to the table. When the table is full the least
// recently heard peer makes room, offline ones first: a new machine is
// never refused, and a flood of forged node IDs can only push out nodes
// heard less recently than its own (which it must keep sending to stay).
func (l *loop) newPeer(now time.Time, id wire.NodeID) *peerState {
	if len(l.peers) >= l.cfg.MaxPeers {
		old := l.lru.oldest()
		delete(l.peers, old.id)
		l.lru.remove(old)
		l.asm.Forget(old.id)
		if old.online {
			// Nothing here will tell the store it went silent any more.
			l.s.st.SetPeerOffline(old.did)
		}
		l.s.ctr.inc(peersEvicted)
		l.s.logLimited(logPeerEvicted, slog.LevelWarn, "peer table full; forgot the peer heard least recently",
			"peer", old.did, "name", old.name, "online", old.online, "last_heard", old.lastHeard, "max_peers", l.cfg.MaxPeers)
	}
	ps := &peerState{id: id, did: id.Domain(), lastHeard: now}
	l.peers[id] = ps
	l.lru.push(ps)
	return ps
}

// heard moves ps to the recently heard end of its list.
func (l *loop) heard(ps *peerState) { l.lru.touch(ps) }

// ended moves ps to the offline list, whose peers are evicted first.
func (l *loop) ended(ps *peerState) { l.lru.setOffline(ps) }

// clampInterval returns the interval the offline timeout uses for a peer
// that advertises iv: our policy's range, whatever the peer claims, so a
// node advertising an hour still goes offline within 3 x MaxPeerInterval.
func (l *loop) clampInterval(ps *peerState, iv time.Duration) time.Duration {
	c := min(max(iv, MinPeerInterval), MaxPeerInterval)
	if c != iv {
		l.s.ctr.inc(intervalsClamped)
		if iv != ps.interval && ps.interval != c {
			l.s.logLimited(logIntervalClamped, slog.LevelInfo, "peer advertises a heartbeat interval outside our range; using the nearest bound",
				"peer", ps.did, "advertised", iv, "used", c)
		}
	}
	return c
}

// restart makes instance the peer's current one.
func (l *loop) restart(ps *peerState, instance uint64, now time.Time) {
	ps.instance = instance
	ps.win = wire.ReplayWindow{}
	ps.goodbye, ps.ended = false, false
	ps.firstHeard = now
	ps.advKnown, ps.advGen, ps.advDigest = false, 0, nil
	ps.wantAt, ps.wantTries = time.Time{}, 0
	l.asm.Forget(ps.id)
}

func (l *loop) addAddr(ps *peerState, a netip.Addr) {
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
func (l *loop) setAdvertised(ps *peerState, addrs []netip.Addr) {
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

func (l *loop) node(ps *peerState) disk.Node {
	addrs := append(slices.Clone(ps.addrs), ps.advAddrs...)
	slices.Sort(addrs)
	return disk.Node{ID: ps.did, Name: ps.name, Addresses: slices.Compact(addrs)}
}

// touch tells the store the peer is alive, at most every touchEvery unless
// something it shows changed.
func (l *loop) touch(now time.Time, ps *peerState, force bool) {
	if force || !ps.online || ps.addrsNew || now.Sub(ps.lastTouch) >= touchEvery {
		l.s.st.TouchPeer(l.node(ps))
		ps.online, ps.addrsNew, ps.lastTouch = true, false, now
	}
}

// missing reports whether we lack the generation the peer advertised.
func (l *loop) missing(ps *peerState) bool {
	inst, gen, dg, ok := l.asm.Applied(ps.id)
	if !ok || inst != ps.instance {
		return true
	}
	return gen < ps.advGen || gen == ps.advGen && ps.advDigest != nil && *ps.advDigest != dg
}

// checkWant schedules a query for the peer's inventory if we lack it,
// after a short random wait in which an announce already on its way (a
// starting daemon heartbeats, then announces) can arrive.
func (l *loop) checkWant(now time.Time, ps *peerState) {
	if !l.missing(ps) {
		ps.wantAt, ps.wantTries = time.Time{}, 0
		return
	}
	if ps.wantAt.IsZero() {
		ps.wantAt = now.Add(wantDelayMin + rand.N(wantDelayMax-wantDelayMin))
		if l.wantDue.IsZero() || ps.wantAt.Before(l.wantDue) {
			l.wantDue = ps.wantAt
		}
	}
}

// askMissing sends one query naming every peer whose inventory we still
// lack (a query for all when they are too many to name).
func (l *loop) askMissing(now time.Time) {
	var targets []wire.NodeID
	var next time.Time
	later := func(ps *peerState, at time.Time) {
		ps.wantAt = at
		if next.IsZero() || at.Before(next) {
			next = at
		}
	}
	for _, ps := range l.peers {
		if ps.wantAt.IsZero() {
			continue
		}
		switch _, _, _, last, ok := l.asm.Pending(ps.id); {
		case ps.wantAt.After(now):
			later(ps, ps.wantAt)
		case !ps.online || !l.missing(ps):
			ps.wantAt, ps.wantTries = time.Time{}, 0
		case ok && now.Sub(last) < progressGrace:
			later(ps, last.Add(progressGrace))
		case now.Sub(ps.lastQuery) < queryEvery:
			later(ps, ps.lastQuery.Add(queryEvery))
		default:
			targets = append(targets, ps.id)
			ps.lastQuery = now
			ps.wantTries++
			if ps.wantTries < wantTries {
				later(ps, now.Add(queryEvery<<(ps.wantTries-1)))
			} else {
				ps.wantAt, ps.wantTries = time.Time{}, 0 // the next heartbeat asks again
			}
		}
	}
	l.wantDue = next
	switch {
	case len(targets) > wire.MaxQueryTargets:
		l.query(nil)
	case len(targets) > 0:
		l.query(targets)
	}
}

func (l *loop) offer(now time.Time, ps *peerState, p *wire.Packet) {
	c, err := l.asm.Add(now, p.Header, p.Announce)
	l.assemblerStats()
	if err != nil {
		l.s.ctr.drop(wire.ReasonOf(err))
		if r := wire.ReasonOf(err); r != wire.ReasonHaveGeneration {
			l.s.logLimited(logAnnounceDropped, slog.LevelInfo, "announce dropped", "peer", ps.did, "err", err)
		}
	}
	if c == nil {
		l.touch(now, ps, false)
		return
	}
	l.apply(now, ps, c)
}

// apply puts a complete generation of the peer into the store.
func (l *loop) apply(now time.Time, ps *peerState, c *wire.Complete) {
	l.s.st.ApplyPeer(l.node(ps), c.Disks)
	ps.online, ps.addrsNew, ps.lastTouch = true, false, now
	l.s.ctr.inc(generationsApplied)
	l.checkWant(now, ps)
}

func (l *loop) assemblerStats() {
	st := l.asm.Stats()
	l.s.ctr.set(dropPendingEvicted, st.Evicted)
	l.s.ctr.set(dropPendingExpired, st.Expired)
	l.s.ctr.set(dropInconsistent, st.Inconsistent)
}

func (l *loop) onQuery(now time.Time, ps *peerState, q *wire.Query) {
	targeted := len(q.Targets) > 0
	if targeted && !slices.Contains(q.Targets, l.s.self) {
		return
	}
	if !ps.answers.allow(now, askerRate, askerBurst) {
		l.s.ctr.inc(dropQueryLimited)
		return
	}
	// An announce sent after the querier was first heard reached it: a
	// query for everyone needs no second one so soon.
	full := targeted || !(now.Sub(l.lastAnnounce) < announcedLately && l.lastAnnounce.After(ps.firstHeard))
	if l.answer == nil {
		l.answer = &pendingAnswer{at: now.Add(l.answerDelay()), since: now}
	} else if l.lastAnnounce.After(l.answer.since) {
		l.answer.since = now
	}
	l.answer.full = l.answer.full || full
}

// answerDelay spreads the answers of a large network.
func (l *loop) answerDelay() time.Duration {
	online := 0
	for _, ps := range l.peers {
		if ps.online {
			online++
		}
	}
	hi := min(answerMaxDelay+answerDelayPerPeer*time.Duration(max(0, online-answerSmallNet)), answerDelayCap)
	return answerMinDelay + rand.N(hi-answerMinDelay)
}

func (l *loop) fireAnswer(now time.Time) {
	a := l.answer
	l.answer = nil
	if a.full && l.lastAnnounce.After(a.since) {
		l.s.ctr.inc(answersSkipped)
		return
	}
	if !l.answersAll.allow(now, answerRate, answerBurst) {
		l.s.ctr.inc(dropQueryLimited)
		return
	}
	l.s.ctr.inc(answersSent)
	if a.full {
		l.announce(now, "answer")
	} else {
		l.s.ctr.inc(answersAsHeartbeat)
		l.heartbeat(now)
	}
}

// pacer times announces of local changes: the first of a burst at once,
// the rest of the burst coalesced into one at the end of a minimum gap,
// and at most perMinute in any minute (later ones wait, coalesced).
type pacer struct {
	perMinute int
	last      time.Time   // last announce
	times     []time.Time // announces within the last minute
	at        time.Time   // next announce due (zero: none)
}

func (p *pacer) changed(now time.Time) {
	if !p.at.IsZero() {
		return // already scheduled: it will carry this change too
	}
	gap := min(time.Second, time.Minute/time.Duration(p.perMinute))
	at := now
	if !p.last.IsZero() && at.Before(p.last.Add(gap)) {
		at = p.last.Add(gap)
	}
	i := 0
	for i < len(p.times) && at.Sub(p.times[i]) >= time.Minute {
		i++
	}
	p.times = p.times[i:]
	if len(p.times) >= p.perMinute {
		if free := p.times[len(p.times)-p.perMinute].Add(time.Minute); free.After(at) {
			at = free
		}
	}
	p.at = at
}

// due reports whether an announce is due at now, and takes it.
func (p *pacer) due(now time.Time) bool {
	if p.at.IsZero() || now.Before(p.at) {
		return false
	}
	p.at = time.Time{}
	p.last = now
	p.times = append(p.times, now)
	return true
}

// current returns the local inventory, re-encoded only when the store's
// generation moved.
func (l *loop) current() (uint64, *wire.Inventory) {
	gen, disks := l.s.st.LocalDisks()
	if l.inv == nil || gen != l.invGen {
		l.inv, l.invGen = wire.NewInventory(disks), gen
		l.s.ctr.set(localSkipped, uint64(l.inv.Skipped))
		l.s.ctr.set(localTrimmed, uint64(l.inv.Trimmed))
		if l.inv.Skipped > 0 {
			l.s.logLimited(logLocalSkipped, slog.LevelWarn, "some local disks exceed the protocol's limits and are not announced", "count", l.inv.Skipped)
		}
	}
	return l.invGen, l.inv
}

func (l *loop) announce(now time.Time, why string) {
	gen, inv := l.current()
	dgs := l.enc.Announce(gen, l.s.st.LocalNode().Name, inv)
	l.send(dgs)
	l.lastAnnounce = now
	l.announcedGen = gen
	l.delta.sent(gen, inv)
	l.requested = false
	l.s.ctr.inc(announcesSent)
	l.s.log.Debug("announced", "why", why, "generation", gen, "disks", inv.Len(), "datagrams", len(dgs))
}

// heartbeat says we are alive. Our routable addresses ride along on the
// first heartbeat after they changed (a hello counts: a new peer learns
// them at once) and then on every advertiseEvery-th one, so a steady
// network pays for them about once a minute, not every 10 s.
func (l *loop) heartbeat(now time.Time) {
	gen, inv := l.current()
	hb := wire.Heartbeat{Name: l.s.st.LocalNode().Name, Digest: inv.Digest(), Interval: l.cfg.HeartbeatInterval}
	if l.advertiseDue || l.heartbeats%advertiseEvery == 0 {
		hb.Addrs = l.routable
		l.advertiseDue = false
	}
	l.heartbeats++
	l.send([][]byte{l.enc.Heartbeat(gen, hb)})
	l.s.ctr.inc(heartbeatsSent)
	l.relayRefresh()
}

func (l *loop) query(targets []wire.NodeID) {
	gen, _ := l.current()
	l.send([][]byte{l.enc.Query(gen, targets)})
	l.s.ctr.inc(queriesSent)
}

func (l *loop) ping(now time.Time) time.Time {
	if !l.lastPing.IsZero() && now.Sub(l.lastPing) < pingEvery {
		return l.lastPing
	}
	l.lastPing = now
	l.query(nil)
	return now
}

func (l *loop) heardSince(t time.Time) int {
	n := 0
	for _, ps := range l.peers {
		if !ps.goodbye && !ps.lastHeard.Before(t) {
			n++
		}
	}
	return n
}

func (l *loop) goodbye() {
	gen, _ := l.current()
	b := l.enc.Goodbye(gen)
	for i := range goodbyeCopies {
		if i > 0 {
			time.Sleep(goodbyeGap)
		}
		l.send([][]byte{b})
	}
	l.s.ctr.inc(goodbyesSent)
}

// send puts each datagram on every joined interface of every family, to
// every group, interleaved so the copies of one datagram travel together
// (the receiver's replay window then sees them side by side). A path whose
// send times out is skipped for the rest of the batch.
func (l *loop) send(dgs [][]byte) {
	type path struct {
		fam  int
		c    mconn
		ifi  net.Interface
		g    netip.Addr
		dead bool
	}
	var paths []*path
	for _, fam := range []int{4, 6} {
		c := l.conns[fam]
		if c == nil {
			continue
		}
		groups := l.s.g4
		if fam == 6 {
			groups = l.s.send6
		}
		for _, idx := range slices.Sorted(mapKeys(l.joined[fam])) {
			for _, g := range groups {
				paths = append(paths, &path{fam: fam, c: c, ifi: l.joined[fam][idx].ifi, g: g})
			}
		}
	}
	for _, b := range dgs {
		for _, p := range paths {
			if p.dead {
				continue
			}
			if err := p.c.send(b, &p.ifi, p.g, l.cfg.Port); err != nil {
				l.s.ctr.inc(sendFailed)
				if errors.Is(err, os.ErrDeadlineExceeded) {
					p.dead = true
				}
				l.s.logLimited(logSendFailed, slog.LevelWarn, "send failed", "interface", p.ifi.Name, "group", p.g, "err", err)
				continue
			}
			if p.fam == 4 {
				l.s.ctr.inc(sentDatagrams4)
				l.s.ctr.add(sentBytes4, uint64(len(b)))
			} else {
				l.s.ctr.inc(sentDatagrams6)
				l.s.ctr.add(sentBytes6, uint64(len(b)))
			}
		}
	}
}

func mapKeys[K comparable, V any](m map[K]V) func(func(K) bool) {
	return func(yield func(K) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func (l *loop) checkOffline(now time.Time) {
	l.relayExpire(now)
	for _, ps := range l.peers {
		if !ps.online {
			continue
		}
		iv := ps.interval // clamped when heard
		if iv == 0 {
			iv = l.cfg.HeartbeatInterval
		}
		if now.Sub(ps.lastHeard) > offlineAfter*iv {
			ps.online, ps.ended, ps.wantAt = false, true, time.Time{}
			l.asm.Forget(ps.id) // when it returns, its disks must be fetched again
			l.s.st.SetPeerOffline(ps.did)
			l.ended(ps)
			l.s.ctr.inc(peersWentOffline)
			l.s.logLimited(logPeerOffline, slog.LevelInfo, "peer went silent; offline", "peer", ps.did, "name", ps.name, "last_heard", ps.lastHeard)
		}
	}
}

// rescan joins the groups on usable interfaces not yet joined and leaves
// those gone. A new link gets a hello: its peers have not heard us.
func (l *loop) rescan(now time.Time) {
	var infos []ifaceInfo
	err := l.cfg.Enter(func() (err error) {
		infos, err = scanInterfaces(l.cfg.Interfaces)
		return err
	})
	if err != nil {
		l.s.logLimited(logScanFailed, slog.LevelWarn, "interface scan failed", "err", err)
		return
	}
	grew := false
	for fam, c := range l.conns {
		groups := l.s.g4
		if fam == 6 {
			groups = l.s.g6
		}
		want := map[int]ifaceInfo{}
		for _, in := range infos {
			if fam == 4 && in.v4 || fam == 6 && in.v6 {
				want[in.ifi.Index] = in
			}
		}
		for idx, old := range l.joined[fam] {
			if in, ok := want[idx]; !ok || in.ifi.Name != old.ifi.Name {
				for _, g := range groups {
					_ = c.leave(&old.ifi, g) // fails when the interface is gone: fine
				}
				delete(l.joined[fam], idx)
				l.s.log.Info("left interface", "interface", old.ifi.Name, "family", fam)
			}
		}
		for idx, in := range want {
			if old, ok := l.joined[fam][idx]; ok {
				old.addrs = in.addrs
				l.joined[fam][idx] = old
				continue
			}
			var jerr error
			for _, g := range groups {
				jerr = errors.Join(jerr, c.join(&in.ifi, g))
			}
			if jerr != nil {
				l.s.logLimited(logJoinFailed, slog.LevelWarn, "cannot join group", "interface", in.ifi.Name, "family", fam, "err", jerr)
				continue
			}
			l.joined[fam][idx] = in
			grew = true
			l.s.log.Info("joined interface", "interface", in.ifi.Name, "family", fam, "groups", groups)
		}
	}
	if len(infos) == 0 && len(l.cfg.Interfaces) > 0 {
		l.s.logLimited(logNoInterface, slog.LevelWarn, "none of the configured interfaces is usable", "interfaces", l.cfg.Interfaces)
	}
	l.publishInterfaces()
	if grew && !l.nextHeartbeat.IsZero() {
		l.hello(now)
	}
}

// publishInterfaces updates the Status snapshot and the local node's
// addresses.
func (l *loop) publishInterfaces() {
	names := map[string][]string{}
	var addrs []string
	ifnames := map[int]string{}
	for _, fam := range []int{4, 6} {
		for _, in := range l.joined[fam] {
			ifnames[in.ifi.Index] = in.ifi.Name
			names[in.ifi.Name] = append(names[in.ifi.Name], fmt.Sprintf("ipv%d", fam))
			for _, a := range in.addrs {
				if fam == 4 && a.Is4() || fam == 6 && a.Is6() {
					addrs = append(addrs, a.String())
				}
			}
		}
	}
	var list []string
	for n, fams := range names {
		list = append(list, n+" ("+strings.Join(fams, " ")+")")
	}
	slices.Sort(list)
	slices.Sort(addrs)
	l.s.mu.Lock()
	l.s.ifaces = list
	l.s.mu.Unlock()
	l.s.ifnames.Store(&ifnames)
	l.s.st.SetLocalAddresses(slices.Compact(addrs))
	var routable []netip.Addr
	for _, a := range slices.Compact(addrs) {
		if ip := netip.MustParseAddr(a); ip.IsGlobalUnicast() && len(routable) < wire.MaxAddrs {
			routable = append(routable, ip)
		}
	}
	if !slices.Equal(routable, l.routable) {
		l.routable, l.advertiseDue = routable, true
	}
}
