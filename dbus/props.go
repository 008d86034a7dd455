package dbus

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"time"

	godbus "github.com/godbus/dbus/v5"
	"golang.org/x/sys/unix"

	"github.com/diskd/diskd/pkg/disk"
)

// Props are one interface's properties; Ifaces are an object's interfaces
// with their properties, the shape of GetManagedObjects and InterfacesAdded.
type (
	Props  = map[string]godbus.Variant
	Ifaces = map[string]Props
)

// HasFilesystem reports whether d's object carries the Filesystem
// interface: it holds a filesystem, or something is mounted from it.
func HasFilesystem(d *disk.Disk) bool {
	switch {
	case len(d.Mounts) > 0:
		return true
	case d.Usage != "":
		return d.Usage == disk.UsageFilesystem
	}
	// Peers' and remembered disks may carry no USAGE.
	return disk.UsageForType(d.Type) == disk.UsageFilesystem
}

// BlockInterfaces returns a block device object's interfaces.
func BlockInterfaces(d *disk.Disk) Ifaces {
	out := Ifaces{BlockInterface: Props{
		"Id":           godbus.MakeVariant(d.ID),
		"NotUnique":    godbus.MakeVariant(d.NotUnique),
		"Machine":      godbus.MakeVariant(MachinePath(d.Node)),
		"HostName":     godbus.MakeVariant(d.Host),
		"KernelName":   godbus.MakeVariant(d.Name),
		"Device":       godbus.MakeVariant(cBytes(d.Device)),
		"DeviceNumber": godbus.MakeVariant(devNumber(d.MajMin)),
		"Size":         godbus.MakeVariant(d.Size),
		"ReadOnly":     godbus.MakeVariant(d.ReadOnly),
		"Removable":    godbus.MakeVariant(d.Removable),
		"IdUsage":      godbus.MakeVariant(d.Usage),
		"IdType":       godbus.MakeVariant(d.Type),
		"IdLabel":      godbus.MakeVariant(d.Label),
		"IdUUID":       godbus.MakeVariant(d.UUID),
		"PartUUID":     godbus.MakeVariant(d.PartUUID),
		"PartLabel":    godbus.MakeVariant(d.PartLabel),
		"Present":      godbus.MakeVariant(d.Present),
		"FirstSeen":    godbus.MakeVariant(Usec(d.FirstSeen)),
		"LastSeen":     godbus.MakeVariant(Usec(d.LastSeen)),
	}}
	if HasFilesystem(d) {
		mps := make([][]byte, len(d.Mounts))
		for i, m := range d.Mounts {
			mps[i] = cBytes(m)
		}
		out[FilesystemInterface] = Props{"MountPoints": godbus.MakeVariant(mps)}
	}
	return out
}

// MachineProperties returns a machine object's Machine properties.
func MachineProperties(n *disk.Node) Props {
	addrs := n.Addresses
	if addrs == nil {
		addrs = []string{}
	}
	return Props{
		"NodeId":    godbus.MakeVariant(string(n.ID)),
		"Name":      godbus.MakeVariant(n.Name),
		"Addresses": godbus.MakeVariant(addrs),
		"Local":     godbus.MakeVariant(n.Local),
		"Online":    godbus.MakeVariant(n.Online),
		"LastSeen":  godbus.MakeVariant(Usec(n.LastSeen)),
		"Disks":     godbus.MakeVariant(uint32(max(n.Disks, 0))),
		"Reach":     godbus.MakeVariant(string(n.Reach)),
	}
}

// ManagerProperties returns the Manager object's properties.
func ManagerProperties(version string, local *disk.Node) Props {
	return Props{
		"Version":  godbus.MakeVariant(version),
		"NodeId":   godbus.MakeVariant(string(local.ID)),
		"NodeName": godbus.MakeVariant(local.Name),
	}
}

// DiskFromInterfaces rebuilds a disk from a block device object's
// interfaces. Missing properties stay zero; a property of the wrong type
// is an error.
func DiskFromInterfaces(ifs Ifaces) (disk.Disk, error) {
	b, ok := ifs[BlockInterface]
	if !ok {
		return disk.Disk{}, fmt.Errorf("object has no %s interface", BlockInterface)
	}
	r := reader{props: b, iface: BlockInterface}
	var d disk.Disk
	machine := getProp[godbus.ObjectPath](&r, "Machine")
	if machine != "" {
		id, err := NodeFromMachinePath(machine)
		if err != nil && r.err == nil {
			r.err = fmt.Errorf("%s.Machine: %w", BlockInterface, err)
		}
		d.Node = id
	}
	d.ID = getProp[string](&r, "Id")
	d.NotUnique = getProp[bool](&r, "NotUnique")
	d.Host = getProp[string](&r, "HostName")
	d.Name = getProp[string](&r, "KernelName")
	d.Device = fromCBytes(getProp[[]byte](&r, "Device"))
	d.MajMin = majMin(getProp[uint64](&r, "DeviceNumber"))
	d.Size = getProp[uint64](&r, "Size")
	d.ReadOnly = getProp[bool](&r, "ReadOnly")
	d.Removable = getProp[bool](&r, "Removable")
	d.Usage = getProp[string](&r, "IdUsage")
	d.Type = getProp[string](&r, "IdType")
	d.Label = getProp[string](&r, "IdLabel")
	d.UUID = getProp[string](&r, "IdUUID")
	d.PartUUID = getProp[string](&r, "PartUUID")
	d.PartLabel = getProp[string](&r, "PartLabel")
	d.Present = getProp[bool](&r, "Present")
	d.FirstSeen = FromUsec(getProp[uint64](&r, "FirstSeen"))
	d.LastSeen = FromUsec(getProp[uint64](&r, "LastSeen"))
	d.Mounts = []string{} // never nil, as the store keeps it
	if fs, ok := ifs[FilesystemInterface]; ok {
		fr := reader{props: fs, iface: FilesystemInterface}
		for _, m := range getProp[[][]byte](&fr, "MountPoints") {
			d.Mounts = append(d.Mounts, fromCBytes(m))
		}
		if fr.err != nil && r.err == nil {
			r.err = fr.err
		}
	}
	return d, r.err
}

// NodeFromProperties rebuilds a node from a machine object's properties.
func NodeFromProperties(p Props) (disk.Node, error) {
	r := reader{props: p, iface: MachineInterface}
	n := disk.Node{
		ID:        disk.NodeID(getProp[string](&r, "NodeId")),
		Name:      getProp[string](&r, "Name"),
		Addresses: getProp[[]string](&r, "Addresses"),
		Local:     getProp[bool](&r, "Local"),
		Online:    getProp[bool](&r, "Online"),
		LastSeen:  FromUsec(getProp[uint64](&r, "LastSeen")),
		Disks:     int(getProp[uint32](&r, "Disks")),
		Reach:     disk.Reach(getProp[string](&r, "Reach")), // (absent from a daemon before it: "")
	}
	if len(n.Addresses) == 0 {
		n.Addresses = nil // as the store keeps "none"
	}
	return n, r.err
}

type reader struct {
	props Props
	iface string
	err   error
}

func getProp[T any](r *reader, name string) T {
	var zero T
	v, ok := r.props[name]
	if !ok {
		return zero
	}
	t, ok := v.Value().(T)
	if !ok {
		if r.err == nil {
			r.err = fmt.Errorf("%s.%s: got %s, want %s", r.iface, name, v.Signature(), godbus.SignatureOf(zero))
		}
		return zero
	}
	return t
}

// Usec is t in microseconds since the epoch; 0 for the zero time.
func Usec(t time.Time) uint64 {
	if t.IsZero() || t.UnixMicro() <= 0 {
		return 0
	}
	return uint64(t.UnixMicro())
}

// FromUsec reverses Usec: 0 is the zero time.
func FromUsec(us uint64) time.Time {
	if us == 0 {
		return time.Time{}
	}
	return time.UnixMicro(int64(us))
}

// CBytes is s NUL-terminated, as UDisks2 encodes paths.
func CBytes(s string) []byte { return cBytes(s) }

// FromCBytes reverses CBytes.
func FromCBytes(b []byte) string { return fromCBytes(b) }

func cBytes(s string) []byte {
	b := make([]byte, len(s)+1)
	copy(b, s)
	return b
}

func fromCBytes(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// devNumber turns "MAJ:MIN" into a dev_t; 0 when absent or malformed.
func devNumber(mm string) uint64 {
	a, b, ok := strings.Cut(mm, ":")
	if !ok {
		return 0
	}
	ma, err1 := strconv.ParseUint(a, 10, 32)
	mi, err2 := strconv.ParseUint(b, 10, 32)
	if err1 != nil || err2 != nil {
		return 0
	}
	return unix.Mkdev(uint32(ma), uint32(mi))
}

func majMin(dev uint64) string {
	if dev == 0 {
		return ""
	}
	return fmt.Sprintf("%d:%d", unix.Major(dev), unix.Minor(dev))
}
