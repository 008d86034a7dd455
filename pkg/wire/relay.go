package wire

import (
	"fmt"

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
}

// Relay encodes origin's inventory (inv; nil with offline) as relayed
// announce datagrams of at most MaxDatagram bytes. gen is the relay's own
// generation, as in every header.
func (e *Encoder) Relay(gen uint64, origin NodeID, instance, generation uint64, name string, inv *Inventory, offline bool) [][]byte {
	name = clipName(name)
	if inv == nil || offline {
		inv = NewInventory(nil)
	}
	base := relayBody{Origin: origin[:], Instance: instance, Generation: generation, Name: name,
		Digest: inv.digest[:], Offline: offline}
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
	r := &Relay{Origin: NodeID(rb.Origin), Instance: rb.Instance, Generation: rb.Generation, Offline: rb.Offline,
		Announce: Announce{Name: rb.Name, Chunk: int(rb.Chunk), Chunks: int(rb.Chunks)}}
	copy(r.Announce.Digest[:], rb.Digest)
	var err error
	if r.Announce.Disks, r.Announce.raw, err = decodeEntries("relay", rb.Disks); err != nil {
		return nil, err
	}
	return &Packet{Header: h, Relay: r}, nil
}
