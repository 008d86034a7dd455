// Package uevent owns listening to the kernel's block device uevents
// (NETLINK_KOBJECT_UEVENT, the kernel's own multicast group, so no udevd is
// needed) and turning them into "device X changed" events. Events carry no
// filesystem identity: whoever receives one probes the device.
package uevent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"strings"
	"time"

	"github.com/pilebones/go-udev/netlink"
)

// Event is one kernel uevent about a block device.
type Event struct {
	Action  string            // add, remove, change, move, online, offline, bind, unbind
	Name    string            // kernel name: "sda1", "loop3", "dm-0" (sysfs spelling, "cciss!c0d0")
	DevType string            // "disk" or "partition"
	Env     map[string]string // every KEY=value of the event (DEVPATH, SEQNUM, DISK_MEDIA_CHANGE, ...)
}

// Listener receives block uevents. The zero value is ready to use.
type Listener struct {
	Logger *slog.Logger // default: discard
}

// errLogInterval spaces out the logging of dropped messages (forged or
// unparsable ones), which a hostile local process could send in a flood.
const errLogInterval = time.Minute

// Run listens until ctx is done and sends every block device event to out.
// It never blocks on out past ctx. It returns nil when ctx is done, and an
// error if the socket cannot be opened or fails.
//
// Only kernel-originated events (group 1) are read: udevd's re-broadcast
// (group 2) needs udevd, which may not run, and would duplicate them.
func (l *Listener) Run(ctx context.Context, out chan<- Event) error {
	log := l.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}

	conn := &netlink.UEventConn{}
	if err := conn.Connect(netlink.KernelEvent); err != nil {
		return fmt.Errorf("uevent: connect to kernel netlink group: %w", err)
	}
	mctx, cancel := context.WithCancel(ctx)
	queue := make(chan netlink.UEvent, 64)
	// Buffered so a fatal error is in errs before the monitor closes queue.
	errs := make(chan error, 16)
	matcher := &netlink.RuleDefinitions{Rules: []netlink.RuleDefinition{
		{Env: map[string]string{"SUBSYSTEM": "^block$"}},
	}}
	go conn.MonitorWithContext(mctx, queue, errs, matcher)
	defer func() {
		// The monitor notices mctx within its 200 ms read timeout and then
		// closes queue; only then may the socket be closed under it.
		cancel()
		for range queue {
		}
		_ = conn.Close()
	}()
	log.Debug("listening for block uevents")
	return pump(ctx, queue, errs, out, log)
}

// pump forwards the monitor's events to out until ctx is done or the
// monitor stops (queue closed).
func pump(ctx context.Context, queue <-chan netlink.UEvent, errs <-chan error, out chan<- Event, log *slog.Logger) error {
	var (
		lastErr    error
		lastLogged time.Time
		suppressed int
	)
	noteErr := func(err error) {
		lastErr = err
		if now := time.Now(); now.Sub(lastLogged) >= errLogInterval {
			log.Warn("uevent message dropped", "err", err, "suppressed_since_last", suppressed)
			lastLogged, suppressed = now, 0
		} else {
			suppressed++
		}
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-errs:
			noteErr(err)
		case ue, ok := <-queue:
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				for drained := false; !drained; {
					select {
					case err := <-errs:
						lastErr = err
					default:
						drained = true
					}
				}
				if lastErr == nil {
					lastErr = errors.New("no error reported")
				}
				return fmt.Errorf("uevent monitor stopped: %w", lastErr)
			}
			ev, ok := toEvent(ue)
			if !ok {
				log.Debug("block uevent without a device name", "action", ue.Action, "kobj", ue.KObj)
				continue
			}
			select {
			case out <- ev:
			case <-ctx.Done():
				return nil
			}
		}
	}
}

// toEvent converts a go-udev event. The name is the last element of
// DEVPATH, the spelling sysfs uses (class/block/NAME), which equals
// DEVNAME for every device whose DEVNAME has no '/'.
func toEvent(ue netlink.UEvent) (Event, bool) {
	name := ""
	if p := ue.Env["DEVPATH"]; p != "" {
		name = path.Base(p)
	} else if p := ue.KObj; p != "" {
		name = path.Base(p)
	} else if dn := ue.Env["DEVNAME"]; dn != "" {
		name = strings.ReplaceAll(strings.TrimPrefix(dn, "/dev/"), "/", "!")
	}
	if name == "" || name == "/" || name == "." {
		return Event{}, false
	}
	return Event{
		Action:  string(ue.Action),
		Name:    name,
		DevType: ue.Env["DEVTYPE"],
		Env:     ue.Env,
	}, true
}
