package legacy

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/diskd/diskd/pkg/disk"
	"github.com/diskd/diskd/pkg/store"
)

// Defaults and fixed values of the bridge.
const (
	DefaultGroup = "230.1.2.3"
	DefaultPort  = 32003
	// TTL is the original's multicast TTL.
	TTL = 2
	// DefaultPeerInterval is the original's announce period.
	DefaultPeerInterval = 10 * time.Minute
	// ResendInterval is how often we announce with no change: an original
	// peer learns only when we send, so a restarted one waits at most this.
	ResendInterval = time.Minute
	// ChangeGap paces announces caused by local changes: the first goes at
	// once, the next no sooner than this after the last one a change caused.
	ChangeGap = 2 * time.Second

	lookupTimeout = time.Second // reverse DNS of a legacy peer
	nameTTL       = time.Hour
	rescanEvery   = 30 * time.Second
	diskdEvery    = 200 * time.Millisecond // refresh of the diskd peers' addresses
	inboundQueue  = 256
)

// Config configures the bridge.
type Config struct {
	// Group and Port are the original's multicast group and UDP port.
	Group string
	Port  int
	// Interfaces are those of the peer network (empty: every interface
	// that is up, multicast-capable, not loopback and has IPv4).
	Interfaces []string
	// PeerInterval is the legacy peers' announce period; a legacy peer
	// silent for OfflineAfter of them is offline.
	PeerInterval time.Duration
	// ResendInterval and ChangeGap override the constants (tests).
	ResendInterval, ChangeGap time.Duration
	// Enter runs fn where the socket must be made and interfaces listed
	// (tests put the service in a network namespace). Nil runs fn.
	Enter func(fn func() error) error
	// LookupAddr is reverse DNS; nil is net.DefaultResolver's.
	LookupAddr func(ctx context.Context, addr string) ([]string, error)
}

// Service is the bridge of one daemon.
type Service struct {
	cfg   Config
	st    *store.Store
	log   *slog.Logger
	group netip.Addr
	ctr   counters
	in    chan inbound
	now   chan struct{} // Announce's requests
	own   atomic.Pointer[[]netip.Addr]

	mu             sync.Mutex // guards the status snapshot below
	ifaces         []string
	known, running int

	logMu   sync.Mutex
	logLast map[string]time.Time

	diskd   map[netip.Addr]bool // online diskd peers' addresses (loop only)
	diskdAt time.Time
}

type inbound struct {
	src netip.Addr
	es  []Entry
	at  time.Time
}

// New checks cfg and returns the bridge for st's node.
func New(cfg Config, st *store.Store, logger *slog.Logger) (*Service, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	g, err := netip.ParseAddr(cmp.Or(cfg.Group, DefaultGroup))
	if err != nil || !g.Unmap().Is4() || !g.IsMulticast() {
		return nil, fmt.Errorf("legacy: group %q: want an IPv4 multicast address (the original has no IPv6)", cfg.Group)
	}
	if cfg.Port == 0 {
		cfg.Port = DefaultPort
	}
	if cfg.Port < 1 || cfg.Port > 65535 {
		return nil, fmt.Errorf("legacy: port %d out of range", cfg.Port)
	}
	if cfg.PeerInterval == 0 {
		cfg.PeerInterval = DefaultPeerInterval
	}
	if cfg.PeerInterval < time.Second || cfg.PeerInterval > 24*time.Hour {
		return nil, fmt.Errorf("legacy: peer interval %v: want 1s to 24h", cfg.PeerInterval)
	}
	cfg.ResendInterval = cmp.Or(cfg.ResendInterval, ResendInterval)
	cfg.ChangeGap = cmp.Or(cfg.ChangeGap, ChangeGap)
	if cfg.Enter == nil {
		cfg.Enter = func(fn func() error) error { return fn() }
	}
	if cfg.LookupAddr == nil {
		cfg.LookupAddr = net.DefaultResolver.LookupAddr
	}
	return &Service{cfg: cfg, st: st, log: logger, group: g.Unmap(),
		in: make(chan inbound, inboundQueue), now: make(chan struct{}, 1), logLast: make(map[string]time.Time)}, nil
}

// Announce sends our disks to the legacy group now (the control socket's
// `announce`), without waiting. Requests while one is pending merge.
func (s *Service) Announce() {
	select {
	case s.now <- struct{}{}:
	default:
	}
}

// Status is the bridge's self-report; api.LegacyStatus has its fields.
type Status struct {
	Group       string   // "230.1.2.3:32003"
	Interfaces  []string // joined
	Peers       int      // legacy peers heard
	PeersOnline int
	Counters    map[string]uint64
}

// Status returns the current status. Safe to call at any time.
func (s *Service) Status() Status {
	st := Status{Group: netip.AddrPortFrom(s.group, uint16(s.cfg.Port)).String(), Counters: s.ctr.snapshot()}
	s.mu.Lock()
	st.Interfaces = slices.Clone(s.ifaces)
	st.Peers, st.PeersOnline = s.known, s.running
	s.mu.Unlock()
	return st
}

// Run joins the legacy group and bridges until ctx ends; it returns an
// error only when the socket cannot be opened.
func (s *Service) Run(ctx context.Context) error {
	var c *conn
	if err := s.cfg.Enter(func() (err error) { c, err = listen(s.cfg.Port, TTL); return err }); err != nil {
		return fmt.Errorf("legacy: open socket on port %d: %w", s.cfg.Port, err)
	}
	var wg sync.WaitGroup
	defer func() { c.close(); wg.Wait() }()
	s.log.Warn("legacy bridge on: the legacy network is unauthenticated; any host on it can announce disks as a legacy peer (App::Diskd 0.01 has no authentication)",
		"group", netip.AddrPortFrom(s.group, uint16(s.cfg.Port)).String())

	joined := map[int]iface{}
	rescan := func() {
		var use []iface
		var own []netip.Addr
		err := s.cfg.Enter(func() (err error) { use, own, err = scanInterfaces(s.cfg.Interfaces); return err })
		if err != nil {
			s.logLimited("rescan", slog.LevelWarn, "listing interfaces", "err", err)
			return
		}
		s.own.Store(&own)
		now := map[int]iface{}
		for _, it := range use {
			now[it.ifi.Index] = it
			if _, ok := joined[it.ifi.Index]; !ok {
				if err := c.join(&it.ifi, s.group); err != nil {
					s.logLimited("join "+it.ifi.Name, slog.LevelWarn, "joining the legacy group", "interface", it.ifi.Name, "err", err)
					delete(now, it.ifi.Index)
					continue
				}
				s.log.Info("legacy group joined", "interface", it.ifi.Name)
			}
		}
		for i, it := range joined {
			if _, ok := now[i]; !ok {
				_ = c.leave(&it.ifi, s.group)
			}
		}
		joined = now
		names := make([]string, 0, len(now))
		for _, it := range now {
			names = append(names, it.ifi.Name)
		}
		slices.Sort(names)
		s.mu.Lock()
		s.ifaces = names
		s.mu.Unlock()
	}
	rescan()

	wg.Add(1)
	go func() { defer wg.Done(); s.reader(c) }()

	names := make(chan [2]string, 64) // address, name
	lookups := make(chan netip.Addr, 64)
	lctx, stopLookups := context.WithCancel(ctx)
	defer stopLookups()
	wg.Add(1)
	go func() { defer wg.Done(); s.resolver(lctx, lookups, names) }()
	resolved := map[netip.Addr]time.Time{}

	co := newCore(s.st, &s.ctr, s.cfg.PeerInterval, s.isDiskd)
	co.onNew = func(a netip.Addr) {
		if at, ok := resolved[a]; ok && time.Since(at) < nameTTL {
			return
		}
		resolved[a] = time.Now()
		if len(resolved) > 4*MaxPeers {
			clear(resolved)
		}
		select {
		case lookups <- a:
		default: // the name stays the address
		}
	}

	localID := s.st.LocalNode().ID
	sub := s.st.Subscribe(1024)
	defer func() { sub.Close() }()

	var last []byte
	var lastChange time.Time // the last announce a change caused
	changed := false
	send := func(now time.Time, why string) {
		_, ds := s.st.LocalDisks()
		b, skipped := Encode(entriesFrom(ds))
		s.ctr.set(localNotSent, uint64(skipped))
		if skipped > 0 {
			s.logLimited("skipped", slog.LevelWarn, "local disks left out of the legacy announce: over 1500 bytes", "left_out", skipped)
		}
		if why == "change" && bytes.Equal(b, last) {
			changed = false
			return // a change the legacy format does not show (mounts, size)
		}
		for _, it := range joined {
			if err := c.send(b, it.ifi.Index, s.group, s.cfg.Port); err != nil {
				s.ctr.inc(sendFailed)
				s.logLimited("send "+it.ifi.Name, slog.LevelWarn, "legacy send", "interface", it.ifi.Name, "err", err)
				continue
			}
			s.ctr.inc(sentDatagrams)
			s.ctr.add(sentBytes, uint64(len(b)))
		}
		last, changed = b, false
		if why == "change" {
			lastChange = now
		}
		s.log.Debug("legacy announce", "why", why, "bytes", len(b))
	}
	start := time.Now()
	send(start, "start")
	nextResend, nextRescan := start.Add(s.cfg.ResendInterval), start.Add(rescanEvery)

	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		now := time.Now()
		co.tick(now)
		if changed && !now.Before(lastChange.Add(s.cfg.ChangeGap)) {
			send(now, "change")
		}
		if !now.Before(nextResend) {
			send(now, "periodic")
			nextResend = now.Add(s.cfg.ResendInterval)
		}
		if !now.Before(nextRescan) {
			rescan()
			nextRescan = now.Add(rescanEvery)
		}
		k, o := co.counts()
		s.mu.Lock()
		s.known, s.running = k, o
		s.mu.Unlock()

		due := nextResend
		consider := func(t time.Time) {
			if !t.IsZero() && t.Before(due) {
				due = t
			}
		}
		consider(nextRescan)
		consider(co.next())
		if changed {
			consider(lastChange.Add(s.cfg.ChangeGap))
		}
		timer.Reset(max(time.Until(due), 0))
		select {
		case <-ctx.Done():
			return nil
		case in := <-s.in:
			if _, ok := co.peers[in.src]; !ok {
				s.logLimited("new "+in.src.String(), slog.LevelInfo, "legacy peer heard", "addr", in.src, "disks", len(in.es))
			}
			co.receive(in.at, in.src, in.es)
		case ev, ok := <-sub.C:
			if !ok {
				sub = s.st.Subscribe(1024)
				changed = true
				continue
			}
			if ev.Disk != nil && ev.Disk.Node == localID {
				changed = true
			}
		case <-s.now:
			send(time.Now(), "request")
		case n := <-names:
			if a, err := netip.ParseAddr(n[0]); err == nil {
				co.rename(time.Now(), a, n[1])
			}
		case <-timer.C:
		}
	}
}

// entriesFrom is what the original would announce for our disks: one
// entry per disk with a UUID or a label; like its blkid regexes, a
// partition's UUID and label stand in for missing filesystem ones.
func entriesFrom(ds []disk.Disk) []Entry {
	var es []Entry
	for _, d := range ds {
		e := Entry{UUID: cmp.Or(d.UUID, d.PartUUID), Label: cmp.Or(d.Label, d.PartLabel), Device: d.Device}
		if e.UUID == "" && e.Label == "" {
			continue
		}
		es = append(es, e)
	}
	return es
}

// reader checks each datagram and hands the parsed ones to the loop.
func (s *Service) reader(c *conn) {
	buf := make([]byte, 2048) // longer than MaxDatagram: an oversized one is seen, not cut
	for {
		n, dst, src, err := c.read(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.logLimited("read", slog.LevelWarn, "legacy receive", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		s.ctr.inc(recvDatagrams)
		s.ctr.add(recvBytes, uint64(n))
		if dst != s.group {
			s.ctr.inc(dropNotGroup)
			continue
		}
		if own := s.own.Load(); own != nil && slices.Contains(*own, src) {
			s.ctr.inc(dropOwn)
			continue
		}
		es, err := Parse(buf[:n])
		if err != nil {
			r := ReasonOf(err)
			s.ctr.dropped(r)
			s.logLimited("drop "+r.String(), slog.LevelInfo, "dropping bad legacy datagrams", "src", src, "err", err)
			continue
		}
		select {
		case s.in <- inbound{src: src, es: es, at: time.Now()}:
		default:
			s.ctr.inc(dropQueueFull)
		}
	}
}

// resolver looks legacy peers' names up, one at a time, each bounded.
func (s *Service) resolver(ctx context.Context, in <-chan netip.Addr, out chan<- [2]string) {
	for {
		select {
		case <-ctx.Done():
			return
		case a := <-in:
			lctx, cancel := context.WithTimeout(ctx, lookupTimeout)
			names, err := s.cfg.LookupAddr(lctx, a.String())
			cancel()
			if err != nil || len(names) == 0 {
				continue
			}
			name := names[0]
			if len(name) > 1 && name[len(name)-1] == '.' {
				name = name[:len(name)-1]
			}
			if len(name) > 253 {
				continue
			}
			select {
			case out <- [2]string{a.String(), name}:
			case <-ctx.Done():
				return
			}
		}
	}
}

// isDiskd reports whether a is an address of an online diskd peer.
func (s *Service) isDiskd(a netip.Addr) bool {
	if now := time.Now(); now.Sub(s.diskdAt) > diskdEvery {
		s.diskdAt = now
		m := map[netip.Addr]bool{}
		for _, n := range s.st.Nodes() {
			// Relayed nodes' addresses are what a relay says, not
			// where datagrams come from: only first-hand peers count.
			if n.Local || !n.Reach.FirstHand() || !n.Online {
				continue
			}
			for _, as := range n.Addresses {
				if x, err := netip.ParseAddr(as); err == nil {
					m[x.WithZone("").Unmap()] = true
				}
			}
		}
		s.diskd = m
	}
	return s.diskd[a]
}

// logLimited logs msg at most once a minute per key.
func (s *Service) logLimited(key string, level slog.Level, msg string, args ...any) {
	s.logMu.Lock()
	now := time.Now()
	ok := now.Sub(s.logLast[key]) >= time.Minute
	if ok {
		if len(s.logLast) > 1024 {
			clear(s.logLast)
		}
		s.logLast[key] = now
	}
	s.logMu.Unlock()
	if ok {
		s.log.Log(context.Background(), level, msg, args...)
	}
}
