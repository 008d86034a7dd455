package peer

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	"github.com/diskd/diskd/pkg/disk"
	"github.com/diskd/diskd/pkg/wire"
)

// RequestHandler acts on a request addressed to this node: from is the
// requesting node as the store knows it. It returns the reply's status,
// path and message; the machine fills in the rest. It runs on a goroutine
// of its own, never on the protocol loop.
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
		_ = s.do(context.Background(), func(d *driver) { delete(d.waiting, r.ID); d.m.ForgetRequest(r.ID) })
	}()
	gap := requestRetryGap
	for try := 0; ; try++ {
		var sendErr error
		if err := s.do(ctx, func(d *driver) {
			d.waiting[r.ID] = got
			r.Sent = time.Now()
			sendErr = d.m.SendRequest(r)
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
