package wire

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"
	"time"

	"github.com/diskd/diskd/pkg/disk"
)

// Format constants.
const (
	Magic      = "DSKD"
	Version    = 1
	HeaderSize = 48
	TagSize    = 16 // truncated HMAC-SHA256
	DigestSize = 8

	flagTagged = 1 << 0
)

// Limits. A receiver drops any datagram beyond them; a sender never makes one.
const (
	MaxDatagram     = 1400 // bytes of UDP payload, tag included
	MaxNodeName     = 64   // bytes: Linux HOST_NAME_MAX
	MaxQueryTargets = 16
	MaxAddrs        = 8
	MinInterval     = 100 * time.Millisecond
	MaxInterval     = time.Hour

	// Disk entry fields, in bytes of UTF-8.
	MaxDiskName   = 64
	MaxDevice     = 128
	MaxMajMin     = 16
	MaxUUID       = 64
	MaxLabel      = 256
	MaxType       = 32
	MaxMounts     = 16  // mountpoints per disk
	MaxMountPath  = 512 // bytes per mountpoint
	MaxDiskEntry  = 1200
	MaxChunks     = MaxDisks // chunks per generation: one disk each at worst
	MaxDisks      = 4096     // disks per generation (per peer)
	maxDisksChunk = 512      // decoder's array bound; 1400 bytes hold fewer anyway
)

// Type is a message type.
type Type uint8

// Message types.
const (
	TypeHeartbeat Type = 1
	TypeAnnounce  Type = 2
	TypeQuery     Type = 3
	TypeGoodbye   Type = 4
	TypeRequest   Type = 5 // keyed networks only (request.go)
	TypeReply     Type = 6
)

func (t Type) String() string {
	switch t {
	case TypeHeartbeat:
		return "heartbeat"
	case TypeAnnounce:
		return "announce"
	case TypeQuery:
		return "query"
	case TypeGoodbye:
		return "goodbye"
	case TypeRequest:
		return "request"
	case TypeReply:
		return "reply"
	case TypeRelay:
		return "relay"
	case TypeDelta:
		return "delta"
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// NodeID is a node ID as carried on the wire: disk.NodeID's 32 hex digits as
// 16 bytes.
type NodeID [16]byte

// ParseNodeID converts a domain node ID.
func ParseNodeID(id disk.NodeID) (NodeID, error) {
	var n NodeID
	if len(id) != 32 {
		return n, fmt.Errorf("node ID %q: want 32 hex digits", id)
	}
	if _, err := hex.Decode(n[:], []byte(id)); err != nil {
		return n, fmt.Errorf("node ID %q: %w", id, err)
	}
	return n, nil
}

// Domain returns the ID in the domain's form (lower-case hex).
func (n NodeID) Domain() disk.NodeID { return disk.NodeID(hex.EncodeToString(n[:])) }

func (n NodeID) String() string { return hex.EncodeToString(n[:]) }

// Digest summarises one inventory (see the package doc).
type Digest [DigestSize]byte

func (d Digest) String() string { return hex.EncodeToString(d[:]) }

// Header is the fixed part of every datagram.
type Header struct {
	Type       Type
	KeyID      uint8 // 0: untagged
	Node       NodeID
	Instance   uint64
	Seq        uint64
	Generation uint64
}

// NewInstance returns an instance ID for a sender starting at now: its
// start time in milliseconds in the high bits, so that instances of one
// node are ordered, and 16 random bits, so two starts within a millisecond
// still differ.
func NewInstance(now time.Time) uint64 {
	var b [2]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on Linux
	return uint64(now.UnixMilli())<<16 | uint64(binary.BigEndian.Uint16(b[:]))
}

// InstanceStart returns the start time an instance ID carries.
func InstanceStart(instance uint64) time.Time {
	return time.UnixMilli(int64(instance >> 16))
}

// Heartbeat says "alive, at this generation".
type Heartbeat struct {
	Name     string
	Digest   Digest
	Interval time.Duration
	Addrs    []netip.Addr // optional; receivers also know the source address
}

// Announce is one chunk of an inventory.
type Announce struct {
	Name   string
	Digest Digest // of the whole inventory
	Chunk  int
	Chunks int
	Disks  []Disk
	raw    [][]byte // each disk entry as received; the digest covers these
}

// Query asks the targets (every node when empty) for their inventories.
type Query struct {
	Targets []NodeID
}

// Packet is one decoded datagram: the header and the body its type has.
type Packet struct {
	Header
	Heartbeat *Heartbeat
	Announce  *Announce
	Query     *Query
	Request   *Request
	Reply     *Reply
	Relay     *Relay // relay.go
	Delta     *Delta // delta.go
	// A goodbye has no body.
}
