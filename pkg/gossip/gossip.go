// Package gossip owns diskd's second path between machines, for networks
// where multicast does not reach: one hashicorp/memberlist member (SWIM
// with Lifeguard, as in Consul, Serf and Nomad) per daemon given --join.
// Memberlist does the membership and failure detection; this package puts
// diskd's own state on it: each member's meta says its name, instance,
// inventory generation and digest; small notices, broadcast through a
// bounded queue and re-broadcast by whoever hears them first, carry what a
// relay hears by multicast on its link; inventories never travel in UDP
// gossip but are fetched over memberlist's reliable (TCP) channel from the
// origin or its relay; push/pull exchanges a digest table. Everything it
// learns goes into the same store as the multicast path, keyed by node ID,
// under the same rules. docs/protocol.md ("Beyond one link") specifies it.
package gossip

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/diskd/diskd/pkg/disk"
	"github.com/diskd/diskd/pkg/peer"
	"github.com/diskd/diskd/pkg/store"
	"github.com/diskd/diskd/pkg/wire"
)

// Defaults.
const (
	// DefaultPort is the gossip port (TCP and UDP): next to the multicast
	// port, and not 7946, which Serf and Docker Swarm use.
	DefaultPort = 32005
	// Label is sent with every packet and stream (and authenticated with
	// the key): a Serf or Consul agent on the port is refused.
	Label = "diskd/1"
	// keyInfo is the HKDF info deriving the AES key from a key-file secret.
	keyInfo = "diskd gossip v1"
)

// Config configures the gossip path. cmd/diskd maps it to flags and to
// top-level keys of the config file, named as the flags are.
type Config struct {
	// Join lists members to join, HOST or HOST:PORT (HOST alone means the
	// gossip port). Gossip is on when it is not empty.
	Join []string
	// Port is the gossip port, TCP and UDP.
	Port int
	// Bind is the address to listen on.
	Bind string
	// Advertise is the address (IP or IP:PORT) others reach us at, when
	// not the first private address (multi-homed hosts, NAT).
	Advertise string
	// Profile is memberlist's timing: lan or wan.
	Profile string
	// Insecure allows gossip without a key file.
	Insecure bool
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{Join: []string{}, Port: DefaultPort, Bind: "0.0.0.0", Profile: "lan"}
}

// Enabled reports whether gossip is on.
func (c *Config) Enabled() bool { return len(c.Join) > 0 }

// Multicast is what the gossip path needs of the multicast path: the peers
// it hears directly, to relay them into the gossip network, and a way to
// announce on its links the nodes learned by gossip.
type Multicast interface {
	Heard(ctx context.Context) ([]peer.Heard, error)
	SetRelayed(ctx context.Context, rs []peer.Relayed) error
}

// Deps are the Service's dependencies.
type Deps struct {
	Store *store.Store
	// Multicast is the multicast path; nil when it is off (nothing relayed).
	Multicast Multicast
	// Keys keys the gossip; nil only with Config.Insecure.
	Keys *wire.Keyring
	// Instance is this run's instance ID, the multicast path's too.
	Instance uint64
	// Interval is the heartbeat interval, said in our meta.
	Interval time.Duration
	Logger   *slog.Logger
}

// Service is the gossip path of one daemon.
type Service struct {
	cfg        Config
	d          Deps
	log        *slog.Logger
	self       disk.NodeID
	ctr        counters
	q          *memberlist.TransmitLimitedQueue
	work       chan func()
	kick       chan struct{} // news arrived: fetch now rather than at the next tick
	replies    chan func()   // fetched inventories to apply, in order
	selfAddr   []byte        // our advertised gossip address (under mu)
	selfPort   uint16
	stopped    chan struct{}
	started    atomic.Bool
	nMembers   atomic.Int64
	killed     atomic.Bool // kill was called (benchmarks)
	mlconfig   *memberlist.Config
	relayInSig string // what relayIn last handed over (tick goroutine only)
	tr         *countingTransport
	// newTransport makes the transport; nil means memberlist's UDP+TCP
	// one on the configured address. The simulations set an in-memory one.
	newTransport func() (memberlistTransport, error)

	mu       sync.Mutex
	ml       *memberlist.Memberlist
	tab      *table
	members  map[disk.NodeID]*memberlist.Node // alive or suspect
	relayed  map[disk.NodeID]fact             // what we say of the nodes we relay
	heard    map[disk.NodeID]peer.Heard       // the multicast path's peers, last poll
	metaGen  uint64                           // our generation in our meta
	metaDig  wire.Digest
	joined   bool
	lastUDP  time.Time // last "UDP probes failed, TCP worked" from memberlist
	leaving  bool
	byes     map[disk.NodeID]bool      // members that said they leave
	held     map[disk.NodeID][]heldReq // requests waiting for an inventory we are fetching
	nHeld    int
	pending  map[disk.NodeID][]fact // notices naming a member not joined yet
	nPending int
}

// memberlistTransport is the transport memberlist needs of us.
type memberlistTransport = memberlist.NodeAwareTransport

// Queue bounds.
const (
	maxQueue    = 4096 // notices waiting to be sent (Serf's MaxQueueDepth)
	maxPending  = 1024 // notices held for a member not joined yet
	workQueue   = 1024
	workers     = 4
	tick        = time.Second
	touchEvery  = 5 * time.Second
	leaveFor    = 2 * time.Second
	joinBackoff = time.Second
	joinMax     = 30 * time.Second
	resyncAfter = 2 * time.Second // (to 4 s) after joining: one more state exchange
)

// New checks cfg. Keys must be set unless cfg.Insecure.
func New(cfg Config, d Deps) (*Service, error) {
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if !cfg.Enabled() {
		return nil, errors.New("gossip: no --join given")
	}
	if d.Keys == nil && !cfg.Insecure {
		return nil, errors.New("gossip: --join needs --key-file (the gossip is keyed with it); say --gossip-insecure to gossip unauthenticated")
	}
	if cfg.Port <= 0 || cfg.Port > 65535 {
		return nil, fmt.Errorf("gossip: port %d out of range", cfg.Port)
	}
	for _, j := range cfg.Join {
		if _, _, err := splitJoin(j, cfg.Port); err != nil {
			return nil, fmt.Errorf("gossip: join %q: %w", j, err)
		}
	}
	var mc *memberlist.Config
	switch cfg.Profile {
	case "lan", "":
		mc = memberlist.DefaultLANConfig()
	case "wan":
		mc = memberlist.DefaultWANConfig()
	default:
		return nil, fmt.Errorf("gossip: profile %q: want lan or wan", cfg.Profile)
	}
	if net.ParseIP(cfg.Bind) == nil {
		return nil, fmt.Errorf("gossip: bind address %q is not an IP address", cfg.Bind)
	}
	mc.BindAddr, mc.BindPort = cfg.Bind, cfg.Port
	mc.AdvertisePort = cfg.Port
	if cfg.Advertise != "" {
		ip, port, err := splitAdvertise(cfg.Advertise, cfg.Port)
		if err != nil {
			return nil, fmt.Errorf("gossip: advertise %q: %w", cfg.Advertise, err)
		}
		mc.AdvertiseAddr, mc.AdvertisePort = ip, port
	}
	self := d.Store.LocalNode().ID
	if _, err := wire.ParseNodeID(self); err != nil {
		return nil, fmt.Errorf("gossip: local %w", err)
	}
	if d.Instance == 0 {
		d.Instance = wire.NewInstance(time.Now())
	}
	mc.Name = string(self)
	mc.Label = Label
	mc.SkipInboundLabelCheck = false
	if d.Keys != nil {
		keys, err := d.Keys.Derive(keyInfo, 32)
		if err != nil {
			return nil, fmt.Errorf("gossip: %w", err)
		}
		kr, err := memberlist.NewKeyring(keys, keys[0])
		if err != nil {
			return nil, fmt.Errorf("gossip: keyring: %w", err)
		}
		mc.Keyring = kr
		mc.GossipVerifyIncoming, mc.GossipVerifyOutgoing = true, true
	}
	s := &Service{
		cfg: cfg, d: d, self: self,
		log:     d.Logger,
		work:    make(chan func(), workQueue),
		kick:    make(chan struct{}, 1),
		replies: make(chan func(), workQueue),
		stopped: make(chan struct{}),
		tab:     newTable(self, MaxStateNodes),
		members: make(map[disk.NodeID]*memberlist.Node),
		relayed: make(map[disk.NodeID]fact),
		heard:   make(map[disk.NodeID]peer.Heard),
		byes:    make(map[disk.NodeID]bool),
		pending: make(map[disk.NodeID][]fact),
		held:    make(map[disk.NodeID][]heldReq),
	}
	s.ctr.init()
	mc.Delegate = (*delegate)(s)
	mc.Events = (*events)(s)
	mc.Logger = log.New(&logSink{s: s}, "", 0)
	s.mlconfig = mc
	s.q = &memberlist.TransmitLimitedQueue{
		NumNodes:       func() int { return s.numMembers() },
		RetransmitMult: mc.RetransmitMult,
	}
	if d.Keys == nil {
		s.log.Warn("gossip is unauthenticated (--gossip-insecure): anyone who reaches the gossip port can join and announce")
	}
	return s, nil
}

// splitJoin parses HOST[:PORT]; HOST alone gets port.
func splitJoin(s string, port int) (host string, p int, err error) {
	if s == "" {
		return "", 0, errors.New("empty")
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().String(), int(ap.Port()), nil
	}
	if a, err := netip.ParseAddr(strings.Trim(s, "[]")); err == nil {
		return a.String(), port, nil
	}
	h, ps, err := net.SplitHostPort(s)
	if err != nil {
		return s, port, nil // a host name alone
	}
	n, err := strconv.Atoi(ps)
	if err != nil || n <= 0 || n > 65535 {
		return "", 0, fmt.Errorf("port %q", ps)
	}
	return h, n, nil
}

// splitAdvertise parses IP[:PORT] (memberlist wants an IP, not a name).
func splitAdvertise(s string, port int) (string, int, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().String(), int(ap.Port()), nil
	}
	a, err := netip.ParseAddr(strings.Trim(s, "[]"))
	if err != nil {
		return "", 0, errors.New("want an IP address, optionally with :PORT")
	}
	return a.String(), port, nil
}

// randomMember returns the gossip address of a live member other than us
// ("" when there is none).
func (s *Service) randomMember() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.members) == 0 {
		return ""
	}
	k := rand.IntN(len(s.members))
	for _, n := range s.members {
		if k == 0 {
			return net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
		}
		k--
	}
	return ""
}

// numMembers counts the members alive or suspect, us included. It takes
// no lock: the broadcast queue asks from memberlist's goroutines.
func (s *Service) numMembers() int { return int(s.nMembers.Load()) + 1 }

// Run joins the gossip network and runs until ctx ends; then it leaves
// (memberlist's Leave, so the others mark us left at once) and returns nil.
func (s *Service) Run(ctx context.Context) error {
	if !s.started.CompareAndSwap(false, true) {
		return errors.New("gossip: Run called twice")
	}
	defer close(s.stopped)
	s.refreshMeta()
	var nt memberlist.NodeAwareTransport
	var err error
	if s.newTransport != nil {
		nt, err = s.newTransport()
	} else {
		nt, err = memberlist.NewNetTransport(&memberlist.NetTransportConfig{
			BindAddrs: []string{s.cfg.Bind}, BindPort: s.cfg.Port, Logger: s.mlconfig.Logger})
	}
	if err != nil {
		return fmt.Errorf("gossip: listen on %s: %w", net.JoinHostPort(s.cfg.Bind, strconv.Itoa(s.cfg.Port)), err)
	}
	s.tr = &countingTransport{NodeAwareTransport: nt}
	s.mlconfig.Transport = s.tr
	ml, err := memberlist.Create(s.mlconfig)
	if err != nil {
		_ = nt.Shutdown()
		return fmt.Errorf("gossip: %w", err)
	}
	ln := ml.LocalNode()
	s.mu.Lock()
	s.ml = ml
	s.selfAddr, s.selfPort = slices.Clone([]byte(ln.Addr)), ln.Port
	s.mu.Unlock()
	s.log.Info("gossip up", "bind", net.JoinHostPort(s.cfg.Bind, strconv.Itoa(s.cfg.Port)),
		"advertise", net.JoinHostPort(ln.Addr.String(), strconv.Itoa(int(ln.Port))),
		"profile", s.cfg.Profile, "keyed", s.d.Keys != nil, "join", s.cfg.Join)

	var wg sync.WaitGroup
	wctx, stopWork := context.WithCancel(context.Background())
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case fn := <-s.replies:
				fn()
			case <-wctx.Done():
				return
			}
		}
	}()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case fn := <-s.work:
					fn()
				case <-wctx.Done():
					return
				}
			}
		}()
	}
	wg.Add(1)
	go func() { defer wg.Done(); s.joinLoop(ctx) }()

	sub := s.d.Store.Subscribe(256)
	t := time.NewTicker(tick)
	defer t.Stop()
	lastTouch := time.Now()
	for {
		select {
		case <-ctx.Done():
			sub.Close()
			s.mu.Lock()
			s.leaving = true
			gen, dg := s.metaGen, s.metaDig
			s.mu.Unlock()
			// Our own "offline" notice rides with memberlist's leave
			// message: the others take our disks offline at once and
			// know we left rather than failed.
			_, _, name := s.ourMeta()
			s.queueNotice(fact{origin: s.self, via: s.self, name: clip(name), instance: s.d.Instance, gen: gen, digest: dg, offline: true})
			if s.killed.Load() {
				stopWork()
				wg.Wait()
				return nil
			}
			if err := ml.Leave(leaveFor); err != nil {
				s.log.Info("leave", "err", err)
			}
			stopWork()
			wg.Wait()
			_ = ml.Shutdown()
			s.log.Info("gossip down")
			return nil
		case _, ok := <-sub.C:
			if !ok {
				sub = s.d.Store.Subscribe(256)
			}
			// Coalesce a burst, then say our new generation if it moved.
			for more := true; more; {
				select {
				case _, ok := <-sub.C:
					more = ok
				default:
					more = false
				}
			}
			s.maybeUpdateMeta()
			s.relayOut(ctx)
			s.relayIn(ctx)
		case <-s.kick:
			s.fetchDue(time.Now())
		case now := <-t.C:
			s.maybeUpdateMeta()
			s.relayOut(ctx)
			s.relayIn(ctx)
			s.fetchDue(now)
			touch := now.Sub(lastTouch) >= touchEvery
			if touch {
				lastTouch = now
			}
			s.publishReach(touch)
			s.expireHeld(now)
			if s.q.NumQueued() > maxQueue { // (Prune panics on a queue never used)
				s.q.Prune(maxQueue)
			}
		}
	}
}

// joinLoop joins while we are alone, with backoff from 1 s to 30 s: the
// members named may start after us, or restart.
func (s *Service) joinLoop(ctx context.Context) {
	wait := time.Duration(0)
	resync := false
	together := false // not alone since the last look
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		if s.numMembers() > 1 {
			if !together {
				// Others joined us (our own join failed or has not
				// come): the same one exchange as after joining.
				together, resync = true, true
				wait = resyncAfter + time.Duration(rand.Int64N(int64(resyncAfter)))
				continue
			}
			wait = joinBackoff
			if resync {
				// One full state exchange with a member picked at random,
				// a few seconds after joining: when many start at once,
				// the alive messages of a few late joiners die out before
				// reaching everyone (memberlist sends each a bounded number
				// of times), and push/pull would repair that only after
				// its period (60 s at 50 members, 180 s at 1000).
				resync = false
				if addr := s.randomMember(); addr != "" {
					if _, err := s.ml.Join([]string{addr}); err == nil {
						s.ctr.inc(cResyncs)
					}
				}
			}
			continue
		}
		together = false
		var addrs []string
		for _, j := range s.cfg.Join {
			h, p, _ := splitJoin(j, s.cfg.Port)
			addrs = append(addrs, net.JoinHostPort(h, strconv.Itoa(p)))
		}
		n, err := s.ml.Join(addrs)
		if n > 0 {
			s.mu.Lock()
			s.joined = true
			s.mu.Unlock()
			s.ctr.inc(cJoins)
			s.log.Info("joined the gossip network", "through", n, "members", s.numMembers())
			wait = resyncAfter + time.Duration(rand.Int64N(int64(resyncAfter)))
			together, resync = true, true
			continue
		}
		s.ctr.inc(cJoinsFailed)
		if wait < joinBackoff {
			wait = joinBackoff
		} else {
			wait = min(wait*2, joinMax)
		}
		if s.ctr.get(cJoinsFailed) <= 3 || wait == joinMax {
			s.log.Info("cannot join yet; retrying", "join", s.cfg.Join, "err", err, "in", wait)
		}
	}
}

// ourMeta returns our generation, digest and name now.
func (s *Service) ourMeta() (gen uint64, dg wire.Digest, name string) {
	gen, disks := s.d.Store.LocalDisks()
	return gen, wire.NewInventory(disks).Digest(), s.d.Store.LocalNode().Name
}

// refreshMeta records what our meta says; it reports whether that moved.
func (s *Service) refreshMeta() bool {
	gen, dg, _ := s.ourMeta()
	s.mu.Lock()
	defer s.mu.Unlock()
	if gen == s.metaGen && dg == s.metaDig {
		return false
	}
	s.metaGen, s.metaDig = gen, dg
	return true
}

// maybeUpdateMeta gossips our new generation (memberlist re-gossips the
// alive message carrying it; the others then fetch).
func (s *Service) maybeUpdateMeta() {
	if !s.refreshMeta() {
		return
	}
	s.ctr.inc(cMetaUpdates)
	go func() {
		if err := s.ml.UpdateNode(time.Second); err != nil && s.log.Enabled(context.Background(), slog.LevelDebug) {
			s.log.Debug("meta update", "err", err)
		}
	}()
}

func (s *Service) metaBytes() []byte {
	_, _, name := s.ourMeta()
	s.mu.Lock()
	m := meta{Name: clip(name), Instance: s.d.Instance, Gen: s.metaGen, Digest: append([]byte(nil), s.metaDig[:]...),
		Interval: uint64(s.d.Interval / time.Millisecond)}
	s.mu.Unlock()
	return must(encMode.Marshal(m))
}

// clip cuts a name to what a member accepts.
func clip(name string) string {
	if wire.CheckName(name) == nil {
		return name
	}
	return "?"
}

// relayOut compares the peers the multicast path hears with what we last
// said of them, and broadcasts the differences (via = us). Members are not
// relayed: they speak for themselves.
func (s *Service) relayOut(ctx context.Context) {
	var heard []peer.Heard
	if s.d.Multicast != nil {
		c, cancel := context.WithTimeout(ctx, time.Second)
		h, err := s.d.Multicast.Heard(c)
		cancel()
		if err != nil {
			return // not running yet, or stopping: try at the next tick
		}
		heard = h
	}
	// The addresses the multicast path heard each from: a relayed node
	// carries its routable ones, so peers elsewhere list them.
	addrs := make(map[disk.NodeID]string, len(heard))
	for _, h := range heard {
		if n, ok := s.d.Store.Node(h.ID); ok {
			addrs[h.ID] = routableAddrs(n.Addresses)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := make(map[disk.NodeID]peer.Heard, len(heard))
	for _, h := range heard {
		now[h.ID] = h
	}
	s.heard = now
	for _, h := range heard {
		if _, member := s.members[h.ID]; member || !h.Applied || h.ID == s.self {
			continue
		}
		f := fact{origin: h.ID, via: s.self, name: clip(h.Name), instance: h.Instance, gen: h.Generation, digest: h.Digest, addrs: addrs[h.ID]}
		if old, ok := s.relayed[h.ID]; ok && old == f {
			continue
		}
		s.relayed[h.ID] = f
		s.queueNotice(f)
		s.ctr.inc(cRelayedOut)
	}
	for id, f := range s.relayed {
		_, still := now[id]
		_, member := s.members[id]
		if still && !member {
			continue
		}
		delete(s.relayed, id)
		f.offline = true
		s.queueNotice(f)
	}
}

// relayIn hands the multicast path the nodes the gossip path vouches for
// and the multicast path does not hear itself, with their inventories, to
// announce on our links (only when that set or a generation changed).
func (s *Service) relayIn(ctx context.Context) {
	if s.d.Multicast == nil {
		return
	}
	type want struct {
		id        disk.NodeID
		name      string
		inst, gen uint64
		addrs     string // routable addresses, joined
	}
	var ws []want
	s.mu.Lock()
	for id, o := range s.tab.origins {
		if _, heard := s.heard[id]; heard || !o.online() || !o.applied || o.missing() {
			continue
		}
		ws = append(ws, want{id, o.name, o.appInstance, o.appGen, routableAddrs(s.addrsOf(id))})
	}
	s.mu.Unlock()
	slices.SortFunc(ws, func(a, b want) int { return compareID(a.id, b.id) })
	sig := fmt.Sprint(ws)
	if sig == s.relayInSig {
		return
	}
	rs := make([]peer.Relayed, 0, len(ws))
	for _, w := range ws {
		disks := s.d.Store.Disks(func(d *disk.Disk) bool { return d.Node == w.id && d.Present })
		var addrs []netip.Addr
		for _, a := range splitAddrs(w.addrs) {
			if x, err := netip.ParseAddr(a); err == nil {
				addrs = append(addrs, x)
			}
		}
		rs = append(rs, peer.Relayed{ID: w.id, Name: w.name, Instance: w.inst, Generation: w.gen, Disks: disks, Addresses: addrs})
	}
	c, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if err := s.d.Multicast.SetRelayed(c, rs); err == nil {
		s.relayInSig = sig
	}
}

// notice is one queued broadcast; a newer one about the same origin from
// the same relay replaces it in the queue.
type notice struct {
	name string
	msg  []byte
}

func (n *notice) Invalidates(b memberlist.Broadcast) bool {
	o, ok := b.(*notice)
	return ok && o.name == n.name
}
func (n *notice) Name() string    { return n.name }
func (n *notice) Message() []byte { return n.msg }
func (n *notice) Finished()       {}

func (s *Service) queueNotice(f fact) {
	c := f.claim()
	s.q.QueueBroadcast(&notice{name: string(f.origin) + "/" + string(f.via), msg: encode(msgNotice, c)})
	s.ctr.inc(cNoticesQueued)
}

// fetchDue asks for the inventories the store lacks.
func (s *Service) fetchDue(now time.Time) {
	s.mu.Lock()
	ring := make([]disk.NodeID, 0, len(s.members)+1)
	ring = append(ring, s.self)
	for id := range s.members {
		ring = append(ring, id)
	}
	slices.Sort(ring)
	fs := s.tab.wants(now, func(source disk.NodeID) disk.NodeID { return treeParent(ring, s.self, source) })
	var sends []func()
	for _, f := range fs {
		if disks, ff, ok := s.tab.cached(f.origin); ok {
			s.applyLocked(ff, disks) // back with what we had: no fetch
			s.ctr.inc(cFetchesCached)
			continue
		}
		n := s.members[f.from]
		if _, heard := s.heard[f.origin]; n == nil || heard {
			continue // the multicast path has it first hand
		}
		msg := encode(msgFetchReq, fetchReq{Origin: idBytes(f.origin), From: idBytes(s.self), Addr: s.selfAddr, Port: s.selfPort,
			Instance: f.inst, Gen: f.gen})
		sends = append(sends, func() {
			if err := s.ml.SendReliable(n, msg); err != nil {
				s.ctr.inc(cFetchFailed)
				if s.ctr.limit("fetch "+string(f.from), time.Minute) {
					s.log.Info("inventory fetch failed", "origin", f.origin, "from", n.Name, "err", err)
				}
				return
			}
			s.ctr.inc(cFetchesSent)
		})
	}
	s.mu.Unlock()
	for _, fn := range sends {
		s.submit(fn)
	}
}

// submit runs fn on a worker; a full queue drops it (a fetch is retried).
func (s *Service) submit(fn func()) {
	select {
	case s.work <- fn:
	default:
		s.ctr.inc(cDropWorkFull)
	}
}

// publishReach tells the store how each peer we know is reached, and
// refreshes the last-heard time of those the gossip path vouches for.
func (s *Service) publishReach(touch bool) {
	s.mu.Lock()
	type upd struct {
		id    disk.NodeID
		reach disk.Reach
		touch *disk.Node
	}
	var ups []upd
	ids := map[disk.NodeID]bool{}
	for id := range s.heard {
		ids[id] = true
	}
	for id, o := range s.tab.origins {
		if o.online() {
			ids[id] = true
		}
	}
	for id := range ids {
		var parts []disk.Reach
		if _, ok := s.heard[id]; ok {
			parts = append(parts, disk.ReachMulticast)
		}
		o := s.tab.origins[id]
		if o != nil && o.online() {
			if o.vias[id] {
				parts = append(parts, disk.ReachGossip)
			}
			for _, v := range slices.Sorted(mapKeys(o.vias)) {
				if v != id {
					parts = append(parts, disk.ReachVia(disk.ReachGossip, s.nameOf(v)))
				}
			}
		}
		u := upd{id: id, reach: disk.JoinReach(parts...)}
		if touch && o != nil && o.online() && o.applied {
			u.touch = &disk.Node{ID: id, Name: o.name, Addresses: s.addrsOf(id)}
		}
		ups = append(ups, u)
	}
	s.mu.Unlock()
	for _, u := range ups {
		if u.touch != nil {
			s.d.Store.TouchPeer(*u.touch)
		}
		s.d.Store.SetPeerReach(u.id, u.reach)
	}
}

// nameOf returns a member's name as its meta says (its ID otherwise).
func (s *Service) nameOf(id disk.NodeID) string {
	if o := s.tab.origins[id]; o != nil && o.name != "" {
		return o.name
	}
	return string(id)
}

// addrsOf returns a member's gossip address, or the routable addresses a
// relay said of a relayed node (nil when none said any).
func (s *Service) addrsOf(id disk.NodeID) []string {
	if n := s.members[id]; n != nil {
		return []string{n.Addr.String()}
	}
	if o := s.tab.origins[id]; o != nil {
		return splitAddrs(o.addrs)
	}
	return nil
}

// kill stops the member at once, without leaving, as a crash would: for
// benchmarks of failure detection.
func (s *Service) kill() {
	s.killed.Store(true)
	_ = s.ml.Shutdown()
}

// Status is the gossip path's self-report (api.GossipStatus's fields).
type Status struct {
	Keyed      bool
	Profile    string
	Advertise  string
	Join       []string
	Joined     bool
	Members    int // alive and suspect, us included
	Suspect    int
	Health     int // memberlist's awareness score: 0 is healthy
	UDPBlocked bool
	Counters   map[string]uint64
}

// Status returns the current status. Safe at any time.
func (s *Service) Status() Status {
	st := Status{Keyed: s.d.Keys != nil, Profile: s.cfg.Profile, Join: slices.Clone(s.cfg.Join), Counters: s.ctr.snapshot()}
	s.mu.Lock()
	ml := s.ml
	st.Joined = s.joined
	st.UDPBlocked = !s.lastUDP.IsZero() && time.Since(s.lastUDP) < 2*time.Minute
	s.mu.Unlock()
	if ml != nil {
		ln := ml.LocalNode()
		st.Advertise = net.JoinHostPort(ln.Addr.String(), strconv.Itoa(int(ln.Port)))
		for _, n := range ml.Members() {
			if n.State == memberlist.StateSuspect {
				st.Suspect++
			}
			if n.State == memberlist.StateAlive || n.State == memberlist.StateSuspect {
				st.Members++
			}
		}
		st.Health = ml.GetHealthScore()
		st.Counters["queued_notices"] = uint64(s.q.NumQueued())
		st.Counters["sent_packets"] = s.tr.packets.Load()
		st.Counters["sent_packet_bytes"] = s.tr.packetBytes.Load()
		st.Counters["sent_streams"] = s.tr.streams.Load()
		st.Counters["sent_stream_bytes"] = s.tr.streamBytes.Load()
	}
	return st
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

// heldReq is a fetch request for an inventory we do not hold yet but will
// (we are its asker's parent in the fetch tree): answered when ours
// arrives, or "unknown" after holdMax (the asker then asks the source).
type heldReq struct {
	to        *memberlist.Node
	inst, gen uint64
	at        time.Time
}

// Held requests' bounds.
const (
	holdMax = 2 * time.Second
	maxHeld = 1024
)

// releaseHeld answers the requests held for f's origin that f's
// inventory (ds) satisfies. s.mu is held.
func (s *Service) releaseHeld(f fact, ds []disk.Disk) {
	hs := s.held[f.origin]
	if len(hs) == 0 {
		return
	}
	var rep []byte
	kept := hs[:0]
	for _, h := range hs {
		if h.inst != f.instance || h.gen > f.gen {
			kept = append(kept, h)
			continue
		}
		if rep == nil {
			rep = encode(msgFetchRep, fetchRep{Origin: idBytes(f.origin), Name: f.name, Instance: f.instance, Gen: f.gen,
				Inventory: wire.NewInventory(ds).Whole(), From: idBytes(s.self)})
		}
		to := h.to
		s.submit(func() { s.sendReply(to, rep) })
	}
	s.nHeld -= len(hs) - len(kept)
	if len(kept) == 0 {
		delete(s.held, f.origin)
	} else {
		s.held[f.origin] = kept
	}
}

// expireHeld answers "unknown" to the requests held longer than holdMax.
func (s *Service) expireHeld(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, hs := range s.held {
		kept := hs[:0]
		for _, h := range hs {
			if now.Sub(h.at) < holdMax {
				kept = append(kept, h)
				continue
			}
			to, rep := h.to, encode(msgFetchRep, fetchRep{Origin: idBytes(id), Unknown: true, From: idBytes(s.self)})
			s.submit(func() { s.sendReply(to, rep) })
		}
		s.nHeld -= len(hs) - len(kept)
		if len(kept) == 0 {
			delete(s.held, id)
		} else {
			s.held[id] = kept
		}
	}
}

func (s *Service) sendReply(to *memberlist.Node, rep []byte) {
	if err := s.ml.SendReliable(to, rep); err != nil {
		s.ctr.inc(cFetchFailed)
		return
	}
	s.ctr.inc(cFetchesServed)
}
