// Package peer owns diskd's peer network: the multicast sockets on every
// interface, and the protocol's behaviour - heartbeats, announces of the
// local inventory, queries and their answers, goodbyes, offline detection,
// authentication, replay and flood limits. It feeds what peers report into
// the store and announces what the store holds locally. The datagram format
// is package wire's; docs/protocol.md specifies both.
//
// The protocol is a state machine without I/O, Machine (machine.go, with
// peers.go, announce.go, answer.go, offline.go, relay.go, requests.go):
// decoded datagrams, the clock and local changes go in; datagrams, store
// updates and its next wake-up come out. The Service's driver (driver.go,
// receive.go, links.go, sockets.go, netlink.go) runs one machine over real
// sockets, a timer and the store: every goroutine starts in driver.run.
// Package sim runs a thousand machines on a simulated link and clock.
package peer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/diskd/diskd/pkg/store"
	"github.com/diskd/diskd/pkg/wire"
)

// Defaults.
const (
	DefaultGroup4 = "239.255.68.75"
	DefaultGroup6 = "ff02::444b"
	// DefaultGroup6Site is the IPv6 group a daemon sends to when its TTL
	// lets datagrams cross routers: ff02:: (link scope) never leaves its
	// link, ff05:: (site scope) is routed. Both are joined by default, so
	// daemons with TTL 1 and daemons with a higher TTL hear each other.
	DefaultGroup6Site = "ff05::444b"
	DefaultPort       = 32004
	DefaultInterval   = 10 * time.Second
)

// The range of heartbeat intervals this daemon accepts, for its own
// --heartbeat-interval and from peers. A peer advertising an interval
// outside it is treated as if it had advertised the nearest bound (and
// counted as intervals_clamped): the offline timeout is our policy, so a
// node claiming an hour still goes offline after 3 x MaxPeerInterval of
// silence, and one claiming 1 ms is not dropped between its heartbeats.
const (
	MinPeerInterval = time.Second
	MaxPeerInterval = time.Minute
)

// Config configures the peer network. DefaultConfig fills it in; cmd/diskd
// maps it to flags and the config file's [network] table.
type Config struct {
	// Groups are the multicast groups, IPv4 and IPv6 mixed. A family with no
	// group here uses its default group.
	Groups []string
	// Port is the UDP port.
	Port int
	// Interfaces restricts the interfaces used; empty means every interface
	// that is up, multicast-capable and not loopback.
	Interfaces []string
	// TTL is the multicast TTL / hop limit: 1 keeps datagrams on the link.
	TTL int
	// KeyFile, when set, authenticates the network (see wire.ParseKeys).
	KeyFile string
	// HeartbeatInterval is how often we say we are alive; a peer silent for
	// three of its intervals is offline. MinPeerInterval to MaxPeerInterval.
	HeartbeatInterval time.Duration
	// IPv4 and IPv6 switch the families.
	IPv4 bool
	IPv6 bool
	// AnnouncesPerMinute bounds whole-inventory announces caused by local
	// changes too big for one datagram, and requested ones (the first of a
	// burst goes at once); smaller changes go as delta announces, bounded
	// by the byte budget (delta.go).
	AnnouncesPerMinute int
	// MaxPeers bounds the peers tracked; when full, the peer offline the
	// longest is forgotten first, else the one heard least recently.
	MaxPeers int
	// SourceRate and SourceBurst bound the datagrams accepted per source
	// address (a token bucket), checked before anything else.
	SourceRate  float64
	SourceBurst float64

	// Enter, when set, runs fn where the service's sockets must be created
	// and interfaces listed: tests use it to put a service inside a network
	// namespace. Nil runs fn directly.
	Enter func(fn func() error) error
	// Instance, when not 0, is the instance ID to announce (the gossip
	// path announces the same one); 0 makes one at start.
	Instance uint64
	// IgnoreDeltas makes the service drop delta announces as a daemon from
	// before them does (unknown_type): tests of the protocol's
	// compatibility use it (hidden flag --debug-ignore-deltas; no config
	// key). It only makes the daemon slower to learn changes.
	IgnoreDeltas bool
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		Groups:             []string{DefaultGroup4, DefaultGroup6, DefaultGroup6Site},
		Port:               DefaultPort,
		TTL:                1,
		HeartbeatInterval:  DefaultInterval,
		IPv4:               true,
		IPv6:               true,
		AnnouncesPerMinute: 10,
		MaxPeers:           4096,
		SourceRate:         200,
		SourceBurst:        1000,
	}
}

// groups resolves the configured groups per family: the ones joined, and
// the IPv6 ones sent to. Every IPv4 group joined is sent to. IPv6 groups
// carry a scope, so a daemon sends to the joined groups its TTL suits:
// link-scope ones (ff02::) with TTL 1, wider ones (ff05::, ...) with a
// higher TTL, and all of them when none suits.
func (c *Config) groups() (v4, v6, send6 []netip.Addr, err error) {
	for _, g := range c.Groups {
		a, err := netip.ParseAddr(g)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("group %q: %w", g, err)
		}
		if !a.IsMulticast() {
			return nil, nil, nil, fmt.Errorf("group %q is not a multicast address", g)
		}
		if a.Is4() || a.Is4In6() {
			v4 = append(v4, a.Unmap())
		} else {
			v6 = append(v6, a)
		}
	}
	if len(v4) == 0 {
		v4 = []netip.Addr{netip.MustParseAddr(DefaultGroup4)}
	}
	if len(v6) == 0 {
		v6 = []netip.Addr{netip.MustParseAddr(DefaultGroup6), netip.MustParseAddr(DefaultGroup6Site)}
	}
	slices.SortFunc(v4, netip.Addr.Compare)
	slices.SortFunc(v6, netip.Addr.Compare)
	v4, v6 = slices.Compact(v4), slices.Compact(v6)
	for _, g := range v6 {
		if linkScope(g) == (c.TTL <= 1) {
			send6 = append(send6, g)
		}
	}
	if len(send6) == 0 {
		send6 = v6
	}
	return v4, v6, send6, nil
}

// linkScope reports whether IPv6 multicast group g stays on its link
// (interface- or link-local scope, RFC 4291 2.7).
func linkScope(g netip.Addr) bool { return g.As16()[1]&0x0f <= 2 }

// Service is the peer network of one daemon.
type Service struct {
	cfg      Config
	st       *store.Store
	log      *slog.Logger
	keys     *wire.Keyring
	self     wire.NodeID
	g4, g6   []netip.Addr // groups joined
	send6    []netip.Addr // IPv6 groups sent to (IPv4: all of g4)
	dec      *wire.Decoder
	ctr      counters
	in       chan inbound
	reqs     chan func(*driver)
	started  atomic.Bool   // Run was called (it runs once)
	running  atomic.Bool   // the loop takes requests
	stopped  chan struct{} // closed when Run returns
	logLimit logLimiter
	handler  atomic.Pointer[RequestHandler] // requests addressed to us; nil refuses them

	mu     sync.Mutex // guards the snapshot below, for Status
	ifaces []string

	// ifnames maps interface indexes to names for the readers, which must
	// not look names up themselves (they may run in another namespace).
	ifnames atomic.Pointer[map[int]string]
}

// New checks cfg, reads the key file and returns a service for st's node.
func New(cfg Config, st *store.Store, logger *slog.Logger) (*Service, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	def := DefaultConfig()
	if cfg.Port <= 0 || cfg.Port > 65535 {
		return nil, fmt.Errorf("peer: port %d out of range", cfg.Port)
	}
	if cfg.TTL < 1 || cfg.TTL > 255 {
		return nil, fmt.Errorf("peer: ttl %d: want 1-255", cfg.TTL)
	}
	if cfg.HeartbeatInterval < MinPeerInterval || cfg.HeartbeatInterval > MaxPeerInterval {
		return nil, fmt.Errorf("peer: heartbeat interval %v: want %v to %v", cfg.HeartbeatInterval, MinPeerInterval, MaxPeerInterval)
	}
	if !cfg.IPv4 && !cfg.IPv6 {
		return nil, errors.New("peer: both IPv4 and IPv6 are off")
	}
	if cfg.AnnouncesPerMinute <= 0 {
		cfg.AnnouncesPerMinute = def.AnnouncesPerMinute
	}
	if cfg.MaxPeers <= 0 {
		cfg.MaxPeers = def.MaxPeers
	}
	if cfg.SourceRate <= 0 {
		cfg.SourceRate = def.SourceRate
	}
	if cfg.SourceBurst <= 0 {
		cfg.SourceBurst = def.SourceBurst
	}
	if cfg.Enter == nil {
		cfg.Enter = func(fn func() error) error { return fn() }
	}
	g4, g6, send6, err := cfg.groups()
	if err != nil {
		return nil, fmt.Errorf("peer: %w", err)
	}
	var keys *wire.Keyring
	if cfg.KeyFile != "" {
		if keys, err = wire.LoadKeyFile(cfg.KeyFile); err != nil {
			return nil, fmt.Errorf("peer: %w", err)
		}
	}
	self, err := wire.ParseNodeID(st.LocalNode().ID)
	if err != nil {
		return nil, fmt.Errorf("peer: local %w", err)
	}
	log := logger
	if keys == nil {
		log.Warn("peer network is unauthenticated: anyone on the link can announce disks (set --key-file)")
	}
	return &Service{
		cfg: cfg, st: st, log: log, keys: keys, self: self, g4: g4, g6: g6, send6: send6,
		dec:     wire.NewDecoder(keys),
		in:      make(chan inbound, 4096),
		reqs:    make(chan func(*driver), 16),
		stopped: make(chan struct{}),
	}, nil
}

// Status is the peer network's self-report. Its fields are those of
// api.NetStatus, so api.NetStatus(s.Status()) converts it.
type Status struct {
	// Authenticated says whether datagrams are tagged and checked.
	Authenticated bool
	// Groups are "group port" per family in use, e.g. "239.255.68.75:32004".
	Groups []string
	// Interfaces are the interfaces joined, as "eth0 (ipv4 ipv6)".
	Interfaces []string
	// Counters: datagrams and bytes sent and received (in total and per
	// family), protocol events, and every drop reason as "drop_REASON",
	// zeros included.
	Counters map[string]uint64
}

// Status returns the current status. Safe to call at any time.
func (s *Service) Status() Status {
	st := Status{Authenticated: s.keys != nil, Counters: s.ctr.snapshot()}
	if s.cfg.IPv4 {
		for _, g := range s.g4 {
			st.Groups = append(st.Groups, netip.AddrPortFrom(g, uint16(s.cfg.Port)).String())
		}
	}
	if s.cfg.IPv6 {
		for _, g := range s.g6 {
			st.Groups = append(st.Groups, netip.AddrPortFrom(g, uint16(s.cfg.Port)).String())
		}
	}
	s.mu.Lock()
	st.Interfaces = slices.Clone(s.ifaces)
	s.mu.Unlock()
	return st
}

// logLimited logs a line of kind k unless that kind is over its budget
// (then it only counts it); the first line after a suppressed run says how
// many were suppressed.
func (s *Service) logLimited(k logKind, level slog.Level, msg string, args ...any) {
	logLimitedAt(s.log, &s.logLimit, &s.ctr, time.Now(), k, level, msg, args...)
}

func logLimitedAt(log *slog.Logger, lim *logLimiter, ctr *counters, now time.Time, k logKind, level slog.Level, msg string, args ...any) {
	ok, suppressed := lim.allow(k, now)
	if !ok {
		ctr.inc(logLinesSuppressed)
		return
	}
	if suppressed > 0 {
		args = append(args, "suppressed_since_last", suppressed)
	}
	log.Log(context.Background(), level, msg, args...)
}

// Alive returns nil once the protocol loop has run a request: a cheap
// liveness probe for the service manager's watchdog. Before Run starts the
// loop the request waits for it (until ctx ends).
func (s *Service) Alive(ctx context.Context) error {
	return s.queue(ctx, func(*driver) {})
}

// ErrNotRunning is returned by requests made while Run is not running.
var ErrNotRunning = errors.New("peer network not running")

// do runs fn on the protocol loop and waits for it.
func (s *Service) do(ctx context.Context, fn func(*driver)) error {
	if !s.running.Load() {
		return ErrNotRunning
	}
	return s.queue(ctx, fn)
}

// queue runs fn on the protocol loop, waiting for the loop to start if it
// has not yet, and waits for fn.
func (s *Service) queue(ctx context.Context, fn func(*driver)) error {
	done := make(chan struct{})
	select {
	case s.reqs <- func(d *driver) { fn(d); close(done) }:
	case <-s.stopped:
		return ErrNotRunning
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-done:
		return nil
	case <-s.stopped:
		return ErrNotRunning
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Announce sends our inventory soon (the control socket's `announce`):
// through the same pacing as announces of local changes, so requests in a
// loop cost the network no more than a disk changing in a loop. It does
// not wait for the send.
func (s *Service) Announce() {
	if !s.running.Load() {
		return
	}
	select {
	case s.reqs <- func(d *driver) { d.m.RequestAnnounce(time.Now()) }:
	default: // a request is already queued; it will announce the latest inventory
	}
}

// PingWindow is how long Ping counts answers.
const PingWindow = time.Second

// Ping queries every node (at most once a second: a ping within a second
// of the last shares its window) and returns how many distinct peers were
// heard from within PingWindow of the query.
func (s *Service) Ping(ctx context.Context) (answered int, err error) {
	var at time.Time
	if err := s.do(ctx, func(d *driver) { at = d.m.Ping(time.Now()) }); err != nil {
		return 0, err
	}
	t := time.NewTimer(time.Until(at.Add(PingWindow)))
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	err = s.do(ctx, func(d *driver) { answered = d.m.HeardSince(at) })
	return answered, err
}

// Run joins the network and runs the protocol until ctx is cancelled; then
// it says goodbye and returns nil. It returns an error when no socket can
// be opened.
func (s *Service) Run(ctx context.Context) error {
	if !s.started.CompareAndSwap(false, true) {
		return errors.New("peer: Run called twice")
	}
	defer close(s.stopped)
	d, err := newDriver(s)
	if err != nil {
		return err
	}
	return d.run(ctx)
}
