package wire

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/diskd/diskd/pkg/disk"
)

// changed returns ds with the disks at the given indexes relabelled.
func changed(ds []disk.Disk, idx ...int) []disk.Disk {
	out := slices.Clone(ds)
	for _, i := range idx {
		out[i].Label += "-changed"
	}
	return out
}

func deltaCases() []struct {
	name     string
	old, cur []disk.Disk
	up, rm   int
} {
	ds := sampleDisks(12)
	return []struct {
		name     string
		old, cur []disk.Disk
		up, rm   int
	}{
		{"nothing", ds, ds, 0, 0},
		{"from empty", nil, ds[:3], 3, 0},
		{"to empty", ds[:3], nil, 0, 3},
		{"one added", ds[:5], ds[:6], 1, 0},
		{"one added first", ds[1:5], ds[:5], 1, 0},
		{"one removed", ds[:6], ds[:5], 0, 1},
		{"one removed in the middle", ds[:6], append(slices.Clone(ds[:2]), ds[3:6]...), 0, 1},
		{"one changed", ds, changed(ds, 4), 1, 0},
		{"mixed", ds[:8], append(changed(ds[1:8], 2), ds[9:12]...), 4, 1},
		{"all replaced", ds[:6], ds[6:], 6, 6},
	}
}

func TestDiffApply(t *testing.T) {
	for _, tt := range deltaCases() {
		t.Run(tt.name, func(t *testing.T) {
			old, cur := NewInventory(tt.old), NewInventory(tt.cur)
			c := Diff(old, cur)
			if len(c.Upserts) != tt.up || len(c.Removed) != tt.rm {
				t.Fatalf("diff: %d upserts, %d removals; want %d, %d", len(c.Upserts), len(c.Removed), tt.up, tt.rm)
			}
			if c.Empty() != (tt.up+tt.rm == 0) {
				t.Errorf("Empty() = %v", c.Empty())
			}
			var names []string
			var entries [][]byte
			for _, i := range c.Upserts {
				names, entries = append(names, cur.names[i]), append(entries, cur.entries[i])
			}
			got := old.Apply(names, entries, c.Removed)
			if got.digest != cur.digest || !slices.Equal(got.names, cur.names) {
				t.Errorf("applied: %v %v, want %v %v", got.names, got.digest, cur.names, cur.digest)
			}
		})
	}
	// Removing what is not there changes nothing: the digest says so.
	inv := NewInventory(sampleDisks(3))
	if got := inv.Apply(nil, nil, []string{"nosuch"}); got.digest != inv.digest {
		t.Error("removing an absent name changed the inventory")
	}
	if got := (*Inventory)(nil).Apply(nil, nil, nil); got.digest != NewInventory(nil).digest {
		t.Error("nil inventory does not apply as empty")
	}
}

// baseAt returns an assembler holding inv as generation gen of testNode.
func baseAt(t *testing.T, enc *Encoder, dec *Decoder, lim AssemblerLimits, gen uint64, inv *Inventory) *Assembler {
	t.Helper()
	asm := NewAssembler(lim)
	for _, b := range enc.Announce(gen, "dkd-h1", inv) {
		p, err := dec.Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := asm.Add(time.Now(), p.Header, p.Announce); err != nil {
			t.Fatal(err)
		}
	}
	return asm
}

func TestDeltaRoundTrip(t *testing.T) {
	for _, keyed := range []bool{false, true} {
		for _, tt := range deltaCases() {
			t.Run(fmt.Sprintf("%s/keyed=%v", tt.name, keyed), func(t *testing.T) {
				var kr *Keyring
				if keyed {
					kr = testKeys(t, key1)
				}
				enc, dec := NewEncoder(testNode, testInstance, kr), NewDecoder(kr)
				old, cur := NewInventory(tt.old), NewInventory(tt.cur)
				asm := baseAt(t, enc, dec, AssemblerLimits{}, 7, old)
				seq := enc.Seq()
				b, ok := enc.Delta(9, "dkd-h1", 7, old, cur)
				if !ok {
					if enc.Seq() != seq {
						t.Error("a refused delta used a sequence number")
					}
					// Refused only because announcing whole is smaller.
					if full := enc.AnnounceSize("dkd-h1", cur); full > MaxDatagram {
						t.Fatalf("delta refused; announce would take %d bytes", full)
					}
					return
				}
				if len(b) > MaxDatagram {
					t.Fatalf("%d bytes", len(b))
				}
				p, err := dec.Decode(b)
				if err != nil {
					t.Fatal(err)
				}
				if p.Type != TypeDelta || p.Generation != 9 || p.Delta.Base != 7 || p.Delta.Digest != cur.Digest() || p.Delta.BaseDigest != old.Digest() {
					t.Fatalf("decoded %v %+v", p.Header, p.Delta)
				}
				c, err := asm.AddDelta(time.Now(), p.Header, p.Delta)
				if err != nil {
					t.Fatal(err)
				}
				want := stripped(tt.cur, testNode.Domain(), "dkd-h1")
				sortByName(want)
				if len(want) == 0 {
					want = []disk.Disk{}
				}
				if c.Generation != 9 || c.Digest != cur.Digest() || !reflect.DeepEqual(c.Disks, want) {
					t.Errorf("applied generation %d %v:\n%+v\nwant\n%+v", c.Generation, c.Digest, c.Disks, want)
				}
				if inst, gen, dg, ok := asm.Applied(testNode); !ok || inst != testInstance || gen != 9 || dg != cur.Digest() {
					t.Errorf("Applied = %x %d %v %v", inst, gen, dg, ok)
				}
				// The same delta again (another family's copy past the
				// window, or a replay) changes nothing.
				if _, err := asm.AddDelta(time.Now(), p.Header, p.Delta); ReasonOf(err) != ReasonHaveGeneration {
					t.Errorf("again: %v", err)
				}
			})
		}
	}
}

func TestDeltaSizeLimits(t *testing.T) {
	enc := NewEncoder(testNode, testInstance, testKeys(t, key1))
	big := sampleDisks(200)
	old := NewInventory(big[:100])
	// 100 new disks: far beyond one datagram.
	if _, ok := enc.Delta(2, "h", 1, old, NewInventory(big)); ok {
		t.Error("delta of 100 new disks accepted")
	}
	// The largest delta that fits is at most MaxDatagram.
	for k := 1; k < 30; k++ {
		b, ok := enc.Delta(2, "h", 1, old, NewInventory(big[:100+k]))
		if !ok {
			if k < 5 {
				t.Fatalf("delta of %d disks refused", k)
			}
			break
		}
		if len(b) > MaxDatagram {
			t.Fatalf("%d disks: %d bytes", k, len(b))
		}
	}
	// Generations must move forward, and there must be a base.
	if _, ok := enc.Delta(1, "h", 1, old, old); ok {
		t.Error("delta to the same generation")
	}
	if _, ok := enc.Delta(2, "h", 1, nil, old); ok {
		t.Error("delta without a base")
	}
	// Every removal of a 4096-disk inventory at its limits: refused, not
	// an oversized datagram.
	var many []disk.Disk
	for i := range 600 {
		many = append(many, maxDisk(i))
	}
	if _, ok := enc.Delta(2, "h", 1, NewInventory(many), NewInventory(nil)); ok {
		t.Error("delta removing 600 disks accepted")
	}
}

func TestAddDeltaRefusals(t *testing.T) {
	ds := sampleDisks(10)
	enc, dec := NewEncoder(testNode, testInstance, nil), NewDecoder(nil)
	old, cur := NewInventory(ds[:9]), NewInventory(ds)
	b, ok := enc.Delta(5, "dkd-h1", 4, old, cur)
	if !ok {
		t.Fatal("no delta")
	}
	p, err := dec.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	wrong := *p.Delta
	wrong.Digest[0] ^= 1
	for _, tt := range []struct {
		name string
		asm  func() *Assembler
		h    Header
		d    *Delta
		want Reason
	}{
		{"nothing applied", func() *Assembler { return NewAssembler(AssemblerLimits{}) }, p.Header, p.Delta, ReasonNoBase},
		{"other base generation", func() *Assembler { return baseAt(t, enc, dec, AssemblerLimits{}, 3, old) }, p.Header, p.Delta, ReasonNoBase},
		{"other base digest", func() *Assembler { return baseAt(t, enc, dec, AssemblerLimits{}, 4, NewInventory(ds[:8])) }, p.Header, p.Delta, ReasonNoBase},
		{"other instance", func() *Assembler { return baseAt(t, enc, dec, AssemblerLimits{}, 4, old) },
			func() Header { h := p.Header; h.Instance++; return h }(), p.Delta, ReasonNoBase},
		{"no bases kept", func() *Assembler { return baseAt(t, enc, dec, AssemblerLimits{MaxBaseBytes: -1}, 4, old) }, p.Header, p.Delta, ReasonNoBase},
		{"base over the bound", func() *Assembler { return baseAt(t, enc, dec, AssemblerLimits{MaxBaseBytes: 100}, 4, old) }, p.Header, p.Delta, ReasonNoBase},
		{"already there", func() *Assembler { return baseAt(t, enc, dec, AssemblerLimits{}, 5, cur) }, p.Header, p.Delta, ReasonHaveGeneration},
		{"past it", func() *Assembler { return baseAt(t, enc, dec, AssemblerLimits{}, 6, cur) }, p.Header, p.Delta, ReasonOldGeneration},
		{"wrong result", func() *Assembler { return baseAt(t, enc, dec, AssemblerLimits{}, 4, old) },
			p.Header, &wrong, ReasonBadDigest},
		{"too many disks", func() *Assembler { return baseAt(t, enc, dec, AssemblerLimits{MaxDisks: 9}, 4, old) }, p.Header, p.Delta, ReasonTooManyDisks},
	} {
		t.Run(tt.name, func(t *testing.T) {
			want := tt.want
			asm := tt.asm()
			c, err := asm.AddDelta(time.Now(), tt.h, tt.d)
			if c != nil || ReasonOf(err) != want {
				t.Fatalf("got %v, %v; want %v", c, err, want)
			}
			if _, gen, _, ok := asm.Applied(testNode); ok && gen == 5 && want != ReasonHaveGeneration {
				t.Error("refused delta applied")
			}
		})
	}
}

// TestBasesBounded: the bases deltas need stay within MaxBaseBytes, the
// least recently used node's going first.
func TestBasesBounded(t *testing.T) {
	inv := NewInventory(sampleDisks(10))
	one := inv.size()
	asm := NewAssembler(AssemblerLimits{MaxBaseBytes: 3*one + one/2})
	dec := NewDecoder(nil)
	for i := range 5 {
		node := testNode
		node[0] = byte(i)
		for _, b := range NewEncoder(node, testInstance, nil).Announce(1, "h", inv) {
			p, _ := dec.Decode(b)
			if _, err := asm.Add(time.Now(), p.Header, p.Announce); err != nil {
				t.Fatal(err)
			}
		}
		if asm.BaseBytes() > 3*one+one/2 {
			t.Fatalf("%d bytes of bases after %d nodes", asm.BaseBytes(), i+1)
		}
	}
	if got := asm.Stats().BasesEvicted; got != 2 {
		t.Errorf("%d bases evicted, want 2", got)
	}
	for i := range 5 {
		node := testNode
		node[0] = byte(i)
		if asm.nodes[node].base != nil != (i >= 2) {
			t.Errorf("node %d: base kept = %v", i, asm.nodes[node].base != nil)
		}
	}
	for i := range 5 {
		node := testNode
		node[0] = byte(i)
		asm.Forget(node)
	}
	if asm.BaseBytes() != 0 {
		t.Errorf("%d bytes of bases after forgetting every node", asm.BaseBytes())
	}
}

func TestDecodeDeltaDrops(t *testing.T) {
	entry := func(name string) string {
		return fmt.Sprintf("%x", must(encMode.Marshal(Disk{Name: name})))
	}
	dg := "4800000000000000" + "00" // bstr(8)
	// {1: "h", 2: base, 3: digest, 4: digest, 5: [entries], 6: [names]}
	body := func(base string, ups []string, rms string) []byte {
		s := "a6" + "0161" + "68" + "02" + base + "03" + dg[:2] + dg[2:] + "04" + dg
		s += fmt.Sprintf("05%02x", 0x80+len(ups)) + strings.Join(ups, "")
		s += "06" + rms
		return mustHex(s)
	}
	gen := func(b []byte, g uint64) []byte {
		for i := range 8 {
			b[40+i] = byte(g >> (56 - 8*i))
		}
		return b
	}
	dec := NewDecoder(nil)
	ok := gen(build(TypeDelta, body("01", []string{entry("a"), entry("b")}, "81"+"6163"), nil), 2)
	if p, err := dec.Decode(ok); err != nil || p.Delta == nil || len(p.Delta.Upserts) != 2 || p.Delta.Removed[0] != "c" {
		t.Fatalf("valid delta: %+v, %v", p, err)
	}
	for _, tt := range []struct {
		name string
		b    []byte
		want Reason
	}{
		{"not a map", gen(build(TypeDelta, mustHex("80"), nil), 2), ReasonBadBody},
		{"base not before the generation", gen(build(TypeDelta, body("02", nil, "80"), nil), 2), ReasonBadField},
		{"upserts unsorted", gen(build(TypeDelta, body("01", []string{entry("b"), entry("a")}, "80"), nil), 2), ReasonBadField},
		{"upsert twice", gen(build(TypeDelta, body("01", []string{entry("a"), entry("a")}, "80"), nil), 2), ReasonBadField},
		{"removals unsorted", gen(build(TypeDelta, body("01", nil, "82"+"6162"+"6161"), nil), 2), ReasonBadField},
		{"upserted and removed", gen(build(TypeDelta, body("01", []string{entry("a")}, "81"+"6161"), nil), 2), ReasonBadField},
		{"removal with a slash", gen(build(TypeDelta, body("01", nil, "81"+"622f61"), nil), 2), ReasonBadField},
		{"removal with a control", gen(build(TypeDelta, body("01", nil, "81"+"621b61"), nil), 2), ReasonControlChar},
		{"empty removal", gen(build(TypeDelta, body("01", nil, "81"+"60"), nil), 2), ReasonBadField},
		{"upsert with a control", gen(build(TypeDelta, body("01", []string{entry("a\x1b")}, "80"), nil), 2), ReasonControlChar},
		{"short digest", gen(build(TypeDelta, mustHex("a40161680201034100044100"), nil), 2), ReasonBadField},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := dec.Decode(tt.b)
			if ReasonOf(err) != tt.want {
				t.Errorf("got %v, want %v", err, tt.want)
			}
		})
	}
}

// FuzzDeltaApply: for any two inventories drawn from a pool of disks (a
// bit per disk says whether each holds it, another whether it is
// changed), the delta a sender makes, sent through the encoder and
// decoder, applied to the older one gives the newer exactly; when the
// sender refuses, announcing whole was the smaller or the only way.
func FuzzDeltaApply(f *testing.F) {
	f.Add(uint64(0), uint64(1), uint64(0))
	f.Add(uint64(0xffff), uint64(0xff00), uint64(0x0f0f))
	f.Add(uint64(1<<40-1), uint64(1<<41-1), uint64(1))
	pool := sampleDisks(64)
	pick := func(mask, ch uint64) []disk.Disk {
		var out []disk.Disk
		for i := range pool {
			if mask&(1<<i) != 0 {
				d := pool[i]
				if ch&(1<<i) != 0 {
					d.Label += "~"
				}
				out = append(out, d)
			}
		}
		return out
	}
	f.Fuzz(func(t *testing.T, a, b, ch uint64) {
		old, cur := NewInventory(pick(a, 0)), NewInventory(pick(b, ch))
		enc, dec := NewEncoder(testNode, testInstance, nil), NewDecoder(nil)
		asm := baseAt(t, enc, dec, AssemblerLimits{}, 1, old)
		dg, ok := enc.Delta(2, "h", 1, old, cur)
		if !ok {
			c := Diff(old, cur)
			if len(c.Upserts)+len(c.Removed) < 3 && enc.AnnounceSize("h", cur) > MaxDatagram {
				t.Fatalf("delta of %d changes refused", len(c.Upserts)+len(c.Removed))
			}
			return
		}
		p, err := dec.Decode(dg)
		if err != nil {
			t.Fatal(err)
		}
		c, err := asm.AddDelta(time.Now(), p.Header, p.Delta)
		if err != nil {
			t.Fatal(err)
		}
		if c.Digest != cur.Digest() || len(c.Disks) != cur.Len() {
			t.Fatalf("applied %d disks %v, want %d %v", len(c.Disks), c.Digest, cur.Len(), cur.Digest())
		}
	})
}

// TestDeltaOvertakesAnnounce: a delta applied while the announce of the
// same generation is still arriving ends that assembly; its late chunks
// are then of a generation already held.
func TestDeltaOvertakesAnnounce(t *testing.T) {
	enc, dec := NewEncoder(testNode, testInstance, nil), NewDecoder(nil)
	ds := sampleDisks(40)
	old, cur := NewInventory(ds[:39]), NewInventory(ds)
	asm := baseAt(t, enc, dec, AssemblerLimits{}, 1, old)
	chunks := enc.Announce(2, "h", cur)
	if len(chunks) < 2 {
		t.Fatalf("%d chunks", len(chunks))
	}
	p, _ := dec.Decode(chunks[0])
	if c, err := asm.Add(time.Now(), p.Header, p.Announce); c != nil || err != nil {
		t.Fatal(c, err)
	}
	b, ok := enc.Delta(2, "h", 1, old, cur)
	if !ok {
		t.Fatal("no delta")
	}
	p, _ = dec.Decode(b)
	if c, err := asm.AddDelta(time.Now(), p.Header, p.Delta); c == nil || err != nil {
		t.Fatal(c, err)
	}
	if _, _, _, _, pending := asm.Pending(testNode); pending || asm.PendingBytes() != 0 {
		t.Error("the overtaken assembly is still pending")
	}
	p, _ = dec.Decode(chunks[1])
	if _, err := asm.Add(time.Now(), p.Header, p.Announce); ReasonOf(err) != ReasonHaveGeneration {
		t.Errorf("late chunk: %v", err)
	}
}
