package peer

import (
	"log/slog"
	"time"

	"github.com/diskd/diskd/pkg/disk"
	"github.com/diskd/diskd/pkg/wire"
)

// Requests (docs/protocol.md, "Requests"): one node asks another to act
// on one of its disks, on a keyed network only. The requester repeats a
// request (same ID) until a reply comes or it gives up; the owner acts on
// an ID once and answers repeats from its record. Replays are stopped
// three times over: the sequence window (an exact copy), the request's
// time (older than wire.RequestClockSkew), and the IDs the owner keeps for
// twice that long.

const (
	requestRetries   = 3                      // repeats after the first send
	requestRetryGap  = 500 * time.Millisecond // doubling
	requestKeep      = 2 * wire.RequestClockSkew
	maxRequestsKept  = 1024             // request IDs remembered, oldest dropped first
	maxRequestsBusy  = 4                // requests being acted on at once
	requestRate      = 1.0              // per requesting node, per second
	requestBurst     = 10.0             // a person trying a few disks in a row
	requestRunFor    = 60 * time.Second // an action's own deadline
	replyResendEvery = time.Second      // a repeat answered from the record at most this often
)

// served is a request addressed to us: being acted on, or its reply.
type served struct {
	at       time.Time
	from     wire.NodeID
	done     bool
	reply    []byte // encoded, when done
	lastSent time.Time
}

// SendRequest sends r (ID, Target and Sent filled in) and waits for its
// reply: Effects.Replied hands it over, until ForgetRequest.
func (m *Machine) SendRequest(r wire.Request) error {
	b, err := m.enc.Request(m.invGen, r)
	if err != nil {
		return err
	}
	m.waiting[r.ID] = r.Target
	m.fx.Send([][]byte{b})
	m.ctr.inc(requestsSent)
	return nil
}

// ForgetRequest stops waiting for the reply to request id.
func (m *Machine) ForgetRequest(id [wire.RequestIDSize]byte) { delete(m.waiting, id) }

// Action is a request addressed to us, handed to Effects.Act.
type Action struct {
	From    disk.Node // the requesting node, as the store shows it
	Request wire.Request
	sv      *served
	from    wire.NodeID
}

// onRequest handles a request from ps.
func (m *Machine) onRequest(now time.Time, ps *peerState, r *wire.Request) {
	if r.Target != m.cfg.Self {
		return // for another node
	}
	if !r.Fresh(now) {
		m.ctr.inc(dropRequestStale)
		m.logLimited(now, logRequestStale, slog.LevelWarn, "refusing a request with a time far from ours (a replay, or a clock off by more than 30 s)",
			"from", ps.did, "name", ps.name, "sent", r.Sent)
		return
	}
	if sv, ok := m.served[r.ID]; ok {
		if sv.from != ps.id {
			m.ctr.inc(dropRequestStale) // an ID reused by another node
			return
		}
		if sv.done && now.Sub(sv.lastSent) >= replyResendEvery {
			sv.lastSent = now
			m.fx.Send([][]byte{sv.reply})
		}
		return
	}
	m.pruneServed(now)
	sv := &served{at: now, from: ps.id}
	m.served[r.ID] = sv
	m.ctr.inc(requestsReceived)
	refuse := func(st wire.Status, msg string) {
		m.finishRequest(now, sv, *r, ps.id, wire.Reply{Status: st, Message: msg})
	}
	switch {
	case !ps.requests.allow(now, requestRate, requestBurst):
		refuse(wire.StatusRateLimited, "too many requests from your node; try again in a second")
		return
	case m.busy >= maxRequestsBusy:
		refuse(wire.StatusRateLimited, "busy with other requests; try again shortly")
		return
	}
	a := &Action{From: m.node(ps), Request: *r, sv: sv, from: ps.id}
	if !m.fx.Act(a) {
		refuse(wire.StatusFailed, "this node does not take requests")
		return
	}
	m.busy++
	m.logLimited(now, logRequest, slog.LevelInfo, "request from a peer", "from", a.From.ID, "name", a.From.Name, "uid", r.UID,
		"action", r.Action, "disk", r.Query, "rw", r.RW)
}

// FinishRequest sends the reply to a request handed to Effects.Act.
func (m *Machine) FinishRequest(now time.Time, a *Action, rep wire.Reply) {
	m.busy--
	m.finishRequest(now, a.sv, a.Request, a.from, rep)
}

func (m *Machine) finishRequest(now time.Time, sv *served, r wire.Request, from wire.NodeID, rep wire.Reply) {
	rep.ID, rep.To = r.ID, from
	b, err := m.enc.Reply(m.invGen, rep)
	if err != nil {
		return // unkeyed: no request got this far
	}
	sv.done, sv.reply, sv.lastSent = true, b, now
	m.fx.Send([][]byte{b})
	m.ctr.inc(repliesSent)
}

// onReply hands a reply to the request of ours it answers.
func (m *Machine) onReply(ps *peerState, r *wire.Reply) {
	if r.To != m.cfg.Self {
		return
	}
	if t, ok := m.waiting[r.ID]; !ok || t != ps.id {
		return // not waited for (a repeat), or not from the node asked
	}
	m.fx.Replied(*r)
}

// pruneServed forgets request IDs older than requestKeep, and the oldest
// ones beyond maxRequestsKept.
func (m *Machine) pruneServed(now time.Time) {
	var oldest [wire.RequestIDSize]byte
	var oldestAt time.Time
	for id, sv := range m.served {
		if now.Sub(sv.at) > requestKeep && sv.done {
			delete(m.served, id)
			continue
		}
		if oldestAt.IsZero() || sv.at.Before(oldestAt) {
			oldest, oldestAt = id, sv.at
		}
	}
	if len(m.served) >= maxRequestsKept {
		delete(m.served, oldest)
	}
}
