package peer

import (
	"log/slog"
	"slices"
	"time"

	"github.com/diskd/diskd/pkg/wire"
)

// Queries and answers: asking for the inventories we lack, answering
// others' queries (spread, suppressed by a recent announce, limited), and
// taking the announces that come back.

type pendingAnswer struct {
	at    time.Time
	since time.Time // first query served by this answer
	full  bool      // announce (else a heartbeat will do)
}

// missing reports whether we lack the generation the peer advertised.
func (m *Machine) missing(ps *peerState) bool {
	inst, gen, dg, ok := m.asm.Applied(ps.id)
	if !ok || inst != ps.instance {
		return true
	}
	return gen < ps.advGen || gen == ps.advGen && ps.advDigest != nil && *ps.advDigest != dg
}

// checkWant schedules a query for the peer's inventory if we lack it,
// after a short random wait in which an announce already on its way (a
// starting daemon heartbeats, then announces) can arrive.
func (m *Machine) checkWant(now time.Time, ps *peerState) {
	if !m.missing(ps) {
		ps.wantAt, ps.wantTries = time.Time{}, 0
		return
	}
	if ps.wantAt.IsZero() {
		ps.wantAt = now.Add(wantDelayMin + randN(m.rand, wantDelayMax-wantDelayMin))
		if m.wantDue.IsZero() || ps.wantAt.Before(m.wantDue) {
			m.wantDue = ps.wantAt
		}
	}
}

// askMissing sends one query naming every peer whose inventory we still
// lack (a query for all when they are too many to name).
func (m *Machine) askMissing(now time.Time) {
	var targets []wire.NodeID
	var next time.Time
	later := func(ps *peerState, at time.Time) {
		ps.wantAt = at
		if next.IsZero() || at.Before(next) {
			next = at
		}
	}
	for _, ps := range m.peers {
		if ps.wantAt.IsZero() {
			continue
		}
		switch _, _, _, last, ok := m.asm.Pending(ps.id); {
		case ps.wantAt.After(now):
			later(ps, ps.wantAt)
		case !ps.online || !m.missing(ps):
			ps.wantAt, ps.wantTries = time.Time{}, 0
		case ok && now.Sub(last) < progressGrace:
			later(ps, last.Add(progressGrace))
		case now.Sub(ps.lastQuery) < queryEvery:
			later(ps, ps.lastQuery.Add(queryEvery))
		default:
			targets = append(targets, ps.id)
			ps.lastQuery = now
			ps.wantTries++
			if ps.wantTries < wantTries {
				later(ps, now.Add(queryEvery<<(ps.wantTries-1)))
			} else {
				ps.wantAt, ps.wantTries = time.Time{}, 0 // the next heartbeat asks again
			}
		}
	}
	m.wantDue = next
	switch {
	case len(targets) > wire.MaxQueryTargets:
		m.query(nil)
	case len(targets) > 0:
		m.query(targets)
	}
}

// offer takes one datagram of an announce; a completed inventory goes to
// the store.
func (m *Machine) offer(now time.Time, ps *peerState, p *wire.Packet) {
	c, err := m.asm.Add(now, p.Header, p.Announce)
	m.assemblerStats()
	if err != nil {
		m.ctr.drop(wire.ReasonOf(err))
		if r := wire.ReasonOf(err); r != wire.ReasonHaveGeneration {
			m.logLimited(now, logAnnounceDropped, slog.LevelInfo, "announce dropped", "peer", ps.did, "err", err)
		}
	}
	if c == nil {
		m.touch(now, ps, false)
		return
	}
	m.apply(now, ps, c)
}

// apply hands a complete generation of the peer to the store.
func (m *Machine) apply(now time.Time, ps *peerState, c *wire.Complete) {
	m.fx.PeerInventory(m.node(ps), c.Instance, c.Generation, c.Disks)
	ps.online, ps.addrsNew, ps.lastTouch = true, false, now
	m.ctr.inc(generationsApplied)
	m.checkWant(now, ps)
}

func (m *Machine) assemblerStats() {
	st := m.asm.Stats()
	m.ctr.set(dropPendingEvicted, st.Evicted)
	m.ctr.set(dropPendingExpired, st.Expired)
	m.ctr.set(dropInconsistent, st.Inconsistent)
}

func (m *Machine) onQuery(now time.Time, ps *peerState, q *wire.Query) {
	targeted := len(q.Targets) > 0
	if targeted && !slices.Contains(q.Targets, m.cfg.Self) {
		return
	}
	if !ps.answers.allow(now, askerRate, askerBurst) {
		m.ctr.inc(dropQueryLimited)
		return
	}
	// An announce sent after the querier was first heard reached it: a
	// query for everyone needs no second one so soon.
	full := targeted || !(now.Sub(m.lastAnnounce) < announcedLately && m.lastAnnounce.After(ps.firstHeard))
	if m.answer == nil {
		m.answer = &pendingAnswer{at: now.Add(m.answerDelay()), since: now}
	} else if m.lastAnnounce.After(m.answer.since) {
		m.answer.since = now
	}
	m.answer.full = m.answer.full || full
}

// answerDelay spreads the answers of a large network.
func (m *Machine) answerDelay() time.Duration {
	online := 0
	for _, ps := range m.peers {
		if ps.online {
			online++
		}
	}
	hi := min(answerMaxDelay+answerDelayPerPeer*time.Duration(max(0, online-answerSmallNet)), answerDelayCap)
	return answerMinDelay + randN(m.rand, hi-answerMinDelay)
}

func (m *Machine) fireAnswer(now time.Time) {
	a := m.answer
	m.answer = nil
	if a.full && m.lastAnnounce.After(a.since) {
		m.ctr.inc(answersSkipped)
		return
	}
	if !m.answersAll.allow(now, answerRate, answerBurst) {
		m.ctr.inc(dropQueryLimited)
		return
	}
	m.ctr.inc(answersSent)
	if a.full {
		m.announce(now, "answer")
	} else {
		m.ctr.inc(answersAsHeartbeat)
		m.heartbeat(now)
	}
}

// randN is rand.N for durations on the machine's own source.
func randN(r interface{ Int64N(int64) int64 }, d time.Duration) time.Duration {
	return time.Duration(r.Int64N(int64(d)))
}
