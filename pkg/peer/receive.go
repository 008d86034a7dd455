package peer

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"github.com/diskd/diskd/pkg/wire"
)

// reader moves one socket's datagrams to the loop, checking on the way
// everything that needs no protocol state: destination, per-source rate,
// size, magic, version, tag, our own datagrams, the body.
func (d *driver) reader(fam int, c mconn) {
	defer d.wg.Done()
	s := d.s
	groups, recvD, recvB := s.g4, recvDatagrams4, recvBytes4
	if fam == 6 {
		groups, recvD, recvB = s.g6, recvDatagrams6, recvBytes6
	}
	buf := make([]byte, 2048) // longer than MaxDatagram: an oversized one is seen, not cut
	lim := newSourceLimiter(s.cfg.SourceRate, s.cfg.SourceBurst, maxSources)
	self, inst := s.self, d.m.Instance()
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
		p, ok := s.open(buf[:n], src, self, inst)
		if !ok {
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

// open checks and decodes one datagram from src: its tag, that it is not
// our own (instance inst of node self), its body. Drops are counted.
func (s *Service) open(b []byte, src netip.Addr, self wire.NodeID, inst uint64) (*wire.Packet, bool) {
	h, body, err := s.dec.Open(b)
	if err != nil {
		s.dropped(err, src)
		return nil, false
	}
	if h.Node == self {
		if h.Instance == inst {
			s.ctr.dropDatagramAs(dropOwn)
		} else {
			s.ctr.dropDatagramAs(dropNodeConflict)
			s.logLimited(logNodeConflict, slog.LevelWarn, "another daemon uses this node ID (a copied state directory?)", "src", src,
				"their_instance", fmt.Sprintf("%x", h.Instance))
		}
		return nil, false
	}
	p, err := wire.DecodeBody(h, body)
	if err == nil && h.Type == wire.TypeDelta && s.cfg.IgnoreDeltas {
		err = &wire.DropError{Reason: wire.ReasonUnknownType} // as a daemon from before deltas
	}
	if err != nil {
		s.dropped(err, src)
		return nil, false
	}
	return p, true
}

func (s *Service) dropped(err error, src netip.Addr) {
	r := wire.ReasonOf(err)
	s.ctr.dropDatagram(r)
	switch r {
	case wire.ReasonUntagged, wire.ReasonUnexpectedTag, wire.ReasonUnknownKey, wire.ReasonBadTag:
		s.logLimited(logUnauthenticated, slog.LevelWarn, "dropping unauthenticated datagrams", "src", src, "err", err)
	default:
		s.logLimited(logBadDatagram, slog.LevelInfo, "dropping bad datagrams", "src", src, "err", err)
	}
}
