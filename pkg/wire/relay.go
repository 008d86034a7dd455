package wire

import (
	"fmt"
	"net/netip"

	"github.com/fxamacker/cbor/v2"
)

// TypeRelay is a relayed announce: a node that hears another one by a
// path other than this link (the gossip network) announces that node's
// inventory here on its behalf. The header is the relay's (its node ID,
// instance, sequence number, tag); the body names the origin. A receiver
// that does not know the type drops it as unknown_type, so older daemons
// are unaffected (docs/protocol.md, "Relayed announce").
const TypeRelay Type = 7

// Relay is one chunk of an origin's inventory, or (Offline) the relay's
// word that it no longer hears the origin.
type Relay struct {
	Origin     NodeID
	Instance   uint64 // the origin's
	Generation uint64 // the origin's
	Offline    bool
	// Addrs are the origin's routable addresses as the relay hears them
	// (optional, at most MaxRelayAddrs).
	Addrs []netip.Addr
	// Announce holds the chunk as the origin's own announce would: Name
	// is the origin's name.
	Announce Announce
}

type relayBody struct {
	Origin     []byte            `cbor:"1,keyasint"`
	Instance   uint64            `cbor:"2,keyasint"`
	Generation uint64            `cbor:"3,keyasint"`
	Name       string            `cbor:"4,keyasint"`
	Digest     []byte            `cbor:"5,keyasint"`
	Chunk      uint64            `cbor:"6,keyasint"`
	Chunks     uint64            `cbor:"7,keyasint"`
	Disks      []cbor.RawMessage `cbor:"8,keyasint"`
	Offline    bool              `cbor:"9,keyasint,omitempty"`
	Addrs      [][]byte          `cbor:"10,keyasint,omitempty"`
}

// MaxRelayAddrs bounds the addresses a relayed announce carries.
const MaxRelayAddrs = 8

// AddrStrings returns Addrs as text, nil when there are none (a node's
// addresses are then left as they were).
func (r *Relay) AddrStrings() []string {
	if len(r.Addrs) == 0 {
		return nil
	}
	out := make([]string, len(r.Addrs))
	for i, a := range r.Addrs {
		out[i] = a.String()
	}
	return out
}

// Relay encodes origin's inventory (inv; nil with offline) as relayed
// announce datagrams of at most MaxDatagram bytes. gen is the relay's own
// generation, as in every header. addrs are the origin's routable
// addresses: what receivers drop (not routable unicast) is left out, and
// beyond MaxRelayAddrs.
func (e *Encoder) Relay(gen uint64, origin NodeID, instance, generation uint64, name string, inv *Inventory, offline bool, addrs []netip.Addr) [][]byte {
	name = clipName(name)
	if inv == nil || offline {
		inv = NewInventory(nil)
	}
	base := relayBody{Origin: origin[:], Instance: instance, Generation: generation, Name: name,
		Digest: inv.digest[:], Offline: offline}
	for _, a := range addrs {
		if a = a.Unmap(); relayAddrOK(a) && len(base.Addrs) < MaxRelayAddrs {
			base.Addrs = append(base.Addrs, a.AsSlice())
		}
	}
	probe := base
	probe.Chunk, probe.Chunks, probe.Disks = 65535, 65535, []cbor.RawMessage{}
	budget := MaxDatagram - HeaderSize - TagSize - len(must(encMode.Marshal(probe))) - 2
	chunks := inv.chunks(budget)
	out := make([][]byte, len(chunks))
	for i, c := range chunks {
		b := base
		b.Chunk, b.Chunks, b.Disks = uint64(i), uint64(len(chunks)), c
		out[i] = e.seal(TypeRelay, gen, b)
	}
	return out
}

// decodeRelay decodes a relayed announce's body with an announce's checks.
func decodeRelay(h Header, body []byte) (*Packet, error) {
	if len(body) == 0 || body[0]>>5 != 5 {
		return nil, drop(ReasonBadBody, "relay body is not a map")
	}
	var rb relayBody
	if err := decMode.Unmarshal(body, &rb); err != nil {
		return nil, &DropError{ReasonBadBody, fmt.Errorf("relay: %w", err)}
	}
	if len(rb.Origin) != len(NodeID{}) {
		return nil, drop(ReasonBadField, "relay origin of %d bytes", len(rb.Origin))
	}
	if rb.Instance == 0 {
		return nil, drop(ReasonBadField, "relay of instance 0")
	}
	if err := checkName(rb.Name); err != nil {
		return nil, err
	}
	if len(rb.Digest) != DigestSize {
		return nil, drop(ReasonBadField, "relay digest of %d bytes", len(rb.Digest))
	}
	if rb.Chunks < 1 || rb.Chunks > MaxChunks || rb.Chunk >= rb.Chunks {
		return nil, drop(ReasonBadField, "chunk %d of %d", rb.Chunk, rb.Chunks)
	}
	if len(rb.Addrs) > MaxRelayAddrs {
		return nil, drop(ReasonBadField, "relay of %d addresses", len(rb.Addrs))
	}
	var addrs []netip.Addr
	for _, b := range rb.Addrs {
		a, ok := netip.AddrFromSlice(b)
		if !ok || !relayAddrOK(a) {
			return nil, drop(ReasonBadField, "relay address %x: not a routable unicast address", b)
		}
		addrs = append(addrs, a)
	}
	r := &Relay{Origin: NodeID(rb.Origin), Instance: rb.Instance, Generation: rb.Generation, Offline: rb.Offline, Addrs: addrs,
		Announce: Announce{Name: rb.Name, Chunk: int(rb.Chunk), Chunks: int(rb.Chunks)}}
	copy(r.Announce.Digest[:], rb.Digest)
	var err error
	if r.Announce.Disks, r.Announce.raw, err = decodeEntries("relay", rb.Disks); err != nil {
		return nil, err
	}
	return &Packet{Header: h, Relay: r}, nil
}

// relayAddrOK reports whether a is an address another link can use: a
// unicast address, not link-local, loopback or unspecified (private and
// ULA addresses are: a routed site uses them).
func relayAddrOK(a netip.Addr) bool { return a.IsGlobalUnicast() && a.Zone() == "" }
