package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/diskd/diskd/pkg/scanner"
	"github.com/diskd/diskd/pkg/store"
)

// notifySystemd tells systemd READY=1 once the socket listens (it is bound
// before this runs) and the first scan has finished or failed, keeps
// STATUS= current, pets the watchdog at half its interval, and says
// STOPPING=1 when ctx ends. Without NOTIFY_SOCKET every call is a no-op.
func notifySystemd(ctx context.Context, log *slog.Logger, sc *scanner.Scanner, st *store.Store, be *backend) error {
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
		t := time.NewTicker(wd / 2)
		defer t.Stop()
		wdC = t.C
	}
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
			daemon.SdNotify(false, daemon.SdNotifyWatchdog)
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
