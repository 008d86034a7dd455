// Package disk is diskd's domain model: block devices (Disk), the machines
// that hold them (Node), and the change events the store publishes. It does
// no I/O; every other package translates to and from these types.
package disk

import (
	"encoding/json"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"
)

// NodeID identifies one diskd installation. It is random, created on first
// start and kept in the state directory: 32 lower-case hex digits.
type NodeID string

// Key identifies one row of the network-wide table: one disk, wherever it
// is attached. The primary row of an identity is keyed by the identity
// itself (see Identity); a second placement of the same identity present
// at the same time (a cloned filesystem after dd) gets its own row, keyed
// CloneKey(id, node, name), so neither overwrites the other. Kernel names,
// device paths and nodes are attributes of a row, not its key.
type Key string

// CloneKey is the key of the row for a second, simultaneous placement of
// identity id: "ID@NODE/KERNELNAME".
func CloneKey(id string, node NodeID, name string) Key {
	return Key(id + "@" + string(node) + "/" + name)
}

// IsClone reports whether k is a clone row's key.
func (k Key) IsClone() bool { return strings.Contains(string(k), "@") }

// Identity prefixes. An identity is what a disk carries, not where it sits.
const (
	IdentityUUID     = "uuid:"
	IdentityPartUUID = "partuuid:"
	IdentityWeak     = "weak:"
)

// Identity returns d's identity: "uuid:" and the filesystem UUID in lower
// case; else "partuuid:" and the partition UUID in lower case; else, for a
// device that carries neither (an unformatted disk, a whole disk with a
// partition table), the weak "weak:NODE/KERNELNAME/SIZE", which is only
// as stable as the device's place. UUIDs are lowered because blkid prints
// them in either case depending on the filesystem. It is a pure function of
// reported fields, so every node (and a peer running older code) derives
// the same identity from the same report.
func Identity(d *Disk) string {
	switch {
	case d.UUID != "":
		return IdentityUUID + strings.ToLower(d.UUID)
	case d.PartUUID != "":
		return IdentityPartUUID + strings.ToLower(d.PartUUID)
	}
	return IdentityWeak + string(d.Node) + "/" + d.Name + "/" + strconv.FormatUint(d.Size, 10)
}

// Weak reports whether d's identity is the weak, place-bound form.
func (d *Disk) Weak() bool { return strings.HasPrefix(d.ID, IdentityWeak) }

// Disk is one block device as seen by the node that has it attached.
type Disk struct {
	// ID is the disk's identity (see Identity), filled in by the store.
	ID        string   `json:"id"`
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
	// NotUnique: two or more devices carrying this identity are present at
	// once (a cloned filesystem); each has a row of its own.
	NotUnique bool `json:"not_unique,omitempty"`
	// Row is the key of the store's row that holds this disk; set by the
	// store, not sent anywhere as JSON (D-Bus object paths are built from it).
	Row Key `json:"-"`
}

// Key returns the key of the disk's row: Row when the store set it, else
// the identity (the key of a primary row).
func (d *Disk) Key() Key {
	if d.Row != "" {
		return d.Row
	}
	if d.ID != "" {
		return Key(d.ID)
	}
	return Key(Identity(d))
}

// Sighting is one placement of a disk in its history: on which node, under
// which kernel name and device path, from when until when.
type Sighting struct {
	Node      NodeID    `json:"node_id"`
	Host      string    `json:"host"`
	Name      string    `json:"name"`
	Device    string    `json:"device"`
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
}

// MaxHistoryDisks bounds one history answer: the first this many disks a
// query names (present first, then the most recently seen). A label shared
// by thousands of disks (a flood of made-up ones) still gets a bounded
// reply; a UUID names one disk.
const MaxHistoryDisks = 100

// History is one disk (a row of the table) with its sightings, newest
// first. The first sighting is the disk's current place when it is present.
type History struct {
	Disk      Disk       `json:"disk"`
	Sightings []Sighting `json:"sightings"`
}

// SameDevice reports whether a and b describe the same device state,
// ignoring the fields the store maintains (identity, which derives from
// the fields compared, presence, uniqueness and times). The store uses it
// to publish only real changes.
func SameDevice(a, b *Disk) bool {
	return a.Node == b.Node && a.Host == b.Host && a.Name == b.Name &&
		a.Device == b.Device && a.MajMin == b.MajMin && a.UUID == b.UUID &&
		a.PartUUID == b.PartUUID && a.Label == b.Label && a.PartLabel == b.PartLabel &&
		a.Type == b.Type && a.Usage == b.Usage && a.Size == b.Size &&
		a.ReadOnly == b.ReadOnly && a.Removable == b.Removable &&
		slices.Equal(a.Mounts, b.Mounts)
}

// Matches reports whether q names this disk: its label, UUID, PARTUUID,
// partition label, device path or identity. UUIDs compare
// case-insensitively, as blkid prints them in either case depending on the
// filesystem.
func (d *Disk) Matches(q string) bool {
	if q == "" {
		return false
	}
	return d.Label == q || d.PartLabel == q || d.Device == q || d.ID == q ||
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
	// Reach says how this node hears the peer (see Reach). In JSON a
	// legacy node is "via": "legacy", as before Reach said it.
	Reach Reach `json:"reach,omitempty"`
}

// Reach says how this node hears a peer: its paths joined by ", ", each
// "multicast", "gossip", "gossip via NAME" (a gossip member relays the
// peer from its link), "multicast via NAME" (a relay on our link announces
// it) or "legacy" (an original Perl diskd heard by the legacy bridge).
// Empty means multicast only: what a daemon without gossip or a legacy
// bridge knows, and what a restarted daemon knows of a peer until it
// hears it again.
type Reach string

// Paths.
const (
	ReachMulticast Reach = "multicast"
	ReachGossip    Reach = "gossip"
	ReachLegacy    Reach = "legacy"
)

// ReachVia is the path through a relay: kind is "multicast" or "gossip",
// relay the relay's name.
func ReachVia(kind Reach, relay string) Reach { return kind + " via " + Reach(relay) }

// JoinReach joins paths.
func JoinReach(paths ...Reach) Reach {
	var b strings.Builder
	for i, p := range paths {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(string(p))
	}
	return Reach(b.String())
}

// Legacy reports whether the peer is heard by the legacy bridge.
func (r Reach) Legacy() bool { return r == ReachLegacy }

// FirstHand reports whether the peer is heard directly (multicast on our
// link, or as a gossip member), not only through a relay or the legacy
// bridge: only then are its addresses the ones it sends from.
func (r Reach) FirstHand() bool {
	if r == "" {
		return true
	}
	for p := range strings.SplitSeq(string(r), ", ") {
		if Reach(p) == ReachMulticast || Reach(p) == ReachGossip {
			return true
		}
	}
	return false
}

// String is the form peers shows: the paths, "multicast" when empty.
func (r Reach) String() string {
	if r == "" {
		return string(ReachMulticast)
	}
	return string(r)
}

// nodeJSON is Node's JSON form: the fields in their order, "via" where it
// was before Reach took its place (kept for readers of the earlier form,
// and for state files written by it).
type nodeJSON struct {
	ID        NodeID    `json:"node_id"`
	Name      string    `json:"name"`
	Addresses []string  `json:"addresses"`
	Local     bool      `json:"local"`
	Online    bool      `json:"online"`
	LastSeen  time.Time `json:"last_seen"`
	Disks     int       `json:"disks"`
	Via       string    `json:"via,omitempty"`
	Reach     Reach     `json:"reach,omitempty"`
}

// MarshalJSON writes a node as it was written before Reach and Via were
// one field: a legacy node as "via": "legacy" without a reach.
func (n Node) MarshalJSON() ([]byte, error) {
	j := n.jsonFields()
	if n.Reach.Legacy() {
		j.Via, j.Reach = string(ReachLegacy), ""
	}
	return json.Marshal(j)
}

// UnmarshalJSON reads a node in either form ("via": "legacy" without a
// reach is the earlier form of a legacy node).
func (n *Node) UnmarshalJSON(b []byte) error {
	var j nodeJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*n = Node{ID: j.ID, Name: j.Name, Addresses: j.Addresses, Local: j.Local, Online: j.Online,
		LastSeen: j.LastSeen, Disks: j.Disks, Reach: j.Reach}
	if j.Via == string(ReachLegacy) && n.Reach == "" {
		n.Reach = ReachLegacy
	}
	return nil
}

func (n Node) jsonFields() nodeJSON {
	return nodeJSON{ID: n.ID, Name: n.Name, Addresses: n.Addresses, Local: n.Local, Online: n.Online,
		LastSeen: n.LastSeen, Disks: n.Disks, Reach: n.Reach}
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
