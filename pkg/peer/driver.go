package peer

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/diskd/diskd/pkg/disk"
	"github.com/diskd/diskd/pkg/store"
	"github.com/diskd/diskd/pkg/wire"
)

// The driver runs a Machine for a Service: it owns the sockets, the
// timer, the store subscription and the interface scans, and feeds the
// machine from one goroutine (run). Its other goroutines are started in
// run only: one reader per socket and the netlink watcher, all ended by
// closing what they read (close waits for them); and one per request a
// peer makes of us while its handler acts (ended by run's context or the
// action's own deadline, see Act).

const (
	rescanEvery  = 30 * time.Second
	rescanSettle = 100 * time.Millisecond // after a netlink event
	maxSources   = 4096
	drainBatch   = 256
)

// inbound is a checked, decoded datagram on its way to the machine.
type inbound struct {
	p   *wire.Packet
	src netip.Addr
	at  time.Time
}

// driver is the Service's running protocol: a Machine and its I/O.
type driver struct {
	storeEffects
	s      *Service
	cfg    *Config
	m      *Machine
	conns  map[int]mconn // by family: 4, 6
	joined map[int]map[int]ifaceInfo
	nl     *os.File
	linksC chan struct{}
	wg     sync.WaitGroup

	ctx        context.Context // of run: requests acted on end with it
	waiting    map[[wire.RequestIDSize]byte]chan wire.Reply
	nextRescan time.Time
}

// storeEffects applies a Machine's store updates to a store.
type storeEffects struct{ st *store.Store }

func (e storeEffects) PeerSeen(n disk.Node) { e.st.TouchPeer(n) }
func (e storeEffects) PeerInventory(n disk.Node, _, _ uint64, disks []disk.Disk) {
	e.st.ApplyPeer(n, disks)
}
func (e storeEffects) PeerOffline(id disk.NodeID)                 { e.st.SetPeerOffline(id) }
func (e storeEffects) PeerReach(id disk.NodeID, reach disk.Reach) { e.st.SetPeerReach(id, reach) }

// machineConfig is the Machine's part of s's configuration.
func (s *Service) machineConfig(instance uint64) MachineConfig {
	var seed [16]byte
	_, _ = rand.Read(seed[:])
	return MachineConfig{
		Self: s.self, Name: s.st.LocalNode().Name, Instance: instance, Keys: s.keys,
		HeartbeatInterval: s.cfg.HeartbeatInterval, AnnouncesPerMinute: s.cfg.AnnouncesPerMinute, MaxPeers: s.cfg.MaxPeers,
		Rand: mrand.New(mrand.NewPCG(binary.LittleEndian.Uint64(seed[:8]), binary.LittleEndian.Uint64(seed[8:]))),
		Log:  s.log,
	}
}

func newDriver(s *Service) (*driver, error) {
	instance := s.cfg.Instance
	if instance == 0 {
		instance = wire.NewInstance(time.Now())
	}
	d := &driver{
		storeEffects: storeEffects{s.st},
		s:            s, cfg: &s.cfg,
		conns:   make(map[int]mconn),
		joined:  map[int]map[int]ifaceInfo{4: {}, 6: {}},
		linksC:  make(chan struct{}, 1),
		ctx:     context.Background(),
		waiting: make(map[[wire.RequestIDSize]byte]chan wire.Reply),
	}
	d.m = newMachine(s.machineConfig(instance), d, &s.ctr, &s.logLimit)
	var errs []error
	err := s.cfg.Enter(func() error {
		if s.cfg.IPv4 {
			c, warn, err := open4(s.cfg.Port, s.cfg.TTL)
			if err != nil {
				errs = append(errs, fmt.Errorf("IPv4: %w", err))
			} else {
				d.conns[4] = c
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
				d.conns[6] = c
			}
			if warn != nil {
				s.log.Warn("IPv6 socket", "err", warn)
			}
		}
		nl, err := openLinkWatch()
		if err != nil {
			s.log.Warn("no interface change events; rescanning periodically only", "err", err, "every", rescanEvery)
		}
		d.nl = nl
		return nil
	})
	if err == nil && len(d.conns) == 0 {
		err = errors.Join(errs...)
	}
	if err != nil {
		d.close()
		return nil, fmt.Errorf("peer: open sockets: %w", err)
	}
	for _, e := range errs {
		s.log.Warn("address family unavailable; continuing without it", "err", e)
	}
	return d, nil
}

func (d *driver) close() {
	for _, c := range d.conns {
		c.close()
	}
	if d.nl != nil {
		d.nl.Close()
	}
	d.wg.Wait()
}

// setLocal gives the machine the store's local inventory.
func (d *driver) setLocal(now time.Time) {
	gen, disks := d.s.st.LocalDisks()
	d.m.SetLocal(now, gen, disks)
}

func (d *driver) run(ctx context.Context) error {
	defer d.close()
	s, m := d.s, d.m
	d.ctx = ctx
	now := time.Now()
	d.setLocal(now)
	d.rescan(now)
	localID := s.st.LocalNode().ID
	sub := s.st.Subscribe(1024)
	defer func() { sub.Close() }()
	for fam, c := range d.conns {
		d.wg.Add(1)
		go d.reader(fam, c)
	}
	if d.nl != nil {
		d.wg.Add(1)
		go func() { defer d.wg.Done(); watchLinks(d.nl, d.linksC) }()
	}
	s.running.Store(true)
	defer s.running.Store(false)

	s.log.Info("peer network up", "node_id", s.self, "instance", fmt.Sprintf("%x", m.Instance()),
		"groups", s.Status().Groups, "interfaces", s.Status().Interfaces, "authenticated", s.keys != nil)
	m.Start(now)
	d.nextRescan = now.Add(rescanEvery)

	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		now = time.Now()
		m.Tick(now)
		if !now.Before(d.nextRescan) {
			d.rescan(now)
			d.nextRescan = now.Add(rescanEvery)
		}
		wake := m.NextWake()
		if d.nextRescan.Before(wake) {
			wake = d.nextRescan
		}
		timer.Reset(max(time.Until(wake), 0))
		select {
		case <-ctx.Done():
			b := m.Goodbye()
			for i := range goodbyeCopies {
				if i > 0 {
					time.Sleep(goodbyeGap)
				}
				d.Send([][]byte{b})
			}
			s.log.Info("peer network down")
			return nil
		case in := <-s.in:
			m.Receive(in.at, in.p, in.src)
			for range drainBatch {
				select {
				case in = <-s.in:
					m.Receive(in.at, in.p, in.src)
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
				d.setLocal(time.Now())
				m.LocalChanged(time.Now())
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
				now := time.Now()
				d.setLocal(now)
				m.LocalChanged(now)
			}
		case req := <-s.reqs:
			req(d)
		case <-d.linksC:
			if at := time.Now().Add(rescanSettle); at.Before(d.nextRescan) {
				d.nextRescan = at
			}
		case <-timer.C:
		}
	}
}

// Act runs the request handler on a goroutine of its own; its reply goes
// back to the machine through the request queue.
func (d *driver) Act(a *Action) bool {
	h := d.s.handler.Load()
	if h == nil {
		return false
	}
	handle, s, ctx := *h, d.s, d.ctx
	go func() {
		ctx, cancel := context.WithTimeout(ctx, requestRunFor)
		rep := handle(ctx, a.From, a.Request)
		cancel()
		select {
		case s.reqs <- func(d *driver) { d.m.FinishRequest(time.Now(), a, rep) }:
		case <-s.stopped:
		}
	}()
	return true
}

// Replied hands a reply to the Request waiting for it.
func (d *driver) Replied(r wire.Reply) {
	select {
	case d.waiting[r.ID] <- r:
	default:
	}
}
