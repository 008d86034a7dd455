package main

import (
	"context"
	"time"

	"github.com/diskd/diskd/pkg/api"
	"github.com/diskd/diskd/pkg/control"
	"github.com/diskd/diskd/pkg/dbusapi"
	"github.com/diskd/diskd/pkg/gossip"
	"github.com/diskd/diskd/pkg/legacy"
	"github.com/diskd/diskd/pkg/mounter"
	"github.com/diskd/diskd/pkg/peer"
	"github.com/diskd/diskd/pkg/scanner"
	"github.com/diskd/diskd/pkg/store"
)

// backend answers the commands that act or report across components; the
// socket and D-Bus layers share it.
type backend struct {
	cfg      Config
	started  time.Time
	store    *store.Store
	scanner  *scanner.Scanner
	socket   string
	problems []string
	mounter  *mounter.Mounter
	net      *peer.Service    // nil when the peer network is off
	gossip   *gossip.Service  // nil unless --join
	bus      *dbusapi.Service // nil when D-Bus is off
	legacy   *legacy.Service  // nil unless --legacy
}

func (b *backend) Status() api.Status {
	local := b.store.LocalNode()
	c := b.store.Counts()
	s := api.Status{
		Version:   version,
		NodeID:    local.ID,
		NodeName:  local.Name,
		StartTime: b.started,
		UptimeSec: time.Since(b.started).Seconds(),
		StateDir:  b.cfg.StateDir,
		Socket:    b.socket,
		Scan:      scanStatus(b.scanner.Status()),
		Counts: api.Counts{Nodes: c.Nodes, NodesOnline: c.NodesOnline, Disks: c.Disks,
			DisksPresent: c.DisksPresent, LocalPresent: c.LocalPresent},
		StoreCounters: b.store.Stats().Map(),
		DBus:          "off",
		Problems:      append([]string(nil), b.problems...),
	}
	if b.bus != nil {
		s.DBus = b.bus.State()
	}
	if b.net != nil {
		ns := api.NetStatus(b.net.Status())
		s.Network = &ns
	}
	if b.legacy != nil {
		ls := api.LegacyStatus(b.legacy.Status())
		s.Legacy = &ls
	}
	if b.gossip != nil {
		gs := api.GossipStatus(b.gossip.Status())
		s.Gossip = &gs
		if !gs.Keyed {
			s.Problems = append(s.Problems, "gossip: UNAUTHENTICATED (--gossip-insecure): anyone who reaches the gossip port can join and announce")
		}
		if gs.UDPBlocked {
			s.Problems = append(s.Problems, "gossip: UDP probes fail while TCP works: UDP to the gossip port is blocked somewhere (a firewall, NAT without UDP forwarding)")
		}
		if gs.Members <= 1 {
			s.Problems = append(s.Problems, "gossip: alone; no member named by --join answers yet (retrying)")
		}
	}
	if s.Scan.LastError != "" {
		s.Problems = append(s.Problems, "blkid: "+s.Scan.LastError+" (serving the last good inventory)")
	}
	if b.cfg.Uevents && !s.Scan.UeventsActive {
		s.Problems = append(s.Problems, "kernel uevents unavailable: changes are seen only at periodic scans")
	}
	return s
}

func (b *backend) Refresh(ctx context.Context) error { return b.scanner.Refresh(ctx) }

func (b *backend) Ping(ctx context.Context) (int, error) {
	if b.net == nil {
		return 0, control.ErrNoNetwork
	}
	return b.net.Ping(ctx)
}

func (b *backend) Announce() error {
	if b.legacy != nil {
		b.legacy.Announce()
	}
	if b.net == nil {
		if b.legacy != nil {
			return nil
		}
		return control.ErrNoNetwork
	}
	b.net.Announce()
	return nil
}

// scanStatus translates the scanner's status to the client API's.
func scanStatus(s scanner.Status) api.ScanStatus {
	return api.ScanStatus{
		LastScan:      s.LastScan,
		LastDuration:  s.LastDuration.Seconds(),
		LastError:     s.LastError,
		LastErrorTime: s.LastErrorTime,
		FullScans:     s.FullScans,
		DeviceProbes:  s.DeviceProbes,
		Uevents:       s.Uevents,
		MountUpdates:  s.MountUpdates,
		Blkid:         s.Blkid,
		BlkidTimeout:  s.BlkidTimeout.Seconds(),
		UeventsActive: s.UeventsActive,
	}
}
