package gossip

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/diskd/diskd/pkg/disk"
	"github.com/diskd/diskd/pkg/wire"
	"github.com/fxamacker/cbor/v2"
)

// The gossip network's own messages (docs/protocol.md, "Beyond one link").
// Each is one type byte, then a CBOR map with integer keys; unknown keys are
// ignored, so the format grows like the datagrams' does.
const (
	msgNotice   byte = 1 // a claim about one origin, broadcast (UDP, retransmitted)
	msgFetchReq byte = 2 // "send me origin's inventory" (reliable channel)
	msgFetchRep byte = 3 // an inventory, whole (reliable channel)
)

// Limits of what a member may send us. A member holds the key, but a
// keyed peer gone bad must still not fill our memory.
const (
	MetaMax       = 512  // memberlist.MetaMaxSize
	MaxStateNodes = 4096 // entries in a push/pull digest table (= peer.DefaultConfig().MaxPeers)
	maxFetchReply = 8 << 20
)

var (
	encMode = must(cbor.CoreDetEncOptions().EncMode())
	decMode = wire.UntrustedDecMode(6, MaxStateNodes)
)

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// meta is what a member says of itself in its memberlist meta (at most
// MetaMax bytes; gossiped with its alive messages).
type meta struct {
	Name     string `cbor:"1,keyasint"`
	Instance uint64 `cbor:"2,keyasint"`
	Gen      uint64 `cbor:"3,keyasint"`
	Digest   []byte `cbor:"4,keyasint"`
	Interval uint64 `cbor:"5,keyasint,omitempty"` // ms; informative
}

// claim is one statement about an origin node: what a notice, a state
// entry or a member's meta says. Via is the member that vouches for it:
// the origin itself when the origin is a member, else the relay that hears
// it by multicast.
type claim struct {
	Origin   []byte `cbor:"1,keyasint"` // 16 bytes
	Name     string `cbor:"2,keyasint"`
	Instance uint64 `cbor:"3,keyasint"`
	Gen      uint64 `cbor:"4,keyasint"`
	Digest   []byte `cbor:"5,keyasint"`
	Via      []byte `cbor:"6,keyasint"` // 16 bytes: the vouching member's node ID
	Offline  bool   `cbor:"7,keyasint,omitempty"`
	// Addrs are a relayed origin's routable addresses (4 or 16 bytes
	// each, at most MaxAddrs), as its relay hears them; optional.
	Addrs [][]byte `cbor:"8,keyasint,omitempty"`
}

// MaxAddrs bounds the addresses a claim carries for its origin.
const MaxAddrs = 8

// state is a push/pull exchange's payload: a digest table, never
// inventories.
type state struct {
	Claims []claim `cbor:"1,keyasint"`
}

type fetchReq struct {
	Origin []byte `cbor:"1,keyasint"`
	From   []byte `cbor:"2,keyasint"` // the asker's node ID, to reply to
	// The asker's gossip address, for a server that does not list the
	// asker as a member yet (membership still spreading).
	Addr []byte `cbor:"3,keyasint,omitempty"`
	Port uint16 `cbor:"4,keyasint,omitempty"`
	// The generation wanted (optional): a member that is not the source
	// answers with it or a newer one, or holds the request until it has
	// it (at most holdMax).
	Instance uint64 `cbor:"5,keyasint,omitempty"`
	Gen      uint64 `cbor:"6,keyasint,omitempty"`
}

type fetchRep struct {
	Origin    []byte `cbor:"1,keyasint"`
	Name      string `cbor:"2,keyasint"`
	Instance  uint64 `cbor:"3,keyasint"`
	Gen       uint64 `cbor:"4,keyasint"`
	Inventory []byte `cbor:"5,keyasint"` // wire.Inventory.Whole
	Unknown   bool   `cbor:"6,keyasint,omitempty"`
	From      []byte `cbor:"7,keyasint,omitempty"` // the server's node ID
}

func encode(t byte, v any) []byte {
	return append([]byte{t}, must(encMode.Marshal(v))...)
}

func decode(b []byte, v any) error {
	if len(b) == 0 || b[0]>>5 != 5 {
		return errors.New("not a CBOR map")
	}
	return decMode.Unmarshal(b, v)
}

func nodeID(b []byte) (disk.NodeID, error) {
	if len(b) != 16 {
		return "", fmt.Errorf("node ID of %d bytes", len(b))
	}
	return wire.NodeID(b).Domain(), nil
}

func idBytes(id disk.NodeID) []byte {
	n, err := wire.ParseNodeID(id)
	if err != nil {
		return nil
	}
	return n[:]
}

// fact is a claim checked and converted.
type fact struct {
	origin   disk.NodeID
	via      disk.NodeID
	name     string
	instance uint64
	gen      uint64
	digest   wire.Digest
	offline  bool
	addrs    string // routable addresses, sorted, joined by ","
}

func (c *claim) check() (fact, error) {
	var f fact
	var err error
	if f.origin, err = nodeID(c.Origin); err != nil {
		return f, fmt.Errorf("origin: %w", err)
	}
	if f.via, err = nodeID(c.Via); err != nil {
		return f, fmt.Errorf("via: %w", err)
	}
	if err := wire.CheckName(c.Name); err != nil {
		return f, err
	}
	if len(c.Digest) != wire.DigestSize {
		return f, fmt.Errorf("digest of %d bytes", len(c.Digest))
	}
	if c.Instance == 0 {
		return f, errors.New("instance 0")
	}
	if len(c.Addrs) > MaxAddrs {
		return f, fmt.Errorf("%d addresses (at most %d)", len(c.Addrs), MaxAddrs)
	}
	as := make([]string, 0, len(c.Addrs))
	for _, b := range c.Addrs {
		a, ok := netip.AddrFromSlice(b)
		if !ok || !routable(a) {
			return f, fmt.Errorf("address %x: not a routable unicast address", b)
		}
		as = append(as, a.String())
	}
	f.addrs = joinAddrs(as)
	f.name, f.instance, f.gen, f.offline = c.Name, c.Instance, c.Gen, c.Offline
	copy(f.digest[:], c.Digest)
	return f, nil
}

func (f fact) claim() claim {
	c := claim{Origin: idBytes(f.origin), Name: f.name, Instance: f.instance, Gen: f.gen,
		Digest: append([]byte(nil), f.digest[:]...), Via: idBytes(f.via), Offline: f.offline}
	for _, s := range splitAddrs(f.addrs) {
		if a, err := netip.ParseAddr(s); err == nil {
			c.Addrs = append(c.Addrs, a.AsSlice())
		}
	}
	return c
}

// routable reports whether a is an address another subnet can use: a
// unicast address that is neither link-local nor loopback (private and
// ULA addresses are: a routed site uses them).
func routable(a netip.Addr) bool {
	return a.IsValid() && a.IsGlobalUnicast() && a.Zone() == ""
}

// routableAddrs keeps the routable addresses of as, unmapped, sorted,
// without repeats, at most MaxAddrs, joined by ",".
func routableAddrs(as []string) string {
	var out []string
	for _, s := range as {
		a, err := netip.ParseAddr(s)
		if err != nil {
			continue
		}
		if a = a.Unmap(); routable(a) && !slices.Contains(out, a.String()) {
			out = append(out, a.String())
		}
	}
	slices.Sort(out)
	if len(out) > MaxAddrs {
		out = out[:MaxAddrs]
	}
	return joinAddrs(out)
}

func joinAddrs(as []string) string { return strings.Join(as, ",") }

func splitAddrs(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

func decodeMeta(id disk.NodeID, b []byte) (fact, error) {
	var m meta
	if len(b) > MetaMax {
		return fact{}, fmt.Errorf("meta of %d bytes", len(b))
	}
	if err := decode(b, &m); err != nil {
		return fact{}, fmt.Errorf("meta: %w", err)
	}
	c := claim{Origin: idBytes(id), Via: idBytes(id), Name: m.Name, Instance: m.Instance, Gen: m.Gen, Digest: m.Digest}
	return c.check()
}
