package main

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	"github.com/diskd/diskd/pkg/peer"
	"github.com/diskd/diskd/pkg/scanner"
	"github.com/diskd/diskd/pkg/store"
)

// probe is one component's liveness check: a round trip through its main
// loop (or its lock). At most one check per component is outstanding, so a
// component that never answers costs one goroutine, not one per period.
type probe struct {
	name  string
	check func(ctx context.Context) error
	busy  atomic.Bool
}

var errStillWaiting = errors.New("the previous check has not returned")

func (p *probe) run(ctx context.Context) error {
	if !p.busy.CompareAndSwap(false, true) {
		return errStillWaiting
	}
	res := make(chan error, 1)
	go func() {
		defer p.busy.Store(false)
		res <- p.check(ctx)
	}()
	select {
	case err := <-res:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// probes are the components the watchdog requires alive: the store, the
// scanner's event loop and the peer protocol loop (when the network is on).
func probes(st *store.Store, sc *scanner.Scanner, net *peer.Service) []*probe {
	ps := []*probe{
		// The store has no loop of its own: a read under its lock is the
		// round trip (a writer stuck holding the lock blocks it).
		{name: "store", check: func(context.Context) error { st.LocalNode(); return nil }},
		{name: "scanner", check: sc.Alive},
	}
	if net != nil {
		ps = append(ps, &probe{name: "peer", check: net.Alive})
	}
	return ps
}

// checkAlive runs every probe at once, each bounded by ctx, and returns the
// names of those that did not answer.
func checkAlive(ctx context.Context, ps []*probe) (dead []string) {
	errs := make([]error, len(ps))
	var wg sync.WaitGroup
	for i, p := range ps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = p.run(ctx)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			dead = append(dead, ps[i].name)
		}
	}
	return dead
}
