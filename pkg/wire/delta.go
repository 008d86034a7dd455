package wire

import (
	"fmt"

	"github.com/fxamacker/cbor/v2"
)

// TypeDelta is a delta announce: the change of a node's inventory from a
// base generation it announced completely to a newer one, in one datagram
// (docs/protocol.md, "8 Delta announce"). The header's generation is the
// new one. A receiver holding exactly the base applies it; any other
// receiver ignores it and recovers by query, and one that does not know
// the type drops it as unknown_type and converges by heartbeat, query and
// announce as before.
const TypeDelta Type = 8

// Delta is a decoded delta announce.
type Delta struct {
	Name       string
	Base       uint64 // the generation the change applies to
	BaseDigest Digest // of the base inventory
	Digest     Digest // of the inventory the change makes (the header's generation)
	Upserts    []Disk // disks added or changed, sorted by name
	Removed    []string
	raw        [][]byte // each upsert's entry as received
}

type deltaBody struct {
	Name       string            `cbor:"1,keyasint"`
	Base       uint64            `cbor:"2,keyasint"`
	BaseDigest []byte            `cbor:"3,keyasint"`
	Digest     []byte            `cbor:"4,keyasint"`
	Upserts    []cbor.RawMessage `cbor:"5,keyasint,omitempty"`
	Removed    []string          `cbor:"6,keyasint,omitempty"`
}

// Change is the difference between two inventories: what a delta
// carries. Both lists are sorted by name.
type Change struct {
	Upserts []int    // indexes into the newer inventory of entries the older lacks or holds otherwise
	Removed []string // names the older inventory holds and the newer lacks
}

// Empty reports whether nothing changed.
func (c Change) Empty() bool { return len(c.Upserts) == 0 && len(c.Removed) == 0 }

// Diff returns the change from old (nil: empty) to cur. Both are sorted
// by name, so it is one merge; an entry counts as changed when its bytes
// differ.
func Diff(old, cur *Inventory) Change {
	var c Change
	if old == nil {
		old = &Inventory{}
	}
	i, j := 0, 0
	for i < len(old.names) || j < len(cur.names) {
		switch {
		case j == len(cur.names) || i < len(old.names) && old.names[i] < cur.names[j]:
			c.Removed = append(c.Removed, old.names[i])
			i++
		case i == len(old.names) || cur.names[j] < old.names[i]:
			c.Upserts = append(c.Upserts, j)
			j++
		default:
			if string(old.entries[i]) != string(cur.entries[j]) {
				c.Upserts = append(c.Upserts, j)
			}
			i++
			j++
		}
	}
	return c
}

// Apply returns the inventory that upserts (entries with their names,
// sorted by name) and removed make of inv (nil: empty), with its digest.
// A removal of a name inv does not hold changes nothing; the digest then
// tells the caller the result is not what the sender meant.
func (inv *Inventory) Apply(names []string, upserts [][]byte, removed []string) *Inventory {
	if inv == nil {
		inv = &Inventory{}
	}
	out := &Inventory{
		entries: make([][]byte, 0, len(inv.entries)+len(upserts)),
		names:   make([]string, 0, len(inv.names)+len(upserts)),
	}
	rm := 0
	i, j := 0, 0
	for i < len(inv.names) || j < len(names) {
		var name string
		var e []byte
		switch {
		case j == len(names) || i < len(inv.names) && inv.names[i] < names[j]:
			name, e = inv.names[i], inv.entries[i]
			i++
		case i == len(inv.names) || names[j] < inv.names[i]:
			name, e = names[j], upserts[j]
			j++
		default:
			name, e = names[j], upserts[j]
			i++
			j++
		}
		for rm < len(removed) && removed[rm] < name {
			rm++
		}
		if rm < len(removed) && removed[rm] == name {
			continue
		}
		out.names = append(out.names, name)
		out.entries = append(out.entries, e)
	}
	out.digest = digestOf(out.entries)
	return out
}

// size returns the bytes of entries and names the inventory holds.
func (inv *Inventory) size() int {
	n := 0
	for i := range inv.entries {
		n += len(inv.entries[i]) + len(inv.names[i])
	}
	return n
}

// Delta encodes the change from base (the inventory of generation
// baseGen, announced completely) to cur (generation gen) as one datagram.
// ok is false when it cannot be one: gen not after baseGen, more than one
// datagram's worth, or larger than announcing cur whole would be; the
// caller then announces cur. A refused delta uses no sequence number.
func (e *Encoder) Delta(gen uint64, name string, baseGen uint64, base, cur *Inventory) (b []byte, ok bool) {
	if base == nil || gen <= baseGen {
		return nil, false
	}
	name = clipName(name)
	c := Diff(base, cur)
	body := deltaBody{Name: name, Base: baseGen, BaseDigest: base.digest[:], Digest: cur.digest[:], Removed: c.Removed}
	for _, i := range c.Upserts {
		body.Upserts = append(body.Upserts, cur.entries[i])
	}
	if len(body.Upserts) > maxDisksChunk || len(body.Removed) > maxDisksChunk {
		return nil, false
	}
	enc := must(encMode.Marshal(body))
	size := HeaderSize + len(enc)
	if e.keys != nil {
		size += TagSize
	}
	if size > MaxDatagram || size > e.AnnounceSize(name, cur) {
		return nil, false
	}
	return e.seal(TypeDelta, gen, body), true
}

// AnnounceSize returns about how many bytes announcing inv takes, in all
// its datagrams (a few bytes over: chunk numbers are counted at their
// largest). It encodes nothing and uses no sequence number.
func (e *Encoder) AnnounceSize(name string, inv *Inventory) int {
	name = clipName(name)
	probe := len(must(encMode.Marshal(announceBody{Name: name, Digest: inv.digest[:], Chunk: 65535, Chunks: 65535, Disks: []cbor.RawMessage{}})))
	per := HeaderSize + probe + 2
	if e.keys != nil {
		per += TagSize
	}
	n := 0
	for _, c := range inv.chunks(MaxDatagram - per) {
		n += per
		for _, ent := range c {
			n += len(ent)
		}
	}
	return n
}

// decodeDelta decodes a delta announce's body with an announce's checks,
// and checks that it is a change a sender can make: a base before the
// header's generation, upserts and removals each sorted by name without
// repeats, and no name in both.
func decodeDelta(h Header, body []byte) (*Packet, error) {
	if len(body) == 0 || body[0]>>5 != 5 {
		return nil, drop(ReasonBadBody, "delta body is not a map")
	}
	var db deltaBody
	if err := decMode.Unmarshal(body, &db); err != nil {
		return nil, &DropError{ReasonBadBody, fmt.Errorf("delta: %w", err)}
	}
	if err := checkName(db.Name); err != nil {
		return nil, err
	}
	if len(db.Digest) != DigestSize || len(db.BaseDigest) != DigestSize {
		return nil, drop(ReasonBadField, "delta digests of %d and %d bytes", len(db.BaseDigest), len(db.Digest))
	}
	if db.Base >= h.Generation {
		return nil, drop(ReasonBadField, "delta from generation %d to %d", db.Base, h.Generation)
	}
	d := &Delta{Name: db.Name, Base: db.Base}
	copy(d.BaseDigest[:], db.BaseDigest)
	copy(d.Digest[:], db.Digest)
	var err error
	if d.Upserts, d.raw, err = decodeEntries("delta", db.Upserts); err != nil {
		return nil, err
	}
	for i := 1; i < len(d.Upserts); i++ {
		if d.Upserts[i-1].Name >= d.Upserts[i].Name {
			return nil, drop(ReasonBadField, "delta upserts not sorted: %q after %q", d.Upserts[i].Name, d.Upserts[i-1].Name)
		}
	}
	up := 0
	for i, name := range db.Removed {
		if err := (&Disk{Name: name}).validate(); err != nil {
			return nil, err
		}
		if i > 0 && db.Removed[i-1] >= name {
			return nil, drop(ReasonBadField, "delta removals not sorted: %q after %q", name, db.Removed[i-1])
		}
		for up < len(d.Upserts) && d.Upserts[up].Name < name {
			up++
		}
		if up < len(d.Upserts) && d.Upserts[up].Name == name {
			return nil, drop(ReasonBadField, "delta both upserts and removes %q", name)
		}
	}
	d.Removed = db.Removed
	return &Packet{Header: h, Delta: d}, nil
}

// names returns the names of the delta's upserts.
func (d *Delta) names() []string {
	out := make([]string, len(d.Upserts))
	for i := range d.Upserts {
		out[i] = d.Upserts[i].Name
	}
	return out
}
