// Package dbusapi puts diskd's network-wide disk table on D-Bus as
// org.diskd.Diskd1, in the style of org.freedesktop.UDisks2: an
// ObjectManager at /org/diskd/Diskd1, a Manager object with the queries and
// actions, one object per machine and per block device, and signals as
// they change. The contract (interfaces, paths, property encodings) is
// package github.com/diskd/diskd/dbus and its XML.
//
// The adapter is one more reader and subscriber of the store. What it
// remembers is what the bus was last told about each object: the next
// signals are computed from it, and GetManagedObjects, Get and GetAll
// answer from it (but for LastSeen, which changes without a signal and is
// read live), so a client never reads a state that no signal will carry
// forward. The Manager's queries and actions go to the store and to a
// Backend.
//
// What it sends in bulk it encodes itself (wire.go): each object's
// GetManagedObjects entry once per change, spliced into the reply, and a
// batch's signals in one write on the bus socket, which it dials itself
// for unix: addresses and shares with godbus (busconn.go); other
// addresses leave every message to godbus. It
// connects to the bus, reconnects with backoff when the bus goes away, and
// waits in the queue when another process owns the name; each of these
// conditions is logged once and reported by State, and the daemon's other
// services never wait for it.
package dbusapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/godbus/dbus/v5"

	contract "github.com/diskd/diskd/dbus"
	"github.com/diskd/diskd/pkg/api"
	"github.com/diskd/diskd/pkg/authz"
	"github.com/diskd/diskd/pkg/disk"
	"github.com/diskd/diskd/pkg/store"
)

// Backend performs the actions; the daemon implements it.
type Backend interface {
	Refresh(ctx context.Context) error
	Ping(ctx context.Context) (answered int, err error)
	Status() api.Status
	Mount(ctx context.Context, q string, rw bool, uid uint32) (api.MountResult, error)
	Unmount(ctx context.Context, q string, force bool, uid uint32) (api.MountResult, error)
}

// Config configures a Service.
type Config struct {
	// Bus is "system", "session", or a bus address (unix:path=...).
	Bus string
	// Version is the Manager's Version property.
	Version string
	// BatchDelay is how long store changes are gathered before they are
	// signalled, so that an object changed several times in a burst gets
	// one PropertiesChanged. 0 means 10 ms; negative means no waiting
	// (only changes already queued are batched).
	BatchDelay time.Duration
	// RetryMin and RetryMax bound the backoff between connection attempts.
	// 0 means 1 s and 30 s.
	RetryMin, RetryMax time.Duration
	// CallTimeout bounds Refresh and Ping. 0 means 60 s.
	CallTimeout time.Duration
	// Policy decides who may call Refresh and Ping (the socket's policy
	// too); nil means root and the daemon's own user only.
	Policy *authz.Policy
}

// Service is the D-Bus adapter. Run it once.
type Service struct {
	cfg      Config
	store    *store.Store
	be       Backend
	log      *slog.Logger
	ifaceXML map[string]string
	ifaces   map[string]contract.Interface

	mu    sync.Mutex
	state string
	class string // the kind of state, so each condition is logged once

	// For tests: the subscription's buffer, a hook run before each batch
	// is applied (to hold the adapter back and make it fall behind), more
	// options for the bus connection, a hook told of each connection's
	// socket (nil when godbus dialled), godbus writing every message
	// (as before the adapter encoded its own), to compare the two, and a
	// hook run before each attempt to connect (to count retries).
	subBuffer   int
	beforeApply func()
	connOptions []dbus.ConnOption
	onConnect   func(*busSocket)
	godbusOnly  bool
	beforeDial  func()
}

// New returns a Service. It panics if the embedded contract does not parse
// or does not match the implementation, which the package's tests rule out.
func New(cfg Config, st *store.Store, be Backend, logger *slog.Logger) *Service {
	if cfg.Bus == "" {
		cfg.Bus = "system"
	}
	if cfg.BatchDelay == 0 {
		cfg.BatchDelay = 10 * time.Millisecond
	}
	if cfg.RetryMin <= 0 {
		cfg.RetryMin = time.Second
	}
	if cfg.RetryMax < cfg.RetryMin {
		cfg.RetryMax = max(30*time.Second, cfg.RetryMin)
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = 60 * time.Second
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Policy == nil {
		cfg.Policy = authz.New(authz.Config{Logger: logger})
	}
	ifs, err := contract.Interfaces()
	if err != nil {
		panic(fmt.Sprintf("dbusapi: %v", err))
	}
	s := &Service{
		cfg:      cfg,
		store:    st,
		be:       be,
		log:      logger,
		ifaceXML: map[string]string{},
		ifaces:   map[string]contract.Interface{},
		state:    "not started",

		subBuffer: 8192,
	}
	for _, in := range ifs {
		s.ifaceXML[in.Name] = in.XML
		s.ifaces[in.Name] = in
	}
	if err := s.checkManagerMethods(); err != nil {
		panic(fmt.Sprintf("dbusapi: %v", err))
	}
	return s
}

// State says how the service stands, for status reports: "connected to
// system bus as org.diskd.Diskd1", or the problem.
func (s *Service) State() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state
}

// setState records the state and logs it when its kind changed, so a
// condition that persists (no bus, name taken) is said once.
func (s *Service) setState(class, state string, level slog.Level) {
	s.mu.Lock()
	changed := class != s.class
	s.class, s.state = class, state
	s.mu.Unlock()
	if changed {
		s.log.Log(context.Background(), level, state)
	}
}

// Run connects, exports the objects, asks for org.diskd.Diskd1 and mirrors
// the store until ctx ends; it reconnects with backoff whenever the bus
// connection is lost or cannot be made. It returns nil when ctx ends.
func (s *Service) Run(ctx context.Context) error {
	backoff := s.cfg.RetryMin
	for {
		start := time.Now()
		err := s.session(ctx)
		if ctx.Err() != nil {
			s.setState("stopped", "stopped", slog.LevelDebug)
			return nil
		}
		if time.Since(start) > s.cfg.RetryMax {
			backoff = s.cfg.RetryMin // it worked for a while: retry soon
		}
		var pe *problem
		if errors.As(err, &pe) {
			s.setState(pe.class, pe.msg, slog.LevelWarn)
		} else {
			s.setState("error", fmt.Sprintf("%s: %v; retrying", s.busLabel(), err), slog.LevelWarn)
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			s.setState("stopped", "stopped", slog.LevelDebug)
			return nil
		case <-t.C:
		}
		backoff = min(2*backoff, s.cfg.RetryMax)
	}
}

// problem is a session ending for a reason worth one log line.
type problem struct{ class, msg string }

func (p *problem) Error() string { return p.msg }

func (s *Service) busLabel() string { return contract.BusLabel(s.cfg.Bus) }

// session runs one connection from dial to loss (or ctx's end).
func (s *Service) session(parent context.Context) error {
	addr, err := contract.BusAddress(s.cfg.Bus)
	if err != nil {
		return &problem{"config", err.Error()}
	}
	lost := &problem{"lost", fmt.Sprintf("lost the connection to the %s; reconnecting", s.busLabel())}
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	srv := &server{svc: s}
	// A bus that accepts but never answers must not hang us: the
	// handshake gets 10 s, after which the connection is closed.
	hung := time.AfterFunc(10*time.Second, cancel)
	if s.beforeDial != nil {
		s.beforeDial()
	}
	conn, sock, err := connect(ctx, addr, s.godbusOnly, append([]dbus.ConnOption{dbus.WithHandler(srv), dbus.WithContext(ctx)}, s.connOptions...)...)
	hung.Stop()
	if err != nil {
		return &problem{"nobus", fmt.Sprintf("no %s (%v); retrying in the background", s.busLabel(), err)}
	}
	defer conn.Close()
	srv.conn, srv.sock = conn, sock
	srv.om = newObjectManager(contract.RootPath, conn.Emit)
	if sock != nil {
		q := &signalQueue{sock: sock}
		srv.om.emit, srv.om.flush = q.emit, q.flush
	}
	if s.onConnect != nil {
		s.onConnect(sock)
	}

	// Subscribe before reading, so nothing falls between the two.
	sub := s.store.Subscribe(s.subBuffer)
	defer func() { sub.Close() }()
	srv.om.load(s.snapshot())
	srv.ready.Store(true)

	signals := make(chan *dbus.Signal, 16)
	conn.Signal(signals)
	reply, err := conn.RequestName(contract.BusName, 0) // queue if taken
	if err != nil {
		return &problem{"denied", fmt.Sprintf("connected to %s but may not own %s (%v); is org.diskd.Diskd1.conf installed and diskd root? retrying", s.busLabel(), contract.BusName, err)}
	}
	switch reply {
	case dbus.RequestNameReplyPrimaryOwner, dbus.RequestNameReplyAlreadyOwner:
		s.connected()
	default:
		s.setState("queued", fmt.Sprintf("connected to %s, but %s is owned by another process%s; waiting for it",
			s.busLabel(), contract.BusName, s.owner(ctx, conn)), slog.LevelWarn)
	}

	for {
		select {
		case <-conn.Context().Done(): // also when ctx ends
			return lost
		case sig, ok := <-signals:
			if !ok {
				return lost
			}
			s.nameSignal(ctx, conn, sig)
		case ev, ok := <-sub.C:
			if !ok {
				if sub.Err() == nil {
					return lost // closed by the store itself: treat as a restart
				}
				// Fell behind the store: resubscribe and publish the
				// difference, which the object manager computes.
				s.log.Info("fell behind the store's changes; resynchronising the bus objects")
				sub = s.store.Subscribe(s.subBuffer)
				srv.om.sync(s.snapshot())
				continue
			}
			batch := s.gather(ctx, ev, sub.C)
			if s.beforeApply != nil {
				s.beforeApply()
			}
			srv.apply(batch)
		}
	}
}

func (s *Service) connected() {
	s.setState("connected", fmt.Sprintf("connected to %s as %s", s.busLabel(), contract.BusName), slog.LevelInfo)
}

// nameSignal follows our ownership of the bus name.
func (s *Service) nameSignal(ctx context.Context, conn *dbus.Conn, sig *dbus.Signal) {
	if sig.Sender != "org.freedesktop.DBus" || len(sig.Body) == 0 {
		return
	}
	if name, _ := sig.Body[0].(string); name != contract.BusName {
		return
	}
	switch sig.Name {
	case "org.freedesktop.DBus.NameAcquired":
		s.connected()
	case "org.freedesktop.DBus.NameLost":
		s.setState("queued", fmt.Sprintf("connected to %s, but lost %s to another process%s; waiting for it",
			s.busLabel(), contract.BusName, s.owner(ctx, conn)), slog.LevelWarn)
	}
}

// owner describes the name's current owner for a log line.
func (s *Service) owner(ctx context.Context, conn *dbus.Conn) string {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var pid uint32
	if err := conn.BusObject().CallWithContext(ctx, "org.freedesktop.DBus.GetConnectionUnixProcessID", 0, contract.BusName).Store(&pid); err != nil {
		return ""
	}
	return fmt.Sprintf(" (pid %d)", pid)
}

// gather collects the events that arrive within BatchDelay of the first.
func (s *Service) gather(ctx context.Context, first disk.Event, c <-chan disk.Event) []disk.Event {
	batch := []disk.Event{first}
	drain := func() bool {
		for {
			select {
			case ev, ok := <-c:
				if !ok {
					return false
				}
				batch = append(batch, ev)
			default:
				return true
			}
		}
	}
	if !drain() || s.cfg.BatchDelay < 0 {
		return batch
	}
	t := time.NewTimer(s.cfg.BatchDelay)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return batch
		case <-t.C:
			drain()
			return batch
		case ev, ok := <-c:
			if !ok {
				return batch
			}
			batch = append(batch, ev)
		}
	}
}

// apply publishes a batch of store events: the latest state of each
// object, in the order the store first reported each (so a new peer's
// machine comes before its disks, and its disks are forgotten before it),
// then the disk count of each machine whose disks changed, fresh from the
// store.
func (srv *server) apply(evs []disk.Event) {
	type item struct {
		obj    object
		remove bool
	}
	items := map[dbus.ObjectPath]item{}
	var order []dbus.ObjectPath
	put := func(p dbus.ObjectPath, it item) {
		if _, ok := items[p]; !ok {
			order = append(order, p)
		}
		items[p] = it
	}
	touched := map[disk.NodeID]bool{}
	manager := false
	for _, ev := range evs {
		switch {
		case ev.Disk != nil:
			p := contract.BlockPath(ev.Disk.Key())
			if ev.Kind == disk.DiskForgotten {
				put(p, item{remove: true})
			} else {
				put(p, item{obj: blockObj{*ev.Disk}})
			}
			touched[ev.Disk.Node] = true
		case ev.Node != nil:
			p := contract.MachinePath(ev.Node.ID)
			if ev.Kind == disk.NodeForgotten {
				put(p, item{remove: true})
				delete(touched, ev.Node.ID)
			} else {
				put(p, item{obj: machineObj{*ev.Node}})
			}
			manager = manager || ev.Node.Local
		}
	}
	for _, id := range slices.Sorted(maps.Keys(touched)) {
		if n, ok := srv.svc.store.Node(id); ok {
			put(contract.MachinePath(id), item{obj: machineObj{n}})
		}
	}
	// One publication: the signals leave together, and no reply is written
	// between them.
	first := srv.om.batch(func(note func(error)) {
		if manager {
			note(srv.om.setLocked(contract.ManagerPath, srv.svc.managerObject()))
		}
		for _, p := range order {
			if it := items[p]; it.remove {
				note(srv.om.removeLocked(p))
			} else {
				note(srv.om.setLocked(p, it.obj))
			}
		}
	})
	if first != nil && srv.conn != nil && srv.conn.Connected() {
		srv.svc.log.Warn("could not emit a signal", "err", first)
	}
}

func (s *Service) managerObject() managerObj {
	return managerObj{version: s.cfg.Version, local: s.store.LocalNode()}
}

// snapshot is every object as the store has it now.
func (s *Service) snapshot() map[dbus.ObjectPath]object {
	nodes := s.store.Nodes()
	disks := s.store.Disks(nil)
	out := make(map[dbus.ObjectPath]object, len(nodes)+len(disks)+1)
	out[contract.ManagerPath] = s.managerObject()
	for _, n := range nodes {
		out[contract.MachinePath(n.ID)] = machineObj{n}
	}
	for _, d := range disks {
		out[contract.BlockPath(d.Key())] = blockObj{d}
	}
	return out
}

// statusJSON is GetStatus's answer.
func (s *Service) statusJSON() (string, error) {
	b, err := json.Marshal(s.be.Status())
	return string(b), err
}
