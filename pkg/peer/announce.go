package peer

import (
	"log/slog"
	"time"

	"github.com/diskd/diskd/pkg/disk"
	"github.com/diskd/diskd/pkg/wire"
)

// What a node says of itself: announces of its inventory (paced), the
// heartbeat, queries, the goodbye.

// SetLocal gives the machine the local inventory at generation gen; it is
// encoded again only when gen moved. It announces nothing by itself (see
// LocalChanged).
func (m *Machine) SetLocal(now time.Time, gen uint64, disks []disk.Disk) {
	if gen == m.invGen && m.invSet {
		return
	}
	m.inv, m.invGen, m.invSet = wire.NewInventory(disks), gen, true
	m.ctr.set(localSkipped, uint64(m.inv.Skipped))
	m.ctr.set(localTrimmed, uint64(m.inv.Trimmed))
	if m.inv.Skipped > 0 {
		m.logLimited(now, logLocalSkipped, slog.LevelWarn, "some local disks exceed the protocol's limits and are not announced", "count", m.inv.Skipped)
	}
}

// RequestAnnounce schedules an announce of the current inventory (the
// control socket's `announce`), paced as a change.
func (m *Machine) RequestAnnounce(now time.Time) {
	m.requested = true
	m.pace.changed(now)
}

// pacer times announces of local changes: the first of a burst at once,
// the rest of the burst coalesced into one at the end of a minimum gap,
// and at most perMinute in any minute (later ones wait, coalesced).
type pacer struct {
	perMinute int
	last      time.Time   // last announce
	times     []time.Time // announces within the last minute
	at        time.Time   // next announce due (zero: none)
}

func (p *pacer) changed(now time.Time) {
	if !p.at.IsZero() {
		return // already scheduled: it will carry this change too
	}
	gap := min(time.Second, time.Minute/time.Duration(p.perMinute))
	at := now
	if !p.last.IsZero() && at.Before(p.last.Add(gap)) {
		at = p.last.Add(gap)
	}
	i := 0
	for i < len(p.times) && at.Sub(p.times[i]) >= time.Minute {
		i++
	}
	p.times = p.times[i:]
	if len(p.times) >= p.perMinute {
		if free := p.times[len(p.times)-p.perMinute].Add(time.Minute); free.After(at) {
			at = free
		}
	}
	p.at = at
}

// due reports whether an announce is due at now, and takes it.
func (p *pacer) due(now time.Time) bool {
	if p.at.IsZero() || now.Before(p.at) {
		return false
	}
	p.at = time.Time{}
	p.last = now
	p.times = append(p.times, now)
	return true
}

func (m *Machine) announce(now time.Time, why string) {
	dgs := m.enc.Announce(m.invGen, m.cfg.Name, m.inv)
	m.fx.Send(dgs)
	m.lastAnnounce = now
	m.announcedGen = m.invGen
	m.delta.sent(m.invGen, m.inv)
	m.requested = false
	m.ctr.inc(announcesSent)
	m.log.Debug("announced", "why", why, "generation", m.invGen, "disks", m.inv.Len(), "datagrams", len(dgs))
}

// heartbeat says we are alive. Our routable addresses ride along on the
// first heartbeat after they changed (a hello counts: a new peer learns
// them at once) and then on every advertiseEvery-th one, so a steady
// network pays for them about once a minute, not every 10 s.
func (m *Machine) heartbeat(now time.Time) {
	hb := wire.Heartbeat{Name: m.cfg.Name, Digest: m.inv.Digest(), Interval: m.cfg.HeartbeatInterval}
	if m.advertiseDue || m.heartbeats%advertiseEvery == 0 {
		hb.Addrs = m.routable
		m.advertiseDue = false
	}
	m.heartbeats++
	m.fx.Send([][]byte{m.enc.Heartbeat(m.invGen, hb)})
	m.ctr.inc(heartbeatsSent)
	m.relayRefresh()
}

func (m *Machine) query(targets []wire.NodeID) {
	m.fx.Send([][]byte{m.enc.Query(m.invGen, targets)})
	m.ctr.inc(queriesSent)
}

// Ping queries every node, at most once every pingEvery: it returns when
// the query went out (a ping within pingEvery of the last shares it).
func (m *Machine) Ping(now time.Time) time.Time {
	if !m.lastPing.IsZero() && now.Sub(m.lastPing) < pingEvery {
		return m.lastPing
	}
	m.lastPing = now
	m.query(nil)
	return now
}

// HeardSince counts the peers heard at or after t (goodbyes excepted).
func (m *Machine) HeardSince(t time.Time) int {
	n := 0
	for _, ps := range m.peers {
		if !ps.goodbye && !ps.lastHeard.Before(t) {
			n++
		}
	}
	return n
}

// Goodbye returns the datagram that says this instance leaves; the driver
// sends it goodbyeCopies times, goodbyeGap apart (a lone datagram may be
// lost, and a goodbye is worth three intervals of waiting).
func (m *Machine) Goodbye() []byte {
	m.ctr.inc(goodbyesSent)
	return m.enc.Goodbye(m.invGen)
}
