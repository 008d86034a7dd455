package peer

import (
	"log/slog"
	"time"
)

// checkOffline takes offline the peers silent for offlineAfter of their
// intervals.
func (m *Machine) checkOffline(now time.Time) {
	m.relayExpire(now)
	for _, ps := range m.peers {
		if !ps.online {
			continue
		}
		iv := ps.interval // clamped when heard
		if iv == 0 {
			iv = m.cfg.HeartbeatInterval
		}
		if now.Sub(ps.lastHeard) > offlineAfter*iv {
			ps.online, ps.ended, ps.wantAt = false, true, time.Time{}
			m.asm.Forget(ps.id) // when it returns, its disks must be fetched again
			m.fx.PeerOffline(ps.did)
			m.lru.setOffline(ps)
			m.ctr.inc(peersWentOffline)
			m.logLimited(now, logPeerOffline, slog.LevelInfo, "peer went silent; offline", "peer", ps.did, "name", ps.name, "last_heard", ps.lastHeard)
		}
	}
}

// clampInterval returns the interval the offline timeout uses for a peer
// that advertises iv: our policy's range, whatever the peer claims, so a
// node advertising an hour still goes offline within 3 x MaxPeerInterval.
func (m *Machine) clampInterval(now time.Time, ps *peerState, iv time.Duration) time.Duration {
	c := min(max(iv, MinPeerInterval), MaxPeerInterval)
	if c != iv {
		m.ctr.inc(intervalsClamped)
		if iv != ps.interval && ps.interval != c {
			m.logLimited(now, logIntervalClamped, slog.LevelInfo, "peer advertises a heartbeat interval outside our range; using the nearest bound",
				"peer", ps.did, "advertised", iv, "used", c)
		}
	}
	return c
}
