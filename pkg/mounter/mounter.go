// Package mounter mounts this machine's disks when asked, and owns every
// decision about it: whether a disk may be mounted (the owner's allow
// rules), where (a directory under the mount directory whose name is made
// safe from the label), with which options (nosuid,nodev,noexec, read-only
// unless a read-write rule allows otherwise), how (a transient systemd
// mount unit when systemd is PID 1, mount(2) otherwise), and which mounts
// it made (remembered, so it unmounts only those unless forced).
//
// Who may ask is not decided here: callers check the local authorization
// policy, or the peer network's key, first.
package mounter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/diskd/diskd/pkg/disk"
	"github.com/diskd/diskd/pkg/mountinfo"
)

// DefaultDir is where mounts go unless configured otherwise: under /media
// like udisks's /media/USER, in a directory of diskd's own, so a name made
// from a label can never shadow another program's mount point.
const DefaultDir = "/media/diskd"

// Options every mount gets; "ro" is added unless read-write is allowed
// and asked for.
const safeOptions = "nosuid,nodev,noexec"

// maxName bounds a mount point's name (bytes); NAME_MAX is 255.
const maxName = 64

// Errors, each one line a user can act on. AlreadyMountedError and
// *Error values wrap them.
var (
	ErrNotAllowed    = errors.New("not allowed on this host (no --mount-allow rule matches its label or UUID)")
	ErrRWNotAllowed  = errors.New("read-write not allowed on this host (no --mount-allow-rw rule matches); mount it without --rw")
	ErrNotPresent    = errors.New("disk not present")
	ErrNotFilesystem = errors.New("not a mountable filesystem")
	ErrNotMounted    = errors.New("not mounted")
	ErrNotOurs       = errors.New("mounted, but not by diskd; only root on its own machine may unmount it (--force)")
	ErrBusy          = errors.New("busy: the filesystem is in use")
)

// AlreadyMountedError says where a disk is mounted already.
type AlreadyMountedError struct{ Path string }

func (e *AlreadyMountedError) Error() string { return "already mounted at " + e.Path }

// Rules are the owner's configuration: which disks may be mounted, and
// which of them read-write. Patterns are path.Match globs over the label
// or the UUID (either matching is enough).
type Rules struct {
	Allow   []string
	AllowRW []string
}

// Check says whether d may be mounted, read-write if rw.
func (r Rules) Check(d disk.Disk, rw bool) error {
	if rw {
		if !matches(r.AllowRW, d) {
			return ErrRWNotAllowed
		}
		return nil
	}
	if !matches(r.Allow, d) && !matches(r.AllowRW, d) {
		return ErrNotAllowed
	}
	return nil
}

func matches(globs []string, d disk.Disk) bool {
	for _, g := range globs {
		for _, v := range []string{d.Label, d.UUID} {
			if v == "" {
				continue
			}
			if ok, _ := path.Match(g, v); ok {
				return true
			}
		}
	}
	return false
}

// SafeName is the mount point's name for d: its label with every byte that
// could escape or confuse a directory (a slash, a control character, an
// invalid UTF-8 byte, a leading dot) replaced by "_", clipped to 64 bytes;
// the UUID when there is no label; the kernel name when neither.
func SafeName(d disk.Disk) string {
	src := d.Label
	if src == "" {
		src = d.UUID
	}
	if src == "" {
		src = d.Name
	}
	var b strings.Builder
	for i, w := 0, 0; i < len(src); i += w {
		r, n := utf8.DecodeRuneInString(src[i:])
		w = n
		switch {
		case r == utf8.RuneError && n <= 1, r == '/', r == '\\', unicode.IsControl(r),
			unicode.Is(unicode.Cf, r), r == '.' && b.Len() == 0:
			r = '_'
		}
		if b.Len()+utf8.RuneLen(r) > maxName {
			break
		}
		b.WriteRune(r)
	}
	if b.Len() == 0 {
		return "disk"
	}
	return b.String()
}

// Record is one mount diskd made.
type Record struct {
	ID      string    `json:"id"` // what the request named: the UUID, else the device
	Device  string    `json:"device"`
	Path    string    `json:"path"`
	Unit    string    `json:"unit,omitempty"` // the transient unit, when systemd mounted it
	RW      bool      `json:"rw"`
	By      string    `json:"by"` // who asked, for the log and `status`
	Mounted time.Time `json:"mounted"`
}

// mechanism does the mounting: systemd or mount(2).
type mechanism interface {
	mount(ctx context.Context, dev, where, fstype, options string) (unit string, err error)
	unmount(ctx context.Context, r Record) error
	name() string
}

// Config configures a Mounter.
type Config struct {
	Dir   string // DefaultDir when empty
	Rules Rules
	// Remembered is the file the records of mounts made are kept in.
	Remembered string
	// Systemd selects transient mount units (systemd is PID 1) over mount(2).
	Systemd bool
	Logger  *slog.Logger
}

// Mounter mounts and unmounts local disks. Safe for concurrent use; one
// operation runs at a time.
type Mounter struct {
	cfg  Config
	log  *slog.Logger
	mech mechanism

	mu   sync.Mutex
	made map[string]Record // by path
}

// New returns a Mounter with the records of earlier runs loaded.
func New(cfg Config) (*Mounter, error) {
	if cfg.Dir == "" {
		cfg.Dir = DefaultDir
	}
	if !filepath.IsAbs(cfg.Dir) {
		return nil, fmt.Errorf("mount directory %q is not absolute", cfg.Dir)
	}
	cfg.Dir = filepath.Clean(cfg.Dir)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	m := &Mounter{cfg: cfg, log: cfg.Logger, made: map[string]Record{}}
	if cfg.Systemd {
		m.mech = &systemdMech{}
	} else {
		m.mech = &directMech{}
	}
	if err := m.load(); err != nil {
		return nil, err
	}
	m.forgetGone() // unmounted by someone else, or before a reboot
	return m, nil
}

// Rules returns the configured rules.
func (m *Mounter) Rules() Rules { return m.cfg.Rules }

// Mechanism names how mounts are made: "systemd" or "mount(2)".
func (m *Mounter) Mechanism() string { return m.mech.name() }

// Made returns the mounts diskd made that are still remembered.
func (m *Mounter) Made() []Record {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Record, 0, len(m.made))
	for _, r := range m.made {
		out = append(out, r)
	}
	return out
}

// Mount mounts d (a present local disk) if the rules allow, and returns
// the mount point. who names the asker in the log.
func (m *Mounter) Mount(ctx context.Context, d disk.Disk, rw bool, who string) (string, error) {
	if !d.Present {
		return "", ErrNotPresent
	}
	if d.Usage != "filesystem" || d.Type == "" {
		return "", ErrNotFilesystem
	}
	if len(d.Mounts) > 0 {
		return "", &AlreadyMountedError{Path: d.Mounts[0]}
	}
	if err := m.cfg.Rules.Check(d, rw); err != nil {
		m.log.Warn("mount refused", "device", d.Device, "label", d.Label, "by", who, "rw", rw, "reason", err)
		return "", err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	where, err := m.mountPoint(d)
	if err != nil {
		return "", err
	}
	opts := safeOptions + ",ro"
	if rw {
		opts = safeOptions + ",rw"
	}
	unit, err := m.mech.mount(ctx, d.Device, where, d.Type, opts)
	if err != nil {
		m.log.Warn("mount failed", "device", d.Device, "path", where, "by", who, "err", err)
		return "", fmt.Errorf("mount %s on %s: %w", d.Device, where, err)
	}
	r := Record{ID: recordID(d), Device: d.Device, Path: where, Unit: unit, RW: rw, By: who, Mounted: time.Now().UTC()}
	m.made[where] = r
	if err := m.save(); err != nil {
		m.log.Error("remembering a mount", "path", where, "err", err)
	}
	m.log.Info("mounted", "device", d.Device, "label", d.Label, "path", where, "rw", rw, "by", who, "mechanism", m.mech.name())
	return where, nil
}

// Unmount unmounts d's mount point under the mount directory that diskd
// made; force (root on this machine only) unmounts one it did not make.
func (m *Mounter) Unmount(ctx context.Context, d disk.Disk, force bool, who string) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var r Record
	var ours bool
	for _, p := range d.Mounts {
		if rec, ok := m.made[p]; ok {
			r, ours = rec, true
			break
		}
	}
	if !ours {
		if len(d.Mounts) == 0 {
			return "", ErrNotMounted
		}
		if !force {
			return "", ErrNotOurs
		}
		r = Record{Device: d.Device, Path: d.Mounts[0]}
	}
	if err := m.mech.unmount(ctx, r); err != nil {
		m.log.Warn("unmount failed", "device", d.Device, "path", r.Path, "by", who, "err", err)
		return "", err
	}
	delete(m.made, r.Path)
	if err := m.save(); err != nil {
		m.log.Error("forgetting a mount", "path", r.Path, "err", err)
	}
	m.log.Info("unmounted", "device", d.Device, "path", r.Path, "by", who, "forced", !ours)
	return r.Path, nil
}

// forgetGone drops the records of mounts that no longer exist.
func (m *Mounter) forgetGone() {
	changed := false
	for p := range m.made {
		if !isMountPoint(p) {
			delete(m.made, p)
			changed = true
		}
	}
	if changed {
		if err := m.save(); err != nil {
			m.log.Error("forgetting mounts", "err", err)
		}
	}
}

// mountPoint is Dir/SafeName(d), or Dir/SafeName(d)-UUID8 when that name
// is taken by another mount; it never leaves Dir.
func (m *Mounter) mountPoint(d disk.Disk) (string, error) {
	name := SafeName(d)
	cands := []string{name}
	if d.UUID != "" {
		cands = append(cands, name+"-"+strings.ToLower(firstN(d.UUID, 8)))
	}
	for _, n := range cands {
		p := filepath.Join(m.cfg.Dir, n)
		if filepath.Dir(p) != m.cfg.Dir {
			return "", fmt.Errorf("mount point name %q leaves %s", n, m.cfg.Dir)
		}
		if _, taken := m.made[p]; taken || isMountPoint(p) {
			continue
		}
		return p, nil
	}
	return "", fmt.Errorf("mount point %s is in use by another mount", filepath.Join(m.cfg.Dir, name))
}

func recordID(d disk.Disk) string {
	if d.UUID != "" {
		return d.UUID
	}
	return d.Device
}

func firstN(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// isMountPoint reports whether something is mounted on p.
func isMountPoint(p string) bool {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	defer f.Close()
	ms, err := mountinfo.Parse(f)
	if err != nil {
		return false
	}
	for _, mt := range ms {
		if mt.MountPoint == p {
			return true
		}
	}
	return false
}
