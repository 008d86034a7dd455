package peer

import (
	"log/slog"
	"time"

	"github.com/diskd/diskd/pkg/wire"
)

// Delta announces (wire.TypeDelta, docs/protocol.md "8 Delta announce"):
// a local change goes out as the change against the last inventory sent
// complete, in one datagram, paid for from a byte budget; a change that
// does not fit one goes as a full announce through the pacer, as before.

// The change byte budget (docs/protocol.md "Behaviour", docs/security.md):
// 100 one-disk changes at once fit the burst (a delta of one loop device
// is about 230 bytes), and a device that flaps for ever costs at most
// changeRate bytes a second after it.
const (
	changeBurst = 32 << 10 // bytes
	changeRate  = 512      // bytes a second
)

// byteBudget is a token bucket in bytes that may go into debt: a message
// goes when the bucket holds more than 0 bytes and takes its whole size,
// so one larger than what is left still goes, and the next waits until the
// debt is paid. The zero value starts full.
type byteBudget struct {
	burst, rate float64
	tokens      float64
	last        time.Time
}

func newByteBudget(burst, rate float64) byteBudget {
	return byteBudget{burst: burst, rate: rate, tokens: burst}
}

func (b *byteBudget) refill(now time.Time) {
	if !b.last.IsZero() && now.After(b.last) {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	}
	if b.last.IsZero() || now.After(b.last) {
		b.last = now
	}
}

// ready reports whether a message may go at now.
func (b *byteBudget) ready(now time.Time) bool {
	b.refill(now)
	return b.tokens > 0
}

// readyAt returns when the bucket next holds more than 0 bytes.
func (b *byteBudget) readyAt(now time.Time) time.Time {
	b.refill(now)
	if b.tokens > 0 {
		return now
	}
	// A millisecond past the exact time, so the check then sees > 0.
	return now.Add(time.Duration(-b.tokens/b.rate*float64(time.Second)) + time.Millisecond)
}

// spend takes n bytes.
func (b *byteBudget) spend(now time.Time, n int) {
	b.refill(now)
	b.tokens -= float64(n)
}

// deltaSender is the sending side: the base deltas are made against, the
// budget, and a delta waiting for the budget. The zero value is ready.
type deltaSender struct {
	base    *wire.Inventory // the last inventory sent complete (announce or delta); nil: none yet
	baseGen uint64
	budget  byteBudget
	at      time.Time // a change waits for the budget until then (zero: none)
}

// sent records that inv, generation gen, went out complete (an announce
// or a delta): it is the base of the next delta.
func (d *deltaSender) sent(gen uint64, inv *wire.Inventory) {
	d.base, d.baseGen = inv, gen
}

// change decides what a local change sends at now, the local inventory
// being inv at generation gen. A change that one datagram carries - a
// delta, or an announce when the inventory is that small (a delta would
// not be smaller) - goes at once while the budget allows: dgs to send,
// delta saying which, taken from the budget and made the base. A bigger
// one returns full: the caller announces through the pacer. Neither: there
// is nothing new, or the change waits for the budget until d.at (then call
// change again; changes meanwhile go together).
func (d *deltaSender) change(now time.Time, enc *wire.Encoder, name string, gen uint64, inv *wire.Inventory) (dgs [][]byte, delta, full bool) {
	if d.base != nil && gen == d.baseGen {
		d.at = time.Time{}
		return nil, false, false // sent already (an answer carried it)
	}
	if d.budget.rate == 0 {
		d.budget = newByteBudget(changeBurst, changeRate)
	}
	if !d.budget.ready(now) {
		d.at = d.budget.readyAt(now)
		return nil, false, false
	}
	d.at = time.Time{}
	if dg, ok := enc.Delta(gen, name, d.baseGen, d.base, inv); ok {
		dgs, delta = [][]byte{dg}, true
	} else if enc.AnnounceSize(name, inv) <= wire.MaxDatagram {
		dgs = enc.Announce(gen, name, inv)
	} else {
		return nil, false, true
	}
	for _, b := range dgs {
		d.budget.spend(now, len(b))
	}
	d.sent(gen, inv)
	return dgs, delta, false
}

// LocalChanged sends a local change (after SetLocal): as a delta or a
// small announce at once when the byte budget allows, later (coalesced)
// when it does not, or as an announce through the pacer when one datagram
// cannot carry it. While such an announce is due, changes wait for it: it
// carries them all.
func (m *Machine) LocalChanged(now time.Time) {
	if !m.pace.at.IsZero() {
		m.delta.at = time.Time{}
		return
	}
	waited, base := !m.delta.at.IsZero(), m.delta.baseGen
	dgs, delta, full := m.delta.change(now, m.enc, m.cfg.Name, m.invGen, m.inv)
	switch {
	case full:
		m.pace.changed(now)
	case dgs == nil:
		if !waited && !m.delta.at.IsZero() {
			m.ctr.inc(changesWaited)
		}
	case delta:
		m.fx.Send(dgs)
		m.announcedGen = m.invGen
		m.ctr.inc(deltasSent)
		m.log.Debug("sent a delta", "generation", m.invGen, "base", base, "bytes", len(dgs[0]))
	default:
		m.fx.Send(dgs)
		m.lastAnnounce, m.announcedGen = now, m.invGen
		m.ctr.inc(announcesSent)
		m.log.Debug("announced", "why", "change", "generation", m.invGen, "disks", m.inv.Len(), "datagrams", len(dgs))
	}
}

// onDelta applies a peer's delta, or (it does not hold the base, or the
// result differs) counts it and asks for the generation as when a
// heartbeat reveals a gap.
func (m *Machine) onDelta(now time.Time, ps *peerState, p *wire.Packet) {
	if p.Generation == ps.advGen {
		d := p.Delta.Digest
		ps.advDigest = &d
	}
	c, err := m.asm.AddDelta(now, p.Header, p.Delta)
	if err != nil {
		m.ctr.drop(wire.ReasonOf(err))
		m.logLimited(now, logAnnounceDropped, slog.LevelDebug, "delta not applied", "peer", ps.did, "err", err)
		m.touch(now, ps, false)
		m.checkWant(now, ps)
		return
	}
	m.ctr.inc(deltasApplied)
	m.apply(now, ps, c)
}
