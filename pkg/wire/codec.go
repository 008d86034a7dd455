package wire

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/diskd/diskd/pkg/disk"
	"github.com/fxamacker/cbor/v2"
)

// The CBOR modes are immutable once built, so sharing them is safe.
var (
	encMode = must(cbor.CoreDetEncOptions().EncMode())
	decMode = UntrustedDecMode(8, maxDisksChunk)
)

// UntrustedDecMode is the CBOR decoder for bodies from the network (here
// and on the gossip path): it bounds everything an untrusted body can make
// the decoder do, with the nesting depth and array length of its format.
// Unknown keys are ignored on purpose: that is how version 1 grows.
func UntrustedDecMode(maxNested, maxArray int) cbor.DecMode {
	return must(cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		MaxNestedLevels:   maxNested,
		MaxArrayElements:  maxArray,
		MaxMapPairs:       32,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		UTF8:              cbor.UTF8RejectInvalid,
		FieldNameMatching: cbor.FieldNameMatchingCaseSensitive,
	}.DecMode())
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

type heartbeatBody struct {
	Name     string   `cbor:"1,keyasint"`
	Digest   []byte   `cbor:"2,keyasint"`
	Interval uint64   `cbor:"3,keyasint"`
	Addrs    [][]byte `cbor:"4,keyasint,omitempty"`
}

type announceBody struct {
	Name   string            `cbor:"1,keyasint"`
	Digest []byte            `cbor:"2,keyasint"`
	Chunk  uint64            `cbor:"3,keyasint"`
	Chunks uint64            `cbor:"4,keyasint"`
	Disks  []cbor.RawMessage `cbor:"5,keyasint"`
}

type queryBody struct {
	Targets [][]byte `cbor:"1,keyasint,omitempty"`
}

type goodbyeBody struct{}

// Inventory is a local disk list prepared for announcing: converted,
// sorted by name, each entry encoded once, with its digest.
type Inventory struct {
	entries [][]byte
	names   []string // entries[i] is the disk named names[i]; sorted
	digest  Digest
	// Skipped counts disks left out: identifiers over their limits, a name
	// given twice, or beyond MaxDisks.
	Skipped int
	// Trimmed counts disks sent with descriptive text cut or mountpoints
	// left out to respect the limits.
	Trimmed int
}

// NewInventory prepares disks for announcing.
func NewInventory(disks []disk.Disk) *Inventory {
	inv := &Inventory{}
	ws := make([]Disk, 0, len(disks))
	for i := range disks {
		w, trimmed, err := fromDisk(&disks[i])
		if err != nil {
			inv.Skipped++
			continue
		}
		if trimmed {
			inv.Trimmed++
		}
		ws = append(ws, w)
	}
	slices.SortStableFunc(ws, func(a, b Disk) int { return strings.Compare(a.Name, b.Name) })
	for i := range ws {
		w := &ws[i]
		if (i > 0 && ws[i-1].Name == w.Name) || len(inv.entries) == MaxDisks {
			inv.Skipped++
			continue
		}
		b := must(encMode.Marshal(w))
		if len(b) > MaxDiskEntry {
			inv.Trimmed++
			for len(b) > MaxDiskEntry && len(w.Mounts) > 0 {
				w.Mounts = w.Mounts[:len(w.Mounts)-1]
				b = must(encMode.Marshal(w))
			}
		}
		inv.entries = append(inv.entries, b)
		inv.names = append(inv.names, w.Name)
	}
	inv.digest = digestOf(inv.entries)
	return inv
}

// chunks packs the entries greedily into chunks of at most budget bytes
// (a chunk holds at least one entry); an empty inventory is one empty chunk.
func (inv *Inventory) chunks(budget int) [][]cbor.RawMessage {
	var chunks [][]cbor.RawMessage
	cur := []cbor.RawMessage{}
	size := 0
	for _, ent := range inv.entries {
		if len(cur) > 0 && size+len(ent) > budget {
			chunks = append(chunks, cur)
			cur, size = []cbor.RawMessage{}, 0
		}
		cur = append(cur, ent)
		size += len(ent)
	}
	return append(chunks, cur)
}

// Digest returns the inventory's digest.
func (inv *Inventory) Digest() Digest { return inv.digest }

// Len returns the number of disks that will be announced.
func (inv *Inventory) Len() int { return len(inv.entries) }

func digestOf(entries [][]byte) Digest {
	h := sha256.New()
	for _, e := range entries {
		h.Write(e)
	}
	var d Digest
	copy(d[:], h.Sum(nil))
	return d
}

// Encoder makes one instance's datagrams. It numbers them, so it is not
// safe for concurrent use.
type Encoder struct {
	node     NodeID
	instance uint64
	seq      uint64
	keys     *Keyring
}

// NewEncoder returns an encoder for node's instance; keys may be nil
// (unauthenticated network).
func NewEncoder(node NodeID, instance uint64, keys *Keyring) *Encoder {
	return &Encoder{node: node, instance: instance, keys: keys}
}

// Instance returns the instance ID the encoder stamps.
func (e *Encoder) Instance() uint64 { return e.instance }

// Seq returns the last sequence number used.
func (e *Encoder) Seq() uint64 { return e.seq }

func (e *Encoder) seal(t Type, gen uint64, body any) []byte {
	e.seq++
	b := make([]byte, HeaderSize, MaxDatagram)
	copy(b, Magic)
	b[4] = Version
	b[5] = byte(t)
	if e.keys != nil {
		b[6] = flagTagged
		b[7] = e.keys.keys[0].id
	}
	copy(b[8:24], e.node[:])
	binary.BigEndian.PutUint64(b[24:], e.instance)
	binary.BigEndian.PutUint64(b[32:], e.seq)
	binary.BigEndian.PutUint64(b[40:], gen)
	enc := must(encMode.Marshal(body))
	b = append(b, enc...)
	if e.keys != nil {
		b = append(b, tag(e.keys.keys[0].secret, b)...)
	}
	return b
}

// clipName makes a node name the protocol accepts: control characters and
// invalid UTF-8 become U+FFFD (a receiver would drop the datagram), and a
// name over MaxNodeName is cut at a character boundary.
func clipName(s string) string {
	s = strings.Map(func(r rune) rune {
		if isControl(r) {
			return utf8.RuneError
		}
		return r
	}, strings.ToValidUTF8(strings.ReplaceAll(s, "\x00", ""), "\uFFFD"))
	for len(s) > MaxNodeName {
		_, n := utf8.DecodeLastRuneInString(s)
		s = s[:len(s)-n]
	}
	return s
}

// Heartbeat encodes a heartbeat. A name longer than MaxNodeName is cut;
// addresses beyond MaxAddrs are left out.
func (e *Encoder) Heartbeat(gen uint64, hb Heartbeat) []byte {
	iv := min(max(hb.Interval, MinInterval), MaxInterval)
	body := heartbeatBody{Name: clipName(hb.Name), Digest: hb.Digest[:], Interval: uint64(iv / time.Millisecond)}
	for _, a := range hb.Addrs {
		if len(body.Addrs) < MaxAddrs && a.IsValid() {
			body.Addrs = append(body.Addrs, a.Unmap().AsSlice())
		}
	}
	return e.seal(TypeHeartbeat, gen, body)
}

// Announce encodes inventory generation gen as datagrams of at most
// MaxDatagram bytes, numbered consecutively.
func (e *Encoder) Announce(gen uint64, name string, inv *Inventory) [][]byte {
	name = clipName(name)
	// Room for entries: what a body with the largest chunk numbers and an
	// empty array leaves, minus 2 for the array header growing to 3 bytes.
	probe := must(encMode.Marshal(announceBody{Name: name, Digest: inv.digest[:], Chunk: 65535, Chunks: 65535, Disks: []cbor.RawMessage{}}))
	budget := MaxDatagram - HeaderSize - TagSize - len(probe) - 2
	chunks := inv.chunks(budget)
	out := make([][]byte, len(chunks))
	for i, c := range chunks {
		out[i] = e.seal(TypeAnnounce, gen, announceBody{Name: name, Digest: inv.digest[:],
			Chunk: uint64(i), Chunks: uint64(len(chunks)), Disks: c})
	}
	return out
}

// Query encodes a query for targets (every node when empty; at most
// MaxQueryTargets are sent).
func (e *Encoder) Query(gen uint64, targets []NodeID) []byte {
	var body queryBody
	for _, t := range targets[:min(len(targets), MaxQueryTargets)] {
		body.Targets = append(body.Targets, slices.Clone(t[:]))
	}
	return e.seal(TypeQuery, gen, body)
}

// Goodbye encodes a goodbye.
func (e *Encoder) Goodbye(gen uint64) []byte {
	return e.seal(TypeGoodbye, gen, goodbyeBody{})
}

// Decoder checks and decodes datagrams. It holds no state but the keys, so
// it is safe for concurrent use.
type Decoder struct {
	keys *Keyring
}

// NewDecoder returns a decoder that requires datagrams tagged with one of
// keys, or untagged ones when keys is nil.
func NewDecoder(keys *Keyring) *Decoder { return &Decoder{keys: keys} }

// Open checks a datagram's size, magic, version and authentication tag,
// and parses its fixed header. It decodes nothing else: a datagram that
// fails the tag is never looked at further. It returns the body.
func (d *Decoder) Open(b []byte) (Header, []byte, error) {
	var h Header
	if len(b) > MaxDatagram {
		return h, nil, drop(ReasonTooLarge, "%d bytes", len(b))
	}
	if len(b) < HeaderSize+1 {
		return h, nil, drop(ReasonTooShort, "%d bytes", len(b))
	}
	if string(b[:4]) != Magic {
		return h, nil, drop(ReasonBadMagic, "%q", b[:4])
	}
	if b[4] != Version {
		return h, nil, drop(ReasonBadVersion, "version %d", b[4])
	}
	body := b[HeaderSize:]
	if b[6]&flagTagged != 0 {
		if d.keys == nil {
			return h, nil, drop(ReasonUnexpectedTag, "key ID %d, no key configured", b[7])
		}
		if len(b) < HeaderSize+1+TagSize {
			return h, nil, drop(ReasonTooShort, "%d bytes, tagged", len(b))
		}
		secret := d.keys.find(b[7])
		if secret == nil {
			return h, nil, drop(ReasonUnknownKey, "key ID %d", b[7])
		}
		n := len(b) - TagSize
		if !hmac.Equal(tag(secret, b[:n]), b[n:]) {
			return h, nil, drop(ReasonBadTag, "key ID %d", b[7])
		}
		body = b[HeaderSize:n]
		h.KeyID = b[7]
	} else if d.keys != nil {
		return h, nil, drop(ReasonUntagged, "")
	}
	h.Type = Type(b[5])
	copy(h.Node[:], b[8:24])
	h.Instance = binary.BigEndian.Uint64(b[24:])
	h.Seq = binary.BigEndian.Uint64(b[32:])
	h.Generation = binary.BigEndian.Uint64(b[40:])
	return h, body, nil
}

// Decode opens a datagram and decodes its body.
func (d *Decoder) Decode(b []byte) (*Packet, error) {
	h, body, err := d.Open(b)
	if err != nil {
		return nil, err
	}
	return DecodeBody(h, body)
}

// DecodeBody decodes and checks the body of an opened datagram.
func DecodeBody(h Header, body []byte) (*Packet, error) {
	switch h.Type {
	case TypeRelay:
		return decodeRelay(h, body)
	case TypeDelta:
		return decodeDelta(h, body)
	}
	p := &Packet{Header: h}
	if h.Type < TypeHeartbeat || h.Type > TypeReply {
		return nil, drop(ReasonUnknownType, "%v", h.Type)
	}
	// A body is a map; this also refuses CBOR null, which would decode into
	// any struct without complaint.
	if len(body) == 0 || body[0]>>5 != 5 {
		return nil, drop(ReasonBadBody, "%v body is not a map", h.Type)
	}
	switch h.Type {
	case TypeHeartbeat:
		var hb heartbeatBody
		if err := decMode.Unmarshal(body, &hb); err != nil {
			return nil, &DropError{ReasonBadBody, fmt.Errorf("heartbeat: %w", err)}
		}
		out := &Heartbeat{Name: hb.Name, Interval: time.Duration(hb.Interval) * time.Millisecond}
		if err := checkName(hb.Name); err != nil {
			return nil, err
		}
		if len(hb.Digest) != DigestSize {
			return nil, drop(ReasonBadField, "heartbeat digest of %d bytes", len(hb.Digest))
		}
		copy(out.Digest[:], hb.Digest)
		if hb.Interval < uint64(MinInterval/time.Millisecond) || hb.Interval > uint64(MaxInterval/time.Millisecond) {
			return nil, drop(ReasonBadField, "heartbeat interval %d ms", hb.Interval)
		}
		if len(hb.Addrs) > MaxAddrs {
			return nil, drop(ReasonBadField, "%d addresses", len(hb.Addrs))
		}
		for _, a := range hb.Addrs {
			ip, ok := netip.AddrFromSlice(a)
			if !ok {
				return nil, drop(ReasonBadField, "address of %d bytes", len(a))
			}
			out.Addrs = append(out.Addrs, ip)
		}
		p.Heartbeat = out
	case TypeAnnounce:
		var ab announceBody
		if err := decMode.Unmarshal(body, &ab); err != nil {
			return nil, &DropError{ReasonBadBody, fmt.Errorf("announce: %w", err)}
		}
		if err := checkName(ab.Name); err != nil {
			return nil, err
		}
		if len(ab.Digest) != DigestSize {
			return nil, drop(ReasonBadField, "announce digest of %d bytes", len(ab.Digest))
		}
		if ab.Chunks < 1 || ab.Chunks > MaxChunks || ab.Chunk >= ab.Chunks {
			return nil, drop(ReasonBadField, "chunk %d of %d", ab.Chunk, ab.Chunks)
		}
		out := &Announce{Name: ab.Name, Chunk: int(ab.Chunk), Chunks: int(ab.Chunks)}
		copy(out.Digest[:], ab.Digest)
		var err error
		if out.Disks, out.raw, err = decodeEntries("announce", ab.Disks); err != nil {
			return nil, err
		}
		p.Announce = out
	case TypeQuery:
		var qb queryBody
		if err := decMode.Unmarshal(body, &qb); err != nil {
			return nil, &DropError{ReasonBadBody, fmt.Errorf("query: %w", err)}
		}
		if len(qb.Targets) > MaxQueryTargets {
			return nil, drop(ReasonBadField, "query for %d nodes", len(qb.Targets))
		}
		out := &Query{}
		for _, t := range qb.Targets {
			if len(t) != len(NodeID{}) {
				return nil, drop(ReasonBadField, "query target of %d bytes", len(t))
			}
			out.Targets = append(out.Targets, NodeID(t))
		}
		p.Query = out
	case TypeGoodbye:
		var gb goodbyeBody
		if err := decMode.Unmarshal(body, &gb); err != nil {
			return nil, &DropError{ReasonBadBody, fmt.Errorf("goodbye: %w", err)}
		}
	case TypeRequest, TypeReply:
		if err := decodeRequest(p, body); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// decodeEntries decodes and checks the disk entries of a body (what names
// the body in errors), returning them and their bytes as received.
func decodeEntries(what string, raws []cbor.RawMessage) ([]Disk, [][]byte, error) {
	disks, out := make([]Disk, len(raws)), make([][]byte, len(raws))
	for i, raw := range raws {
		if len(raw) > MaxDiskEntry {
			return nil, nil, drop(ReasonBadField, "disk entry of %d bytes", len(raw))
		}
		if err := decMode.Unmarshal(raw, &disks[i]); err != nil {
			return nil, nil, &DropError{ReasonBadBody, fmt.Errorf("%s disk %d: %w", what, i, err)}
		}
		if err := disks[i].validate(); err != nil {
			return nil, nil, err
		}
		out[i] = raw
	}
	return disks, out, nil
}

func checkName(s string) error {
	if len(s) > MaxNodeName {
		return drop(ReasonBadField, "node name of %d bytes", len(s))
	}
	if hasControl(s) {
		return drop(ReasonControlChar, "node name %q", s)
	}
	return nil
}

// isControl reports whether r is a C0 control (U+0000-U+001F, NUL
// included), DEL (U+007F) or a C1 control (U+0080-U+009F): the characters
// that drive a terminal (ESC starts a sequence, U+009B is CSI by itself).
func isControl(r rune) bool {
	return r < 0x20 || r >= 0x7f && r <= 0x9f
}

// hasControl reports whether s holds a control character (isControl) or is
// not valid UTF-8. Every text field from the wire but labels is checked
// with it; CBOR decoding already refuses invalid UTF-8, this says so again
// for callers that did not decode.
func hasControl(s string) bool {
	if !utf8.ValidString(s) {
		return true
	}
	for _, r := range s {
		if isControl(r) {
			return true
		}
	}
	return false
}
