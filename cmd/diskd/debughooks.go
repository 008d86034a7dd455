//go:build diskd_debughooks

package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/diskd/diskd/pkg/peer"
	"github.com/diskd/diskd/pkg/scanner"
)

// startDebugHooks, in binaries built with -tags diskd_debughooks only (the
// watchdog's end-to-end test builds one; releases never do): on SIGUSR2,
// block the loop named by $DISKD_DEBUG_WEDGE ("scanner" or "peer") until
// the daemon stops, as a deadlock in it would.
func startDebugHooks(ctx context.Context, log *slog.Logger, sc *scanner.Scanner, net *peer.Service) {
	which := os.Getenv("DISKD_DEBUG_WEDGE")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGUSR2)
	go func() {
		defer signal.Stop(sig)
		select {
		case <-ctx.Done():
			return
		case <-sig:
		}
		wedge := map[string]func(context.Context) error{"scanner": sc.DebugWedge}
		if net != nil {
			wedge["peer"] = net.DebugWedge
		}
		fn := wedge[which]
		if fn == nil {
			log.Error("debug hook: nothing to wedge", "DISKD_DEBUG_WEDGE", which)
			return
		}
		log.Warn("debug hook: wedging a loop until the daemon stops", "loop", which)
		_ = fn(ctx)
	}()
}
