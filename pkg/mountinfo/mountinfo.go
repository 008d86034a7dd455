// Package mountinfo owns the mount table: parsing /proc/self/mountinfo and
// watching it for changes (the kernel flags the open file with POLLPRI
// whenever the mount namespace's table changes).
package mountinfo

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"path"
	"slices"
	"strconv"
	"strings"
)

// Mount is one line of mountinfo.
type Mount struct {
	ID, ParentID uint64
	MajMin       string // st_dev of the mounted filesystem, "8:1"
	Root         string // path inside the filesystem that is mounted (bind mounts)
	MountPoint   string
	FSType       string // "ext4", "fuse.sshfs", ...
	Source       string // "/dev/sda1", "tmpfs", "" ...
}

// Parse reads the /proc/PID/mountinfo format (proc(5)):
//
//	36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw,errors=continue
//	(1)(2)(3)   (4)   (5)         (6)        (7)    (8) (9)  (10)      (11)
//
// Field 7 is zero or more optional fields ended by "-". The kernel escapes
// space, tab, newline and backslash in paths as \040 \011 \012 \134; any
// \ooo octal escape is decoded. Fields are split on single spaces because
// the source may be empty. A malformed line is an error naming its line
// number.
func Parse(r io.Reader) ([]Mount, error) {
	var ms []Mount
	sc := bufio.NewScanner(r)
	// Lines are short, but a path can be 4096 bytes, escaped up to 4x.
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" {
			continue
		}
		m, err := parseLine(line)
		if err != nil {
			return nil, fmt.Errorf("mountinfo line %d: %w", n, err)
		}
		ms = append(ms, m)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("mountinfo: %w", err)
	}
	return ms, nil
}

func parseLine(line string) (Mount, error) {
	f := strings.Split(line, " ")
	// Six fixed fields, the "-" separator, then type, source, options.
	sep := slices.Index(f[min(6, len(f)):], "-")
	if len(f) < 10 || sep < 0 {
		return Mount{}, fmt.Errorf("want at least 10 fields with a \"-\" separator after the 6th, got %q", line)
	}
	sep += 6
	post := f[sep+1:]
	if len(post) < 3 {
		return Mount{}, fmt.Errorf("want filesystem type, source and options after \"-\", got %q", line)
	}
	var m Mount
	for i, d := range []struct {
		dst  *uint64
		what string
	}{{&m.ID, "mount ID"}, {&m.ParentID, "parent ID"}} {
		v, err := strconv.ParseUint(f[i], 10, 64)
		if err != nil {
			return Mount{}, fmt.Errorf("%s %q is not a number", d.what, f[i])
		}
		*d.dst = v
	}
	if !isMajMin(f[2]) {
		return Mount{}, fmt.Errorf("%q is not major:minor", f[2])
	}
	m.MajMin = f[2]
	var err error
	for _, d := range []struct {
		dst  *string
		src  string
		what string
	}{
		{&m.Root, f[3], "root"},
		{&m.MountPoint, f[4], "mount point"},
		{&m.FSType, post[0], "filesystem type"},
		{&m.Source, post[1], "source"},
	} {
		if *d.dst, err = unescape(d.src); err != nil {
			return Mount{}, fmt.Errorf("%s %q: %w", d.what, d.src, err)
		}
	}
	if m.Root == "" || m.MountPoint == "" || m.FSType == "" {
		return Mount{}, fmt.Errorf("empty root, mount point or type in %q", line)
	}
	return m, nil
}

// unescape decodes the kernel's \ooo octal escapes (seq_file's mangle).
func unescape(s string) (string, error) {
	i := strings.IndexByte(s, '\\')
	if i < 0 {
		return s, nil
	}
	var b strings.Builder
	b.Grow(len(s))
	for ; i >= 0; i = strings.IndexByte(s, '\\') {
		b.WriteString(s[:i])
		if i+4 > len(s) {
			return "", fmt.Errorf("truncated escape at byte %d", i)
		}
		v, err := strconv.ParseUint(s[i+1:i+4], 8, 8)
		if err != nil {
			return "", fmt.Errorf("bad escape %q", s[i:i+4])
		}
		b.WriteByte(byte(v))
		s = s[i+4:]
	}
	b.WriteString(s)
	return b.String(), nil
}

func isMajMin(s string) bool {
	maj, min, ok := strings.Cut(s, ":")
	return ok && isDigits(maj) && isDigits(min)
}

func isDigits(s string) bool {
	return s != "" && strings.Trim(s, "0123456789") == ""
}

// ByDevice maps each major:minor to its mount points, sorted and without
// duplicates (a filesystem mounted twice on one path by stacked mounts).
// Mounts that only a sandbox sees are left out, so a daemon running under
// systemd's hardening reports what an admin sees on the machine:
// self-binds (a directory bound onto its own place, as StateDirectory= and
// ReadWritePaths= do) and PrivateTmp='s private /tmp and /var/tmp.
func ByDevice(ms []Mount) map[string][]string {
	byID := make(map[uint64]*Mount, len(ms))
	for i := range ms {
		byID[ms[i].ID] = &ms[i]
	}
	by := make(map[string][]string)
	for i := range ms {
		m := &ms[i]
		if sandboxOnly(m, byID[m.ParentID]) {
			continue
		}
		by[m.MajMin] = append(by[m.MajMin], m.MountPoint)
	}
	for k, v := range by {
		slices.Sort(v)
		by[k] = slices.Compact(v)
	}
	return by
}

func sandboxOnly(m, parent *Mount) bool {
	if strings.Contains(m.Root, "/systemd-private-") {
		return true
	}
	if parent == nil || parent.MajMin != m.MajMin || m.Root == parent.Root {
		return false
	}
	rel, ok := strings.CutPrefix(m.Root, strings.TrimSuffix(parent.Root, "/")+"/")
	return ok && path.Join(parent.MountPoint, rel) == m.MountPoint
}

// parseBytes is Parse over a buffer, for the watcher.
func parseBytes(b []byte) ([]Mount, error) { return Parse(bytes.NewReader(b)) }
