package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/diskd/diskd/pkg/scanner"
	"github.com/diskd/diskd/pkg/store"
)

// notifySystemd tells systemd READY=1 once the socket listens (it is bound
// before this runs) and the first scan has finished or failed, keeps
// STATUS= current, and says STOPPING=1 when ctx ends. It pets the watchdog
// only when every probe (store, scanner loop, peer loop) has answered
// within half the watchdog period, checking every quarter period: a wedged
// component stops the petting and systemd restarts the daemon. Without
// NOTIFY_SOCKET every call is a no-op.
func notifySystemd(ctx context.Context, log *slog.Logger, sc *scanner.Scanner, st *store.Store, be *backend, ps []*probe) error {
	if os.Getenv("NOTIFY_SOCKET") == "" {
		return nil // not under systemd (or not Type=notify): nothing to tell
	}
	select {
	case <-sc.FirstScanDone():
	case <-ctx.Done():
		daemon.SdNotify(false, daemon.SdNotifyStopping)
		return nil
	}
	status := func() string {
		s := be.Status()
		line := fmt.Sprintf("%d disks here, %d on %d/%d nodes online", s.Counts.LocalPresent,
			s.Counts.DisksPresent, s.Counts.NodesOnline, s.Counts.Nodes)
		if len(s.Problems) > 0 {
			line += "; " + s.Problems[0]
		}
		return line
	}
	last := status()
	if sent, err := daemon.SdNotify(false, daemon.SdNotifyReady+"\nSTATUS="+last); err != nil {
		log.Warn("sd_notify", "err", err)
	} else if sent {
		log.Info("ready", "status", last)
	}

	wd, _ := daemon.SdWatchdogEnabled(false)
	var wdC <-chan time.Time
	if wd > 0 {
		t := time.NewTicker(wd / 4)
		defer t.Stop()
		wdC = t.C
	}
	var wedged []string
	// STATUS= is refreshed at most once a second however busy the table
	// is, and only recomputed when the table or the scan changed: counting
	// 100,000 disks every second would be an idle daemon's main cost.
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	seen, lastScan := st.Version(), be.scanner.Status().LastScan
	for {
		select {
		case <-ctx.Done():
			daemon.SdNotify(false, daemon.SdNotifyStopping+"\nSTATUS=stopping")
			return nil
		case <-wdC:
			pctx, cancel := context.WithTimeout(ctx, wd/2)
			dead := checkAlive(pctx, ps)
			cancel()
			if ctx.Err() != nil {
				continue
			}
			if len(dead) == 0 {
				daemon.SdNotify(false, daemon.SdNotifyWatchdog)
			}
			if !slices.Equal(dead, wedged) {
				if len(dead) > 0 {
					log.Error("not answering within half the watchdog period; not petting the watchdog (systemd restarts the daemon)",
						"components", dead, "watchdog", wd)
				} else {
					log.Info("every component answers again; petting the watchdog", "were_wedged", wedged)
				}
				wedged = dead
			}
		case <-tick.C:
			v, scan := st.Version(), be.scanner.Status().LastScan
			if v == seen && scan.Equal(lastScan) {
				continue
			}
			seen, lastScan = v, scan
			if s := status(); s != last {
				last = s
				daemon.SdNotify(false, "STATUS="+s)
			}
		}
	}
}
