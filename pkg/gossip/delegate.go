package gossip

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/diskd/diskd/pkg/disk"
	"github.com/diskd/diskd/pkg/wire"
)

// delegate and events are the Service seen by memberlist: its callbacks
// must not block (they run on memberlist's receive loop), so anything
// slow goes to a worker.
type (
	delegate Service
	events   Service
)

func (d *delegate) NodeMeta(limit int) []byte {
	b := (*Service)(d).metaBytes()
	if len(b) > limit {
		return nil
	}
	return b
}

func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte {
	return d.q.GetBroadcasts(overhead, limit)
}

// LocalState is the digest table: one claim per online origin, never
// inventories (see docs/protocol.md).
func (d *delegate) LocalState(join bool) []byte {
	s := (*Service)(d)
	s.mu.Lock()
	facts := s.tab.facts(MaxStateNodes)
	for _, f := range s.relayed {
		if len(facts) < MaxStateNodes {
			facts = append(facts, f)
		}
	}
	s.mu.Unlock()
	st := state{Claims: make([]claim, len(facts))}
	for i, f := range facts {
		st.Claims[i] = f.claim()
	}
	return must(encMode.Marshal(st))
}

func (d *delegate) MergeRemoteState(buf []byte, join bool) {
	s := (*Service)(d)
	var st state
	if err := decode(buf, &st); err != nil {
		s.ctr.inc(cDropBadMsg)
		return
	}
	for i := range st.Claims {
		f, err := st.Claims[i].check()
		if err != nil {
			s.ctr.inc(cDropBadMsg)
			continue
		}
		s.takeFact(f, false)
	}
}

// NotifyMsg takes a notice, an inventory request or an inventory.
func (d *delegate) NotifyMsg(b []byte) {
	s := (*Service)(d)
	if len(b) < 2 || len(b) > maxFetchReply {
		s.ctr.inc(cDropBadMsg)
		return
	}
	b = bytes.Clone(b)
	switch b[0] {
	case msgNotice:
		var c claim
		if err := decode(b[1:], &c); err != nil {
			s.ctr.inc(cDropBadMsg)
			return
		}
		f, err := c.check()
		if err != nil {
			s.ctr.inc(cDropBadMsg)
			return
		}
		s.ctr.inc(cNoticesReceived)
		if s.takeFact(f, false) {
			// memberlist does not forward user messages: whoever hears a
			// notice first passes it on (as Serf does), so it spreads.
			s.q.QueueBroadcast(&notice{name: string(f.origin) + "/" + string(f.via), msg: b})
			s.ctr.inc(cNoticesRebroadcast)
		}
	case msgFetchReq:
		var r fetchReq
		if err := decode(b[1:], &r); err != nil {
			s.ctr.inc(cDropBadMsg)
			return
		}
		s.submit(func() { s.serveFetch(r) })
	case msgFetchRep:
		var r fetchRep
		if err := decode(b[1:], &r); err != nil {
			s.ctr.inc(cDropBadMsg)
			return
		}
		// Replies have their own queue: under load they must not wait
		// behind the requests they answer.
		select {
		case s.replies <- func() { s.applyFetch(r) }:
		default:
			s.ctr.inc(cDropWorkFull)
		}
	default:
		s.ctr.inc(cDropBadMsg)
	}
}

// takeFact applies a fact from a member. Only a live member may vouch; an
// origin left with no voucher goes offline in the store unless the
// multicast path still hears it. It reports whether the fact was news.
func (s *Service) takeFact(f fact, fromMeta bool) bool {
	s.mu.Lock()
	if _, ok := s.members[f.via]; !ok && !fromMeta {
		// A notice can outrun the alive message of the member it names:
		// keep it until that member joins (bounded), then take it.
		if s.nPending >= maxPending {
			// Full of notices naming members that never came: start over.
			s.ctr.add(cDropNotMember, uint64(s.nPending))
			clear(s.pending)
			s.nPending = 0
		}
		s.pending[f.via] = append(s.pending[f.via], f)
		s.nPending++
		s.ctr.inc(cNoticesPending)
		s.mu.Unlock()
		return false
	}
	if f.offline && f.origin == f.via && f.origin != s.self {
		s.byes[f.origin] = true
	}
	news := s.tab.apply(f)
	var off bool
	if f.offline {
		if o := s.tab.origins[f.origin]; o != nil && !o.online() {
			s.tab.wentOffline(f.origin)
			_, heard := s.heard[f.origin]
			off = !heard
		}
	}
	s.mu.Unlock()
	if off {
		s.d.Store.SetPeerOffline(f.origin)
	}
	if news && !f.offline {
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
	return news
}

// serveFetch answers a request for an inventory we hold: ours, or that of
// a node we relay.
func (s *Service) serveFetch(r fetchReq) {
	origin, err1 := nodeID(r.Origin)
	from, err2 := nodeID(r.From)
	if err1 != nil || err2 != nil {
		s.ctr.inc(cDropBadMsg)
		return
	}
	rep := fetchRep{Origin: r.Origin, From: idBytes(s.self)}
	s.mu.Lock()
	to := s.members[from]
	relay, relayed := s.relayed[origin]
	var held []disk.Disk
	var hf fact
	var holds, hold bool
	if origin != s.self && !relayed {
		held, hf, holds = s.tab.holding(origin, r.Instance, r.Gen)
		hold = !holds && r.Instance != 0 && s.tab.knows(origin) && s.nHeld < maxHeld && to != nil
		if hold {
			// We are the asker's parent and will have it soon.
			s.held[origin] = append(s.held[origin], heldReq{to: to, inst: r.Instance, gen: r.Gen, at: time.Now()})
			s.nHeld++
			s.ctr.inc(cFetchesHeld)
		}
	}
	s.mu.Unlock()
	if hold {
		return
	}
	if to == nil {
		// Not a member to us yet: reply to the address it gives (the
		// request came over the keyed channel, so it holds the key).
		ip := net.IP(r.Addr)
		if (len(r.Addr) != 4 && len(r.Addr) != 16) || r.Port == 0 || ip.IsUnspecified() || ip.IsMulticast() {
			s.ctr.inc(cDropNotMember)
			return
		}
		to = &memberlist.Node{Name: string(from), Addr: ip, Port: r.Port}
	}
	switch {
	case origin == s.self:
		gen, disks := s.d.Store.LocalDisks()
		rep.Name, rep.Instance, rep.Gen = clip(s.d.Store.LocalNode().Name), s.d.Instance, gen
		rep.Inventory = wire.NewInventory(disks).Whole()
	case relayed:
		disks := s.d.Store.Disks(func(d *disk.Disk) bool { return d.Node == origin && d.Present })
		rep.Name, rep.Instance, rep.Gen = relay.name, relay.instance, relay.gen
		rep.Inventory = wire.NewInventory(disks).Whole()
	case holds:
		rep.Name, rep.Instance, rep.Gen = hf.name, hf.instance, hf.gen
		rep.Inventory = wire.NewInventory(held).Whole()
		s.ctr.inc(cFetchesServedCopy)
	default:
		rep.Unknown = true
	}
	if err := s.ml.SendReliable(to, encode(msgFetchRep, rep)); err != nil {
		s.ctr.inc(cFetchFailed)
		return
	}
	s.ctr.inc(cFetchesServed)
}

// applyFetch puts a fetched inventory in the store, if it is not older
// than what the store holds from the gossip path and the multicast path
// does not hear the origin itself (it then has the inventory first hand).
func (s *Service) applyFetch(r fetchRep) {
	origin, err := nodeID(r.Origin)
	from, ferr := nodeID(r.From) // (absent from older daemons' replies)
	if err == nil && r.Unknown {
		if ferr == nil {
			s.mu.Lock()
			s.tab.unknown(origin, from) // ask the source next, now
			s.mu.Unlock()
			s.kickFetch()
		}
		return
	}
	if err != nil || wire.CheckName(r.Name) != nil || r.Instance == 0 {
		s.ctr.inc(cDropBadMsg)
		return
	}
	wd, dg, err := wire.DecodeWhole(r.Inventory)
	if err != nil {
		s.ctr.inc(cDropBadMsg)
		return
	}
	f := fact{origin: origin, name: r.Name, instance: r.Instance, gen: r.Gen, digest: dg}
	ds := make([]disk.Disk, len(wd))
	for i := range wd {
		ds[i] = wd[i].ToDisk(origin, r.Name)
	}
	// Applied under the lock, so whoever sees the table say "applied"
	// (relayIn) finds these disks in the store.
	s.mu.Lock()
	defer s.mu.Unlock()
	if o := s.tab.origins[origin]; ferr == nil && o != nil && !o.vias[from] &&
		(o.instance != f.instance || o.gen != f.gen || o.digest != f.digest) {
		// A copy from a member that does not vouch for the origin (a
		// parent in the fetch tree) must be exactly the generation
		// announced, with its digest: else not taken, and the source is
		// asked next.
		s.ctr.inc(cFetchBadDigest)
		s.tab.unknown(origin, from)
		return
	}
	if !s.applyLocked(f, ds) {
		s.ctr.inc(cFetchesStale)
		return
	}
	s.ctr.inc(cFetchesApplied)
	s.kickFetch() // room for the next fetch
}

func (s *Service) kickFetch() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// applyLocked puts an origin's inventory in the store if the table takes
// it and the multicast path does not hear the origin. s.mu is held.
func (s *Service) applyLocked(f fact, ds []disk.Disk) bool {
	if _, heard := s.heard[f.origin]; heard || !s.tab.fetched(f) {
		return false
	}
	s.tab.keep(f, ds)
	s.d.Store.ApplyPeer(disk.Node{ID: f.origin, Name: f.name, Addresses: s.addrsOf(f.origin)}, ds)
	s.releaseHeld(f, ds)
	return true
}

func (e *events) member(n *memberlist.Node) {
	s := (*Service)(e)
	id := disk.NodeID(n.Name)
	if id == s.self {
		return
	}
	if _, err := wire.ParseNodeID(id); err != nil {
		s.ctr.inc(cDropBadMeta)
		return
	}
	f, err := decodeMeta(id, n.Meta)
	if err != nil {
		s.ctr.inc(cDropBadMeta)
		if s.ctr.limit("meta "+n.Name, time.Minute) {
			s.log.Warn("member with unreadable meta ignored", "member", n.Name, "addr", n.Addr, "err", err)
		}
		return
	}
	s.mu.Lock()
	_, known := s.members[id]
	s.members[id] = n
	s.nMembers.Store(int64(len(s.members)))
	s.mu.Unlock()
	s.takeFact(f, true)
	s.mu.Lock()
	waiting := s.pending[id]
	delete(s.pending, id)
	s.nPending -= len(waiting)
	s.mu.Unlock()
	for _, pf := range waiting {
		s.takeFact(pf, false)
	}
	if !known {
		s.log.Info("member joined", "member", f.name, "id", id, "addr", n.Addr)
		// Notices sent before it joined may never reach it (a notice is
		// sent a bounded number of times): say again what we relay.
		// Push/pull would repair it too, but only after its period.
		s.mu.Lock()
		facts := make([]fact, 0, len(s.relayed))
		for _, rf := range s.relayed {
			facts = append(facts, rf)
		}
		s.mu.Unlock()
		for _, rf := range facts {
			s.queueNotice(rf)
		}
	}
}

func (e *events) NotifyJoin(n *memberlist.Node)   { e.member(n) }
func (e *events) NotifyUpdate(n *memberlist.Node) { e.member(n) }

// NotifyLeave: the member left or was found dead. Every origin it alone
// vouched for goes offline (unless the multicast path hears it).
func (e *events) NotifyLeave(n *memberlist.Node) {
	s := (*Service)(e)
	id := disk.NodeID(n.Name)
	s.mu.Lock()
	if _, ok := s.members[id]; !ok {
		s.mu.Unlock()
		return
	}
	delete(s.members, id)
	s.nMembers.Store(int64(len(s.members)))
	s.nPending -= len(s.pending[id])
	delete(s.pending, id)
	gone := s.tab.memberGone(id)
	var off []disk.NodeID
	for _, o := range gone {
		s.tab.wentOffline(o)
		if _, heard := s.heard[o]; !heard {
			off = append(off, o)
		}
	}
	leaving, bye := s.leaving, s.byes[id]
	delete(s.byes, id)
	s.mu.Unlock()
	// (n.State does not say: memberlist passes the node before setting it.)
	how := "failed"
	if bye {
		how = "left"
		s.ctr.inc(cMembersLeft)
	} else {
		s.ctr.inc(cMembersFailed)
	}
	if !leaving {
		s.log.Info("member gone", "id", id, "addr", n.Addr, "how", how, "offline", len(off))
	}
	for _, o := range off {
		s.d.Store.SetPeerOffline(o)
	}
}

// Counters, by name in Status.
const (
	cJoins              = "joins"
	cJoinsFailed        = "joins_failed"
	cResyncs            = "syncs_after_join" // the one state exchange a few seconds after joining
	cMembersLeft        = "members_left"     // said goodbye (Leave)
	cMembersFailed      = "members_failed"   // found dead by failure detection
	cMetaUpdates        = "meta_updates"
	cNoticesQueued      = "notices_queued"
	cNoticesReceived    = "notices_received"
	cNoticesRebroadcast = "notices_rebroadcast"
	cRelayedOut         = "relayed_into_gossip"
	cFetchesSent        = "fetches_sent"
	cFetchesServed      = "fetches_served"
	cFetchesApplied     = "fetches_applied"
	cFetchesStale       = "fetches_stale"
	cFetchesCached      = "fetches_from_cache" // a node back at the generation we had
	cFetchFailed        = "fetches_failed"
	cFetchesHeld        = "fetches_held"        // requests held until our copy arrived
	cFetchesServedCopy  = "fetches_served_copy" // served from our copy of another node's inventory
	cFetchBadDigest     = "fetches_bad_digest"  // a copy that is not what its origin announced
	cUDPProbeFailed     = "udp_probe_failed_tcp_ok"
	cDropLabel          = "drop_label"
	cDropDecrypt        = "drop_decrypt"
	cDropMalformed      = "drop_malformed"
	cDropBadMsg         = "drop_bad_message"
	cDropBadMeta        = "drop_bad_meta"
	cDropNotMember      = "drop_not_member"
	cNoticesPending     = "notices_pending" // held until the member they name joins
	cDropWorkFull       = "drop_work_full"
)

var counterNames = []string{cJoins, cJoinsFailed, cResyncs, cMembersLeft, cMembersFailed, cMetaUpdates, cNoticesQueued, cNoticesReceived,
	cNoticesRebroadcast, cRelayedOut, cFetchesSent, cFetchesServed, cFetchesApplied, cFetchesStale, cFetchesCached, cFetchFailed, cFetchesHeld, cFetchesServedCopy, cFetchBadDigest,
	cUDPProbeFailed, cDropLabel, cDropDecrypt, cDropMalformed, cDropBadMsg, cDropBadMeta, cDropNotMember, cNoticesPending, cDropWorkFull}

type counters struct {
	m      map[string]*atomic.Uint64
	limMu  sync.Mutex
	limits map[string]time.Time
}

func (c *counters) init() {
	c.m = make(map[string]*atomic.Uint64, len(counterNames))
	for _, n := range counterNames {
		c.m[n] = new(atomic.Uint64)
	}
	c.limits = make(map[string]time.Time)
}

func (c *counters) inc(n string)           { c.m[n].Add(1) }
func (c *counters) add(n string, v uint64) { c.m[n].Add(v) }
func (c *counters) get(n string) uint64    { return c.m[n].Load() }

func (c *counters) snapshot() map[string]uint64 {
	out := make(map[string]uint64, len(c.m)+1)
	for n, v := range c.m {
		out[n] = v.Load()
	}
	return out
}

// limit reports whether a message keyed k may be logged now (once per
// every, per key; at most 1024 keys remembered).
func (c *counters) limit(k string, every time.Duration) bool {
	c.limMu.Lock()
	defer c.limMu.Unlock()
	now := time.Now()
	if t, ok := c.limits[k]; ok && now.Sub(t) < every {
		return false
	}
	if len(c.limits) >= 1024 {
		clear(c.limits)
	}
	c.limits[k] = now
	return true
}

// logSink turns memberlist's log lines into counters and rate-limited
// slog records: what a stranger on the port causes (a packet without our
// label, one that does not decrypt, garbage) is counted, not logged per
// packet.
type logSink struct{ s *Service }

func (l *logSink) Write(p []byte) (int, error) {
	s := l.s
	line := strings.TrimSpace(string(p))
	level := slog.LevelDebug
	switch {
	case strings.HasPrefix(line, "[ERR]"), strings.HasPrefix(line, "[ERROR]"):
		level = slog.LevelWarn
	case strings.HasPrefix(line, "[WARN]"):
		level = slog.LevelWarn
	case strings.HasPrefix(line, "[INFO]"):
		level = slog.LevelInfo
	}
	kind := ""
	switch {
	case strings.Contains(line, "unacceptable label"), strings.Contains(line, "label header"):
		kind = cDropLabel
	case strings.Contains(line, "ecrypt"), strings.Contains(line, "No installed keys"):
		kind = cDropDecrypt
	case strings.Contains(line, "invalid checksum"), strings.Contains(line, "missing message type"),
		strings.Contains(line, "not supported"), strings.Contains(line, "Failed to decode"),
		strings.Contains(line, "Received invalid msgType"), strings.Contains(line, "failed to receive"):
		kind = cDropMalformed
	case strings.Contains(line, "network may be misconfigured"):
		kind = cUDPProbeFailed
		s.mu.Lock()
		s.lastUDP = time.Now()
		s.mu.Unlock()
	}
	if kind != "" {
		s.ctr.inc(kind)
		if !s.ctr.limit(kind, time.Minute) {
			return len(p), nil
		}
	}
	if s.log.Enabled(context.Background(), level) {
		s.log.Log(context.Background(), level, strings.TrimPrefix(line[strings.Index(line, "]")+1:], " "), "from", "memberlist")
	}
	return len(p), nil
}
