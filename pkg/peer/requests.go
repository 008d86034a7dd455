package peer

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
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

// RequestHandler acts on a request addressed to this node: from is the
// requesting node as the store knows it. It returns the reply's status,
// path and message; the loop fills in the rest. It runs on a goroutine of
// its own, never on the protocol loop.
type RequestHandler func(ctx context.Context, from disk.Node, r wire.Request) wire.Reply

// ErrNoAnswer is returned by Request when the owner did not answer.
var ErrNoAnswer = errors.New("no answer")

// SetRequestHandler installs the handler of requests addressed to us (at
// any time, Run or not). Without one, requests are answered "failed".
func (s *Service) SetRequestHandler(h RequestHandler) { s.handler.Store(&h) }

// Authenticated reports whether the network is keyed, so requests can work.
func (s *Service) Authenticated() bool { return s.keys != nil }

// Request sends r to target and waits for its reply, at most until ctx
// ends. ID, Target and Sent are filled in here.
func (s *Service) Request(ctx context.Context, target disk.NodeID, r wire.Request) (wire.Reply, error) {
	if s.keys == nil {
		return wire.Reply{}, wire.ErrUnkeyed
	}
	t, err := wire.ParseNodeID(target)
	if err != nil {
		return wire.Reply{}, err
	}
	if t == s.self {
		return wire.Reply{}, errors.New("a request to ourselves: act locally")
	}
	_, _ = rand.Read(r.ID[:])
	r.Target = t
	got := make(chan wire.Reply, 1)
	defer func() {
		_ = s.do(context.Background(), func(l *loop) { delete(l.waiting, r.ID) })
	}()
	gap := requestRetryGap
	for try := 0; ; try++ {
		var sendErr error
		if err := s.do(ctx, func(l *loop) {
			l.waiting[r.ID] = waiter{target: t, c: got}
			r.Sent = time.Now()
			sendErr = l.sendRequest(r)
		}); err != nil {
			return wire.Reply{}, err
		}
		if sendErr != nil {
			return wire.Reply{}, sendErr
		}
		wait := time.NewTimer(gap)
		if try == requestRetries {
			wait.Reset(time.Until(deadlineOr(ctx, time.Now().Add(requestRunFor))))
		}
		select {
		case rep := <-got:
			wait.Stop()
			return rep, nil
		case <-ctx.Done():
			wait.Stop()
			return wire.Reply{}, fmt.Errorf("%w: %v", ErrNoAnswer, ctx.Err())
		case <-wait.C:
			if try == requestRetries {
				return wire.Reply{}, ErrNoAnswer
			}
			gap *= 2
		}
	}
}

func deadlineOr(ctx context.Context, t time.Time) time.Time {
	if d, ok := ctx.Deadline(); ok && d.Before(t) {
		return d
	}
	return t
}

// waiter is a request of ours awaiting its reply.
type waiter struct {
	target wire.NodeID
	c      chan wire.Reply
}

// served is a request addressed to us: being acted on, or its reply.
type served struct {
	at       time.Time
	from     wire.NodeID
	done     bool
	reply    []byte // encoded, when done
	lastSent time.Time
}

func (l *loop) sendRequest(r wire.Request) error {
	gen, _ := l.current()
	b, err := l.enc.Request(gen, r)
	if err != nil {
		return err
	}
	l.send([][]byte{b})
	l.s.ctr.inc(requestsSent)
	return nil
}

// onRequest handles a request from ps.
func (l *loop) onRequest(now time.Time, ps *peerState, r *wire.Request) {
	if r.Target != l.s.self {
		return // for another node
	}
	if !r.Fresh(now) {
		l.s.ctr.inc(dropRequestStale)
		l.s.logLimited(logRequestStale, slog.LevelWarn, "refusing a request with a time far from ours (a replay, or a clock off by more than 30 s)",
			"from", ps.did, "name", ps.name, "sent", r.Sent)
		return
	}
	if sv, ok := l.served[r.ID]; ok {
		if sv.from != ps.id {
			l.s.ctr.inc(dropRequestStale) // an ID reused by another node
			return
		}
		if sv.done && now.Sub(sv.lastSent) >= replyResendEvery {
			sv.lastSent = now
			l.send([][]byte{sv.reply})
		}
		return
	}
	l.pruneServed(now)
	sv := &served{at: now, from: ps.id}
	l.served[r.ID] = sv
	l.s.ctr.inc(requestsReceived)
	refuse := func(st wire.Status, msg string) {
		l.finishRequest(now, sv, *r, ps.id, wire.Reply{Status: st, Message: msg})
	}
	var handle RequestHandler
	if h := l.s.handler.Load(); h != nil {
		handle = *h
	}
	switch {
	case !ps.requests.allow(now, requestRate, requestBurst):
		refuse(wire.StatusRateLimited, "too many requests from your node; try again in a second")
		return
	case l.busy >= maxRequestsBusy:
		refuse(wire.StatusRateLimited, "busy with other requests; try again shortly")
		return
	case handle == nil:
		refuse(wire.StatusFailed, "this node does not take requests")
		return
	}
	l.busy++
	from := l.node(ps)
	req, id := *r, ps.id
	l.s.logLimited(logRequest, slog.LevelInfo, "request from a peer", "from", from.ID, "name", from.Name, "uid", r.UID,
		"action", r.Action, "disk", r.Query, "rw", r.RW)
	go func() {
		ctx, cancel := context.WithTimeout(l.ctx, requestRunFor)
		rep := handle(ctx, from, req)
		cancel()
		select {
		case l.s.reqs <- func(l *loop) { l.busy--; l.finishRequest(time.Now(), sv, req, id, rep) }:
		case <-l.s.stopped:
		}
	}()
}

func (l *loop) finishRequest(now time.Time, sv *served, r wire.Request, from wire.NodeID, rep wire.Reply) {
	rep.ID, rep.To = r.ID, from
	gen, _ := l.current()
	b, err := l.enc.Reply(gen, rep)
	if err != nil {
		return // unkeyed: no request got this far
	}
	sv.done, sv.reply, sv.lastSent = true, b, now
	l.send([][]byte{b})
	l.s.ctr.inc(repliesSent)
}

// onReply hands a reply to the request of ours it answers.
func (l *loop) onReply(ps *peerState, r *wire.Reply) {
	if r.To != l.s.self {
		return
	}
	w, ok := l.waiting[r.ID]
	if !ok || w.target != ps.id {
		return // not waited for (a repeat), or not from the node asked
	}
	select {
	case w.c <- *r:
	default:
	}
}

// pruneServed forgets request IDs older than requestKeep, and the oldest
// ones beyond maxRequestsKept.
func (l *loop) pruneServed(now time.Time) {
	var oldest [wire.RequestIDSize]byte
	var oldestAt time.Time
	for id, sv := range l.served {
		if now.Sub(sv.at) > requestKeep && sv.done {
			delete(l.served, id)
			continue
		}
		if oldestAt.IsZero() || sv.at.Before(oldestAt) {
			oldest, oldestAt = id, sv.at
		}
	}
	if len(l.served) >= maxRequestsKept {
		delete(l.served, oldest)
	}
}
