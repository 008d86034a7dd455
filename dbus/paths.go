package dbus

import (
	"fmt"
	"strings"

	godbus "github.com/godbus/dbus/v5"

	"github.com/diskd/diskd/pkg/disk"
)

// EscapePathElement makes s usable as one object path element the way
// UDisks2 does: bytes in [A-Za-z0-9] stay, every other byte (including
// '_') becomes '_' and two lower-case hex digits. s must not be empty.
func EscapePathElement(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isAlnum(c) {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "_%02x", c)
		}
	}
	return b.String()
}

// UnescapePathElement reverses EscapePathElement.
func UnescapePathElement(e string) (string, error) {
	var b strings.Builder
	b.Grow(len(e))
	for i := 0; i < len(e); i++ {
		c := e[i]
		switch {
		case isAlnum(c):
			b.WriteByte(c)
		case c == '_' && i+2 < len(e) && isHex(e[i+1]) && isHex(e[i+2]):
			b.WriteByte(unhex(e[i+1])<<4 | unhex(e[i+2]))
			i += 2
		default:
			return "", fmt.Errorf("path element %q: bad escape at byte %d", e, i)
		}
	}
	return b.String(), nil
}

// MachinePath is the object path of a machine.
func MachinePath(id disk.NodeID) godbus.ObjectPath {
	return godbus.ObjectPath(MachinesPath + "/" + EscapePathElement(string(id)))
}

// BlockPath is the object path of a block device: its row key (see
// disk.Key: the disk's identity, such as "uuid:1a2b-3c4d", or for a clone
// the identity, "@", node ID, "/", kernel name), escaped as one element. It
// follows the disk, not the device name: the same disk keeps its path
// across reattaching, another disk taking its kernel name, and restarts.
func BlockPath(k disk.Key) godbus.ObjectPath {
	return godbus.ObjectPath(BlockDevicesPath + "/" + EscapePathElement(string(k)))
}

// KeyFromBlockPath returns the row key a block device path names.
func KeyFromBlockPath(p godbus.ObjectPath) (disk.Key, error) {
	rest, ok := strings.CutPrefix(string(p), BlockDevicesPath+"/")
	if !ok || rest == "" || strings.Contains(rest, "/") {
		return "", fmt.Errorf("%q is not a block device object path", p)
	}
	k, err := UnescapePathElement(rest)
	if err != nil {
		return "", err
	}
	return disk.Key(k), nil
}

// NodeFromMachinePath returns the node ID a machine path names.
func NodeFromMachinePath(p godbus.ObjectPath) (disk.NodeID, error) {
	rest, ok := strings.CutPrefix(string(p), MachinesPath+"/")
	if !ok || rest == "" || strings.Contains(rest, "/") {
		return "", fmt.Errorf("%q is not a machine object path", p)
	}
	id, err := UnescapePathElement(rest)
	if err != nil {
		return "", err
	}
	return disk.NodeID(id), nil
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f'
}

func unhex(c byte) byte {
	if c <= '9' {
		return c - '0'
	}
	return c - 'a' + 10
}
