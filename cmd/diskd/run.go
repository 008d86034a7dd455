package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/util"
	"golang.org/x/sync/errgroup"

	"github.com/diskd/diskd/pkg/authz"
	"github.com/diskd/diskd/pkg/blkid"
	"github.com/diskd/diskd/pkg/control"
	"github.com/diskd/diskd/pkg/dbusapi"
	"github.com/diskd/diskd/pkg/disk"
	"github.com/diskd/diskd/pkg/gossip"
	"github.com/diskd/diskd/pkg/legacy"
	"github.com/diskd/diskd/pkg/localsock"
	"github.com/diskd/diskd/pkg/logging"
	"github.com/diskd/diskd/pkg/memtrim"
	"github.com/diskd/diskd/pkg/mounter"
	"github.com/diskd/diskd/pkg/mountinfo"
	"github.com/diskd/diskd/pkg/peer"
	"github.com/diskd/diskd/pkg/scanner"
	"github.com/diskd/diskd/pkg/store"
	"github.com/diskd/diskd/pkg/uevent"
	"github.com/diskd/diskd/pkg/wire"
)

// socketName is the FileDescriptorName= of diskd.socket.
const socketName = "diskd"

// run builds every component, runs them under one errgroup, and stops them
// in order when ctx ends: the API and network first, then the scanner, and
// the state file last so it holds everything they did.
func run(ctx context.Context, cfg Config) error {
	level, err := parseLevel(cfg.LogLevel)
	if err != nil {
		return err
	}
	log := logging.New(os.Stderr, level)
	started := time.Now()

	if err := os.MkdirAll(cfg.StateDir, 0o755); err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	id, err := store.LoadOrCreateNodeID(cfg.StateDir)
	if err != nil {
		return err
	}
	// Every record names the node. The wiring names each component
	// ("component") where it builds it; packages never set it themselves.
	log = log.With("node", cfg.NodeName)
	var problems []string
	st, db, aside, err := store.OpenStore(filepath.Join(cfg.StateDir, "state.db"), store.Options{
		Local:          disk.Node{ID: id, Name: cfg.NodeName},
		MaxPeers:       cfg.Network.MaxPeers,
		MaxDisks:       cfg.MaxDisks,
		HistoryPerDisk: cfg.HistoryPerDisk,
		Logger:         log.With("component", "store"),
	})
	if err != nil {
		return err
	}
	defer db.Close()
	if aside != "" {
		msg := fmt.Sprintf("state file was corrupt; moved aside to %s and started empty", aside)
		log.Error(msg)
		problems = append(problems, msg)
	}

	ln, socketDesc, err := listener(cfg.Socket)
	if err != nil {
		return err
	}
	defer ln.Close()

	runner := &blkid.Runner{Path: cfg.Blkid, Timeout: cfg.BlkidTimeout.Duration, Logger: log.With("component", "blkid")}
	sc := scanner.New(scanner.Config{
		Prober:       runner,
		Sink:         st,
		Filter:       disk.Filter{Include: cfg.Devices, Exclude: cfg.Exclude},
		Every:        cfg.ScanInterval.Duration,
		BlkidPath:    cfg.Blkid,
		BlkidTimeout: cfg.BlkidTimeout.Duration,
		Logger:       log.With("component", "scanner"),
	})

	mnt, err := mounter.New(mounter.Config{
		Dir:        cfg.MountDir,
		Rules:      mounter.Rules{Allow: cfg.MountAllow, AllowRW: cfg.MountAllowRW},
		Remembered: filepath.Join(cfg.StateDir, "mounts.json"),
		Systemd:    util.IsRunningSystemd(),
		Logger:     log.With("component", "mounter"),
	})
	if err != nil {
		return err
	}
	be := &backend{
		cfg: cfg, started: started, store: st, scanner: sc, mounter: mnt,
		socket: socketDesc, problems: problems,
	}
	// One instance ID for both paths, so a node heard both ways is one
	// instance of one node.
	cfg.Network.Instance = wire.NewInstance(time.Now())
	if cfg.Network.IPv4 || cfg.Network.IPv6 {
		if be.net, err = peer.New(peer.Config(cfg.Network), st, log.With("component", "peer")); err != nil {
			return err
		}
		be.net.SetRequestHandler(be.serveRequest)
	} else {
		log.Info("peer network off (--ipv4=false --ipv6=false): this node neither announces nor listens")
	}
	// One policy for the socket and the bus.
	policy := authz.New(authz.Config{AdminGroup: cfg.AdminGroup, Logger: log.With("component", "authz")})
	if cfg.Legacy {
		be.legacy, err = legacy.New(legacy.Config{
			Group: cfg.LegacyGroup, Port: cfg.LegacyPort, Interfaces: cfg.Network.Interfaces,
			PeerInterval: cfg.LegacyInterval.Duration,
		}, st, log.With("component", "legacy"))
		if err != nil {
			return err
		}
	}
	if gc := gossip.Config(cfg.GossipConfig); gc.Enabled() {
		if be.gossip, err = newGossip(cfg, st, be.net, log); err != nil {
			return err
		}
	}
	if cfg.DBus != "off" {
		be.bus = dbusapi.New(dbusapi.Config{Bus: cfg.DBus, Version: version, Policy: policy}, st, be, log.With("component", "dbus"))
	} else if os.Geteuid() != 0 {
		log.Info("D-Bus API off (default when not root; --dbus=session to use the session bus)")
	}
	srv := control.New(control.Config{
		Listener: ln, Store: st, Backend: be, Version: version,
		IdleTimeout: cfg.IdleTimeout.Duration, WriteTimeout: cfg.WriteTimeout.Duration,
		MaxSessionsPerUser: cfg.MaxSessionsPerUser, Policy: policy,
		Ready:  sc.FirstScanDone(),
		Logger: log.With("component", "control"),
	})

	// Components stop when ctx ends; the state file is written after they
	// have all returned.
	persistCtx, stopPersist := context.WithCancel(context.Background())
	persistDone := make(chan error, 1)
	go func() { persistDone <- st.RunPersist(persistCtx, db, time.Second) }()

	g, gctx := errgroup.WithContext(ctx)
	uevents := make(chan uevent.Event, 4096)
	mounts := make(chan []mountinfo.Mount, 1)
	if cfg.Uevents {
		ul := &uevent.Listener{Logger: log.With("component", "uevent")}
		sc.SetUeventsActive(true)
		g.Go(func() error {
			if err := ul.Run(gctx, uevents); err != nil && gctx.Err() == nil {
				// One clear line; the periodic scan keeps the inventory true.
				log.Error("kernel uevents unavailable; relying on periodic scans", "err", err)
				sc.SetUeventsActive(false)
			}
			return nil
		})
	}
	mw := &mountinfo.Watcher{Logger: log.With("component", "mountinfo")}
	g.Go(func() error {
		err := mw.Run(gctx, func(ms []mountinfo.Mount) {
			// Latest table wins: replace a pending one rather than block.
			select {
			case <-mounts:
			default:
			}
			mounts <- ms
		})
		if err != nil && gctx.Err() == nil {
			log.Error("mount table watch failed; mount points will be stale", "err", err)
		}
		return nil
	})
	g.Go(func() error { return sc.Run(gctx, uevents, mounts) })
	g.Go(func() error { return srv.Serve(gctx) })
	if be.net != nil {
		// Starts after the first scan, so our first announce is complete.
		g.Go(func() error {
			select {
			case <-sc.FirstScanDone():
			case <-gctx.Done():
				return nil
			}
			return be.net.Run(gctx)
		})
	}
	if be.legacy != nil {
		// Like the peer network: our first legacy announce is complete.
		g.Go(func() error {
			select {
			case <-sc.FirstScanDone():
			case <-gctx.Done():
				return nil
			}
			return be.legacy.Run(gctx)
		})
	}
	if be.gossip != nil {
		g.Go(func() error {
			select {
			case <-sc.FirstScanDone():
			case <-gctx.Done():
				return nil
			}
			return be.gossip.Run(gctx)
		})
	}
	if be.bus != nil {
		g.Go(func() error { return be.bus.Run(gctx) })
	}
	// The heap a burst grew (the load, lists filtered by label over
	// 100,000 disks) goes back to the system once the daemon is quiet.
	trim := memtrim.Defaults()
	trim.Logger = log.With("component", "memtrim")
	g.Go(func() error { return memtrim.New(trim).Run(gctx) })
	live := probes(st, sc, be.net)
	g.Go(func() error { return notifySystemd(gctx, log, sc, st, be, live) })
	startDebugHooks(gctx, log, sc, be.net)

	err = g.Wait()
	stopPersist()
	if perr := <-persistDone; perr != nil {
		log.Error("saving state at stop", "err", perr)
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	log.Info("stopped")
	return nil
}

// listener returns the socket systemd passed (LISTEN_FDS), or binds path.
func listener(path string) (net.Listener, string, error) {
	named, err := activation.ListenersWithNames()
	if err != nil {
		return nil, "", fmt.Errorf("socket activation: %w", err)
	}
	var all []net.Listener
	for name, ls := range named {
		for _, l := range ls {
			if name == socketName || len(named) == 1 {
				if len(all) == 0 {
					all = append(all, l)
					continue
				}
			}
			l.Close() // not ours; do not keep it open
		}
	}
	if len(all) > 0 {
		return all[0], all[0].Addr().String() + " (from systemd)", nil
	}
	l, err := localsock.Listen(path)
	return l, path, err
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(s))); err != nil {
		return l, fmt.Errorf("log level %q: want debug, info, warn or error", s)
	}
	return l, nil
}

// newGossip builds the gossip path, keyed with the peer network's key file.
func newGossip(cfg Config, st *store.Store, mc *peer.Service, log *slog.Logger) (*gossip.Service, error) {
	var keys *wire.Keyring
	if cfg.Network.KeyFile != "" {
		k, err := wire.LoadKeyFile(cfg.Network.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("gossip: %w", err)
		}
		keys = k
	}
	d := gossip.Deps{Store: st, Keys: keys, Instance: cfg.Network.Instance,
		Interval: cfg.Network.HeartbeatInterval, Logger: log.With("component", "gossip")}
	if mc != nil {
		d.Multicast = mc
	}
	return gossip.New(gossip.Config(cfg.GossipConfig), d)
}
