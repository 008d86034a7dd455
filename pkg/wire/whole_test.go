package wire

import (
	"bytes"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
)

// TestWholeRoundTrip: an inventory carried whole decodes to the same
// disks with the digest its announces carry.
func TestWholeRoundTrip(t *testing.T) {
	inv := NewInventory(sampleDisks(300))
	disks, dg, err := DecodeWhole(inv.Whole())
	if err != nil {
		t.Fatal(err)
	}
	if dg != inv.Digest() || len(disks) != inv.Len() {
		t.Fatalf("digest %v, %d disks; want %v, %d", dg, len(disks), inv.Digest(), inv.Len())
	}
	// Re-encoding what was received gives the same digest: a relay serves
	// what it holds and receivers check it against the origin's.
	var ds = sampleDisks(0)
	for i := range disks {
		ds = append(ds, disks[i].ToDisk("n", "h"))
	}
	if NewInventory(ds).Digest() != inv.Digest() {
		t.Error("re-encoded inventory has another digest")
	}
}

// TestWholeLimits: DecodeWhole refuses what an announce would.
func TestWholeLimits(t *testing.T) {
	entry := func(d Disk) cbor.RawMessage { return must(encMode.Marshal(d)) }
	raw := func(es ...cbor.RawMessage) []byte { return must(encMode.Marshal(es)) }
	many := make([]cbor.RawMessage, MaxDisks+1)
	for i := range many {
		many[i] = entry(Disk{Name: "d" + string(rune('a'+i%26)) + string(rune('a'+i/26%26)) + string(rune('a'+i/676))})
	}
	for _, tc := range []struct {
		name string
		b    []byte
		want Reason
	}{
		{"not an array", []byte{0xa0}, ReasonBadBody},
		{"too many disks", raw(many...), ReasonBadBody},
		{"name twice", raw(entry(Disk{Name: "sda"}), entry(Disk{Name: "sda"})), ReasonBadInventory},
		{"control character", raw(entry(Disk{Name: "sda", Device: "/dev/\x1b[2J"})), ReasonControlChar},
		{"slash in name", raw(entry(Disk{Name: "a/b"})), ReasonBadField},
	} {
		if _, _, err := DecodeWhole(tc.b); ReasonOf(err) != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
}

// TestDerive: one key per line, the sending key first, stable, distinct,
// and not the secret itself.
func TestDerive(t *testing.T) {
	kr := testKeys(t, key2+key1)
	a, err := kr.Derive("x", 32)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := testKeys(t, key1).Derive("x", 32)
	c, _ := kr.Derive("y", 32)
	if len(a) != 2 || len(a[0]) != 32 || !bytes.Equal(a[1], b[0]) || bytes.Equal(a[0], a[1]) || bytes.Equal(a[0], c[0]) {
		t.Errorf("derived keys: %x / %x / %x", a, b, c)
	}
	if bytes.Contains(a[1], []byte("0123456789abcdef")) {
		t.Error("the secret shows through")
	}
	if k, err := (*Keyring)(nil).Derive("x", 32); k != nil || err != nil {
		t.Error("nil keyring derived keys")
	}
}

// TestRelayRoundTrip: a relayed announce names its origin, is tagged by
// the relay, assembles like the origin's own announce, and an unknown
// type next to it is still dropped as unknown_type.
func TestRelayRoundTrip(t *testing.T) {
	keys := testKeys(t, key1)
	relay := NewEncoder(testNode, testInstance, keys)
	origin := NodeID{9, 9, 9}
	inv := NewInventory(sampleDisks(40))
	addrs := []netip.Addr{netip.MustParseAddr("10.1.0.2"), netip.MustParseAddr("fe80::1"), netip.MustParseAddr("127.0.0.1"),
		netip.MustParseAddr("::ffff:10.1.0.3"), netip.MustParseAddr("fd00:1::2")}
	wantAddrs := []string{"10.1.0.2", "10.1.0.3", "fd00:1::2"} // link-local and loopback left out
	dgs := relay.Relay(3, origin, 77, 5, "origin", inv, false, addrs)
	if len(dgs) < 2 {
		t.Fatalf("%d datagrams; want several chunks", len(dgs))
	}
	dec := NewDecoder(keys)
	asm := NewAssembler(AssemblerLimits{})
	var done *Complete
	for _, b := range dgs {
		if len(b) > MaxDatagram {
			t.Fatalf("datagram of %d bytes", len(b))
		}
		p, err := dec.Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		if p.Type != TypeRelay || p.Node != testNode || p.Relay.Origin != origin || p.Relay.Instance != 77 || p.Relay.Generation != 5 {
			t.Fatalf("decoded %+v", p.Header)
		}
		if got := p.Relay.AddrStrings(); !slices.Equal(got, wantAddrs) {
			t.Fatalf("addresses %v, want %v", got, wantAddrs)
		}
		h := Header{Type: TypeAnnounce, Node: origin, Instance: 77, Generation: 5}
		if c, err := asm.Add(time.Now(), h, &p.Relay.Announce); err != nil {
			t.Fatal(err)
		} else if c != nil {
			done = c
		}
	}
	if done == nil || len(done.Disks) != inv.Len() || done.Digest != inv.Digest() || done.Name != "origin" {
		t.Fatalf("assembled %+v", done)
	}
	off := relay.Relay(4, origin, 77, 5, "origin", nil, true, nil)
	p, err := dec.Decode(off[0])
	if err != nil || len(off) != 1 || !p.Relay.Offline || len(p.Relay.Announce.Disks) != 0 || p.Relay.AddrStrings() != nil {
		t.Errorf("offline relay: %d datagrams, %+v, %v", len(off), p, err)
	}
	// Addresses a sender must not send are refused whole.
	nine := make([][]byte, MaxRelayAddrs+1)
	for i := range nine {
		nine[i] = []byte{10, 1, 0, byte(i + 1)}
	}
	for name, as := range map[string][][]byte{
		"9 addresses": nine,
		"3 bytes":     {{10, 1, 0}},
		"link-local":  {netip.MustParseAddr("fe80::1").AsSlice()},
		"multicast":   {{239, 255, 68, 75}},
		"loopback":    {{127, 0, 0, 1}},
		"unspecified": {{0, 0, 0, 0}},
	} {
		b := relay.seal(TypeRelay, 5, relayBody{Origin: origin[:], Instance: 77, Generation: 5, Name: "origin",
			Digest: make([]byte, DigestSize), Chunk: 0, Chunks: 1, Disks: []cbor.RawMessage{}, Addrs: as})
		if _, err := dec.Decode(b); ReasonOf(err) != ReasonBadField {
			t.Errorf("%s: %v, want bad_field", name, err)
		}
	}
	// The next unknown type is refused as before (what an older daemon
	// does with type 7).
	unknown := relay.seal(Type(9), 4, relayBody{})
	if _, err := dec.Decode(unknown); ReasonOf(err) != ReasonUnknownType {
		t.Errorf("type 9: %v, want unknown_type", err)
	}
}
