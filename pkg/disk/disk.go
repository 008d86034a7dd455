// Package disk is diskd's domain model: block devices (Disk), the machines
// that hold them (Node), and the change events the store publishes. It does
// no I/O; every other package translates to and from these types.
package disk

import (
	"path"
	"slices"
	"strings"
	"time"
)

// NodeID identifies one diskd installation. It is random, created on first
// start and kept in the state directory: 32 lower-case hex digits.
type NodeID string

// Key identifies one disk in the network-wide table: a kernel device name
// on a node. The same filesystem moved to another machine is a new key with
// the same UUID, which is how "where" finds it.
type Key struct {
	Node NodeID
	Name string // kernel name, e.g. "loop3", "sda1"
}

func (k Key) String() string { return string(k.Node) + "/" + k.Name }

// Disk is one block device as seen by the node that has it attached.
type Disk struct {
	Node      NodeID   `json:"node_id"`
	Host      string   `json:"host"`   // node name at the time it was seen
	Name      string   `json:"name"`   // kernel name
	Device    string   `json:"device"` // /dev path
	MajMin    string   `json:"majmin,omitempty"`
	UUID      string   `json:"uuid,omitempty"`
	PartUUID  string   `json:"partuuid,omitempty"`
	Label     string   `json:"label,omitempty"`
	PartLabel string   `json:"partlabel,omitempty"`
	Type      string   `json:"type,omitempty"`
	Usage     string   `json:"usage,omitempty"`
	Size      uint64   `json:"size"`
	ReadOnly  bool     `json:"read_only"`
	Removable bool     `json:"removable"`
	Mounts    []string `json:"mountpoints"`

	// Maintained by the store, not by whoever reports the disk.
	Present   bool      `json:"present"`
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
}

// Key returns the disk's table key.
func (d *Disk) Key() Key { return Key{Node: d.Node, Name: d.Name} }

// SameDevice reports whether a and b describe the same device state,
// ignoring the fields the store maintains (presence and times). The store
// uses it to publish only real changes.
func SameDevice(a, b *Disk) bool {
	return a.Node == b.Node && a.Host == b.Host && a.Name == b.Name &&
		a.Device == b.Device && a.MajMin == b.MajMin && a.UUID == b.UUID &&
		a.PartUUID == b.PartUUID && a.Label == b.Label && a.PartLabel == b.PartLabel &&
		a.Type == b.Type && a.Usage == b.Usage && a.Size == b.Size &&
		a.ReadOnly == b.ReadOnly && a.Removable == b.Removable &&
		slices.Equal(a.Mounts, b.Mounts)
}

// Matches reports whether q names this disk: its label, UUID, PARTUUID,
// partition label or device path. UUIDs compare case-insensitively, as
// blkid prints them in either case depending on the filesystem.
func (d *Disk) Matches(q string) bool {
	if q == "" {
		return false
	}
	return d.Label == q || d.PartLabel == q || d.Device == q ||
		(d.UUID != "" && strings.EqualFold(d.UUID, q)) ||
		(d.PartUUID != "" && strings.EqualFold(d.PartUUID, q))
}

// Node is one machine running diskd, this one or a peer.
type Node struct {
	ID        NodeID    `json:"node_id"`
	Name      string    `json:"name"`
	Addresses []string  `json:"addresses"`
	Local     bool      `json:"local"`
	Online    bool      `json:"online"`
	LastSeen  time.Time `json:"last_seen"`
	Disks     int       `json:"disks"` // present disks, filled in by the store
	// Reach says how this node hears the peer: "multicast", "gossip",
	// "gossip via NAME" (a relay on the peer's link), "multicast via NAME"
	// (a relay on ours), several joined by ", ". Empty: multicast only
	// (what a daemon without gossip knows).
	Reach string `json:"reach,omitempty"`
}

// Filter selects device paths: a device is reported when it matches one of
// Include (or Include is empty) and none of Exclude. Patterns are path.Match
// globs over the /dev path.
type Filter struct {
	Include []string
	Exclude []string
}

// Allows reports whether the filter lets device through.
func (f Filter) Allows(device string) bool {
	if len(f.Include) > 0 && !matchAny(f.Include, device) {
		return false
	}
	return !matchAny(f.Exclude, device)
}

func matchAny(globs []string, s string) bool {
	for _, g := range globs {
		if ok, _ := path.Match(g, s); ok {
			return true
		}
	}
	return false
}

// EventKind says what happened to an object in the table.
type EventKind int

const (
	// DiskAdded: a key not in the table before (not merely back from history).
	DiskAdded EventKind = iota + 1
	// DiskChanged: any field changed, including Present going true or false.
	DiskChanged
	// DiskForgotten: the key left the table entirely (history eviction).
	DiskForgotten
	// NodeChanged: a node appeared, or its name, addresses or online state changed.
	NodeChanged
	// NodeForgotten: a node left the table (eviction of old offline peers).
	NodeForgotten
)

func (k EventKind) String() string {
	switch k {
	case DiskAdded:
		return "added"
	case DiskChanged:
		return "changed"
	case DiskForgotten:
		return "forgotten"
	case NodeChanged:
		return "node-changed"
	case NodeForgotten:
		return "node-forgotten"
	}
	return "unknown"
}

// Event is one change published by the store. Exactly one of Disk and Node
// is set; it is a copy the receiver owns.
type Event struct {
	Kind EventKind
	Time time.Time
	Disk *Disk
	Node *Node
}
