package wire

import (
	"errors"
	"strings"
	"unicode/utf8"

	"github.com/diskd/diskd/pkg/disk"
)

// Disk is one disk entry as carried in an announce: the fields of
// disk.Disk a peer needs. The node and host come from the datagram; the
// store keeps presence and times itself.
type Disk struct {
	Name      string   `cbor:"1,keyasint"`
	Device    string   `cbor:"2,keyasint,omitempty"`
	MajMin    string   `cbor:"3,keyasint,omitempty"`
	UUID      string   `cbor:"4,keyasint,omitempty"`
	PartUUID  string   `cbor:"5,keyasint,omitempty"`
	Label     string   `cbor:"6,keyasint,omitempty"`
	PartLabel string   `cbor:"7,keyasint,omitempty"`
	Type      string   `cbor:"8,keyasint,omitempty"`
	Usage     string   `cbor:"9,keyasint,omitempty"`
	Size      uint64   `cbor:"10,keyasint,omitempty"`
	ReadOnly  bool     `cbor:"11,keyasint,omitempty"`
	Removable bool     `cbor:"12,keyasint,omitempty"`
	Mounts    []string `cbor:"13,keyasint,omitempty"`
}

// ToDisk returns the domain form, owned by node.
func (d *Disk) ToDisk(node disk.NodeID, host string) disk.Disk {
	return disk.Disk{
		Node: node, Host: host, Name: d.Name, Device: d.Device, MajMin: d.MajMin,
		UUID: d.UUID, PartUUID: d.PartUUID, Label: d.Label, PartLabel: d.PartLabel,
		Type: d.Type, Usage: d.Usage, Size: d.Size, ReadOnly: d.ReadOnly,
		Removable: d.Removable, Mounts: append([]string(nil), d.Mounts...),
	}
}

// errSkip marks a disk a sender cannot represent (an identifier over its
// limit: cutting it would make it name something else).
var errSkip = errors.New("identifier over its limit")

// fromDisk converts a local disk for sending. Descriptive text over its
// limit is cut at a UTF-8 boundary, and mountpoints over theirs or with a
// control character are left out (trimmed reports either); a disk whose
// name, device, major:minor or UUIDs exceed their limits or hold a control
// character is refused with errSkip. Labels keep their control
// characters; their invalid UTF-8 becomes U+FFFD (CBOR text must be
// UTF-8). Fitting the entry into MaxDiskEntry is the encoder's job (it
// drops trailing mountpoints).
func fromDisk(d *disk.Disk) (w Disk, trimmed bool, err error) {
	w = Disk{Name: d.Name, Device: d.Device, MajMin: d.MajMin, UUID: d.UUID,
		PartUUID: d.PartUUID, Size: d.Size, ReadOnly: d.ReadOnly, Removable: d.Removable}
	for _, f := range []struct {
		v   string
		max int
	}{{d.Name, MaxDiskName}, {d.Device, MaxDevice}, {d.MajMin, MaxMajMin}, {d.UUID, MaxUUID}, {d.PartUUID, MaxUUID}} {
		if len(f.v) > f.max || hasControl(f.v) {
			return w, false, errSkip
		}
	}
	if w.Name == "" || strings.IndexByte(w.Name, '/') >= 0 {
		return w, false, errSkip
	}
	cut := func(s string, max int) string {
		s = strings.ToValidUTF8(strings.ReplaceAll(s, "\x00", ""), "\uFFFD")
		if len(s) <= max {
			return s
		}
		trimmed = true
		s = s[:max]
		for len(s) > 0 && !utf8.ValidString(s) {
			s = s[:len(s)-1]
		}
		return s
	}
	w.Label = cut(d.Label, MaxLabel)
	w.PartLabel = cut(d.PartLabel, MaxLabel)
	w.Type = cut(d.Type, MaxType)
	w.Usage = cut(d.Usage, MaxType)
	for _, f := range []*string{&w.Type, &w.Usage} {
		if hasControl(*f) {
			*f, trimmed = "", true
		}
	}
	for _, m := range d.Mounts {
		if len(w.Mounts) == MaxMounts || len(m) > MaxMountPath || hasControl(m) {
			trimmed = true
			continue
		}
		w.Mounts = append(w.Mounts, m)
	}
	return w, trimmed, nil
}

// validate checks a received entry against the limits. Names, paths and
// identifiers with a control character (hasControl) drop the datagram as
// ReasonControlChar; labels may hold any character a real disk's label
// holds (but NUL), and are escaped where they are printed.
func (d *Disk) validate() error {
	if d.Name == "" || strings.IndexByte(d.Name, '/') >= 0 {
		return drop(ReasonBadField, "disk name %q", d.Name)
	}
	for _, f := range []struct {
		name  string
		v     string
		max   int
		label bool
	}{
		{"name", d.Name, MaxDiskName, false}, {"device", d.Device, MaxDevice, false}, {"majmin", d.MajMin, MaxMajMin, false},
		{"uuid", d.UUID, MaxUUID, false}, {"partuuid", d.PartUUID, MaxUUID, false}, {"label", d.Label, MaxLabel, true},
		{"partlabel", d.PartLabel, MaxLabel, true}, {"type", d.Type, MaxType, false}, {"usage", d.Usage, MaxType, false},
	} {
		if len(f.v) > f.max {
			return drop(ReasonBadField, "disk %q: %s longer than %d bytes", d.Name, f.name, f.max)
		}
		if strings.IndexByte(f.v, 0) >= 0 {
			return drop(ReasonBadField, "disk %q: NUL in %s", d.Name, f.name)
		}
		if !f.label && hasControl(f.v) {
			return drop(ReasonControlChar, "disk %q: control character in %s", d.Name, f.name)
		}
	}
	if len(d.Mounts) > MaxMounts {
		return drop(ReasonBadField, "disk %q: more than %d mountpoints", d.Name, MaxMounts)
	}
	for _, m := range d.Mounts {
		if len(m) > MaxMountPath || strings.IndexByte(m, 0) >= 0 {
			return drop(ReasonBadField, "disk %q: bad mountpoint", d.Name)
		}
		if hasControl(m) {
			return drop(ReasonControlChar, "disk %q: control character in a mountpoint", d.Name)
		}
	}
	return nil
}
