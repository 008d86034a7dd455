package mounter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	sdbus "github.com/coreos/go-systemd/v22/dbus"
	"github.com/coreos/go-systemd/v22/unit"
	godbus "github.com/godbus/dbus/v5"
	"golang.org/x/sys/unix"

	"github.com/diskd/diskd/pkg/store"
)

// systemdMech asks systemd for a transient mount unit, as systemd-mount
// does: systemd, not diskd, makes the directory and the mount, in the
// machine's own mount namespace. So diskd's unit keeps its sandbox (no
// capabilities, a read-only /media, private mounts) and the mount is
// visible to everyone, with a unit an admin can see and stop.
type systemdMech struct{}

func (systemdMech) name() string { return "systemd" }

func (systemdMech) mount(ctx context.Context, dev, where, fstype, options string) (string, error) {
	conn, err := sdbus.NewSystemConnectionContext(ctx)
	if err != nil {
		return "", fmt.Errorf("connect to systemd: %w", err)
	}
	defer conn.Close()
	name := unit.UnitNamePathEscape(where) + ".mount"
	props := []sdbus.Property{
		sdbus.PropDescription("diskd mount of " + dev),
		{Name: "What", Value: godbus.MakeVariant(dev)},
		{Name: "Where", Value: godbus.MakeVariant(where)},
		{Name: "Type", Value: godbus.MakeVariant(fstype)},
		{Name: "Options", Value: godbus.MakeVariant(options)},
		// Gone from systemd's memory once unmounted, also after a failure.
		{Name: "CollectMode", Value: godbus.MakeVariant("inactive-or-failed")},
	}
	return name, runJob(ctx, "start "+name, func(ch chan<- string) (int, error) {
		return conn.StartTransientUnitContext(ctx, name, "fail", props, ch)
	})
}

func (systemdMech) unmount(ctx context.Context, r Record) error {
	conn, err := sdbus.NewSystemConnectionContext(ctx)
	if err != nil {
		return fmt.Errorf("connect to systemd: %w", err)
	}
	defer conn.Close()
	name := r.Unit
	if name == "" {
		name = unit.UnitNamePathEscape(r.Path) + ".mount"
	}
	err = runJob(ctx, "stop "+name, func(ch chan<- string) (int, error) {
		return conn.StopUnitContext(ctx, name, "fail", ch)
	})
	if err != nil && isMountPoint(r.Path) {
		// systemd's umount failed; the usual reason is a busy filesystem.
		return fmt.Errorf("%w (%v)", ErrBusy, err)
	}
	return nil
}

// runJob starts a systemd job and waits for its result.
func runJob(ctx context.Context, what string, start func(chan<- string) (int, error)) error {
	ch := make(chan string, 1)
	if _, err := start(ch); err != nil {
		return fmt.Errorf("systemd %s: %w", what, err)
	}
	select {
	case res := <-ch:
		if res != "done" {
			return fmt.Errorf("systemd %s: job %s (journalctl -u %s says why)", what, res, strings.Fields(what)[1])
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("systemd %s: %w", what, ctx.Err())
	}
}

// directMech calls mount(2) itself: for a daemon not run by systemd (make
// run as root). It makes the directory, and removes it after unmounting.
type directMech struct{}

func (directMech) name() string { return "mount(2)" }

func (directMech) mount(_ context.Context, dev, where, fstype, options string) (string, error) {
	if err := os.MkdirAll(filepath.Dir(where), 0o755); err != nil {
		return "", err
	}
	if err := os.Mkdir(where, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return "", err
	}
	flags, data := mountFlags(options)
	if err := unix.Mount(dev, where, fstype, flags, data); err != nil {
		_ = os.Remove(where)
		return "", err
	}
	return "", nil
}

func (directMech) unmount(_ context.Context, r Record) error {
	if err := unix.Unmount(r.Path, 0); err != nil {
		if errors.Is(err, unix.EBUSY) {
			return ErrBusy
		}
		if !errors.Is(err, unix.EINVAL) { // EINVAL: not mounted any more
			return err
		}
	}
	_ = os.Remove(r.Path) // only an empty directory goes
	return nil
}

// mountFlags turns the options this package uses into mount(2) flags.
func mountFlags(options string) (uintptr, string) {
	var flags uintptr
	for _, o := range strings.Split(options, ",") {
		switch o {
		case "ro":
			flags |= unix.MS_RDONLY
		case "nosuid":
			flags |= unix.MS_NOSUID
		case "nodev":
			flags |= unix.MS_NODEV
		case "noexec":
			flags |= unix.MS_NOEXEC
		}
	}
	return flags, ""
}

// load reads the records of mounts made; a missing file is an empty list.
func (m *Mounter) load() error {
	if m.cfg.Remembered == "" {
		return nil
	}
	b, err := os.ReadFile(m.cfg.Remembered)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("mounts made: %w", err)
	}
	var rs []Record
	if err := json.Unmarshal(b, &rs); err != nil {
		m.log.Error("mounts made: unreadable; starting without them", "file", m.cfg.Remembered, "err", err)
		return nil
	}
	for _, r := range rs {
		if filepath.Dir(r.Path) == m.cfg.Dir {
			m.made[r.Path] = r
		}
	}
	return nil
}

// save writes the records atomically.
func (m *Mounter) save() error {
	if m.cfg.Remembered == "" {
		return nil
	}
	rs := make([]Record, 0, len(m.made))
	for _, r := range m.made {
		rs = append(rs, r)
	}
	b, err := json.MarshalIndent(rs, "", "  ")
	if err != nil {
		return err
	}
	return store.WriteFileAtomic(m.cfg.Remembered, b, 0o600)
}
