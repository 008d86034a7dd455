package gossip

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/diskd/diskd/pkg/disk"
	"github.com/diskd/diskd/pkg/wire"
)

func id(c byte) disk.NodeID {
	b := make([]byte, 32)
	for i := range b {
		b[i] = c
	}
	return disk.NodeID(b)
}

var (
	self             = id('0')
	origA, origB     = id('a'), id('b')
	relay1, relay2   = id('1'), id('2')
	digest1, digest2 = wire.Digest{1}, wire.Digest{2}
)

// TestTableApply: the store's rules on the gossip path, claim by claim.
func TestTableApply(t *testing.T) {
	type step struct {
		f      fact
		news   bool
		online bool
		inst   uint64
		gen    uint64
		vias   []disk.NodeID
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"origin speaks for itself", []step{
			{fact{origin: origA, via: origA, name: "a", instance: 5, gen: 1, digest: digest1}, true, true, 5, 1, []disk.NodeID{origA}},
			{fact{origin: origA, via: origA, name: "a", instance: 5, gen: 1, digest: digest1}, false, true, 5, 1, []disk.NodeID{origA}},
			{fact{origin: origA, via: origA, name: "a", instance: 5, gen: 2, digest: digest2}, true, true, 5, 2, []disk.NodeID{origA}},
		}},
		{"generations never go backwards", []step{
			{fact{origin: origA, via: relay1, name: "a", instance: 5, gen: 3, digest: digest1}, true, true, 5, 3, []disk.NodeID{relay1}},
			{fact{origin: origA, via: relay2, name: "a", instance: 5, gen: 2, digest: digest2}, false, true, 5, 3, []disk.NodeID{relay1}},
		}},
		{"newest instance wins, older is ignored", []step{
			{fact{origin: origA, via: relay1, name: "a", instance: 5, gen: 9, digest: digest1}, true, true, 5, 9, []disk.NodeID{relay1}},
			{fact{origin: origA, via: relay1, name: "a", instance: 6, gen: 0, digest: digest2}, true, true, 6, 0, []disk.NodeID{relay1}},
			{fact{origin: origA, via: relay2, name: "a", instance: 5, gen: 10, digest: digest1}, false, true, 6, 0, []disk.NodeID{relay1}},
		}},
		{"two relays vouch; offline when neither does", []step{
			{fact{origin: origA, via: relay1, name: "a", instance: 5, gen: 1, digest: digest1}, true, true, 5, 1, []disk.NodeID{relay1}},
			{fact{origin: origA, via: relay2, name: "a", instance: 5, gen: 1, digest: digest1}, true, true, 5, 1, []disk.NodeID{relay1, relay2}},
			{fact{origin: origA, via: relay1, instance: 5, gen: 1, offline: true}, true, true, 5, 1, []disk.NodeID{relay2}},
			{fact{origin: origA, via: relay1, instance: 5, gen: 1, offline: true}, false, true, 5, 1, []disk.NodeID{relay2}},
			{fact{origin: origA, via: relay2, instance: 5, gen: 1, offline: true}, true, false, 5, 1, nil},
		}},
		{"a relay's digest does not override at the same generation", []step{
			{fact{origin: origA, via: relay1, name: "a", instance: 5, gen: 1, digest: digest1}, true, true, 5, 1, []disk.NodeID{relay1}},
			{fact{origin: origA, via: relay2, name: "a", instance: 5, gen: 1, digest: digest2}, true, true, 5, 1, []disk.NodeID{relay1, relay2}},
		}},
		{"nobody relays us to ourselves", []step{
			{fact{origin: self, via: relay1, name: "me", instance: 5, gen: 1}, false, false, 0, 0, nil},
		}},
		{"an offline claim about an unknown origin creates nothing", []step{
			{fact{origin: origB, via: relay1, instance: 5, gen: 1, offline: true}, false, false, 0, 0, nil},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tb := newTable(self, 16)
			for i, s := range tc.steps {
				if got := tb.apply(s.f); got != s.news {
					t.Errorf("step %d: news %v, want %v", i, got, s.news)
				}
				o := tb.origins[s.f.origin]
				var online bool
				var inst, gen uint64
				var vias []disk.NodeID
				if o != nil {
					online, inst, gen = o.online(), o.instance, o.gen
					vias = slices.Sorted(mapKeys(o.vias))
				}
				if online != s.online || inst != s.inst || gen != s.gen || !slices.Equal(vias, s.vias) {
					t.Errorf("step %d: online %v instance %d gen %d vias %v; want %v %d %d %v",
						i, online, inst, gen, vias, s.online, s.inst, s.gen, s.vias)
				}
			}
		})
	}
}

// TestTableMemberGone: a departed member takes offline exactly the
// origins only it vouched for.
func TestTableMemberGone(t *testing.T) {
	tb := newTable(self, 16)
	tb.apply(fact{origin: relay1, via: relay1, name: "r1", instance: 1})
	tb.apply(fact{origin: origA, via: relay1, name: "a", instance: 1})
	tb.apply(fact{origin: origB, via: relay1, name: "b", instance: 1})
	tb.apply(fact{origin: origB, via: relay2, name: "b", instance: 1})
	got := tb.memberGone(relay1)
	want := []disk.NodeID{relay1, origA}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("offline %v, want %v", got, want)
	}
	if !tb.origins[origB].online() {
		t.Error("b went offline although relay2 still vouches for it")
	}
}

// TestTableFetch: whom to ask, when to ask again, what to apply.
func TestTableFetch(t *testing.T) {
	now := time.Unix(1000, 0)
	tb := newTable(self, 16)
	tb.apply(fact{origin: origA, via: relay1, name: "a", instance: 5, gen: 2, digest: digest1})
	tb.apply(fact{origin: origA, via: relay2, name: "a", instance: 5, gen: 2, digest: digest1})
	tb.apply(fact{origin: relay1, via: relay1, name: "r1", instance: 7, gen: 1, digest: digest2})

	got := tb.wants(now, nil)
	want := []fetch{{origin: relay1, from: relay1, inst: 7, gen: 1}, {origin: origA, from: relay1, inst: 5, gen: 2}}
	slices.SortFunc(want, func(a, b fetch) int { return compareID(a.origin, b.origin) })
	if !slices.Equal(got, want) {
		t.Fatalf("wants %v, want %v", got, want)
	}
	if got := tb.wants(now.Add(time.Second), nil); len(got) != 0 {
		t.Errorf("asked again within fetchRetry: %v", got)
	}
	// Unanswered: the next relay is asked.
	if got := tb.wants(now.Add(fetchRetry), nil); !slices.Contains(got, fetch{origin: origA, from: relay2, inst: 5, gen: 2}) {
		t.Errorf("retry %v, want origA from relay2", got)
	}
	// An answer older than the store's is refused; the current one applied.
	if !tb.fetched(fact{origin: origA, name: "a", instance: 5, gen: 2, digest: digest1}) {
		t.Fatal("current generation refused")
	}
	if tb.fetched(fact{origin: origA, name: "a", instance: 5, gen: 1, digest: digest2}) {
		t.Error("older generation applied")
	}
	if tb.fetched(fact{origin: origA, name: "a", instance: 4, gen: 9, digest: digest2}) {
		t.Error("older instance applied")
	}
	if got := tb.wants(now.Add(2*fetchRetry), nil); slices.ContainsFunc(got, func(f fetch) bool { return f.origin == origA }) {
		t.Errorf("fetching origA although the store has its generation: %v", got)
	}
	// Gone and back: fetched again.
	tb.memberGone(relay1)
	tb.memberGone(relay2)
	tb.wentOffline(origA)
	tb.apply(fact{origin: origA, via: relay2, name: "a", instance: 5, gen: 2, digest: digest1})
	if got := tb.wants(now.Add(3*fetchRetry), nil); !slices.Contains(got, fetch{origin: origA, from: relay2, inst: 5, gen: 2}) {
		t.Errorf("after coming back: %v, want a fetch of origA", got)
	}
}

// TestTableBound: the table holds at most max origins, forgetting one no
// member vouches for to make room, never a live one.
func TestTableBound(t *testing.T) {
	tb := newTable(self, 2)
	tb.apply(fact{origin: origA, via: relay1, name: "a", instance: 1})
	tb.apply(fact{origin: origB, via: relay1, name: "b", instance: 1})
	if tb.apply(fact{origin: relay2, via: relay2, name: "r2", instance: 1}) {
		t.Error("a third origin taken while two live ones fill the table")
	}
	tb.memberGone(relay1)
	if !tb.apply(fact{origin: relay2, via: relay2, name: "r2", instance: 1}) || len(tb.origins) != 2 {
		t.Errorf("no room made from an offline origin: %d origins", len(tb.origins))
	}
}

// TestMessagesRoundTrip: claims survive encoding; malformed ones are refused.
func TestMessagesRoundTrip(t *testing.T) {
	for _, f := range []fact{
		{origin: origA, via: relay1, name: "a", instance: 5, gen: 2, digest: digest1},
		{origin: origA, via: relay1, name: "a", instance: 5, gen: 2, digest: digest1, addrs: "10.1.0.2,fd00:1::2"},
	} {
		b := encode(msgNotice, f.claim())
		var c claim
		if err := decode(b[1:], &c); err != nil {
			t.Fatal(err)
		}
		got, err := c.check()
		if err != nil || got != f {
			t.Fatalf("round trip %+v, %v; want %+v", got, err, f)
		}
	}
	v4 := []byte{10, 1, 0, 2}
	nine := make([][]byte, MaxAddrs+1)
	for i := range nine {
		nine[i] = []byte{10, 1, 0, byte(i + 1)}
	}
	for name, bad := range map[string]claim{
		"short origin":  {Origin: []byte{1}, Via: idBytes(relay1), Name: "a", Instance: 1, Digest: make([]byte, 8)},
		"control char":  {Origin: idBytes(origA), Via: idBytes(relay1), Name: "a\x1b[2J", Instance: 1, Digest: make([]byte, 8)},
		"long name":     {Origin: idBytes(origA), Via: idBytes(relay1), Name: string(make([]byte, 65)), Instance: 1, Digest: make([]byte, 8)},
		"digest size":   {Origin: idBytes(origA), Via: idBytes(relay1), Name: "a", Instance: 1, Digest: make([]byte, 7)},
		"zero instance": {Origin: idBytes(origA), Via: idBytes(relay1), Name: "a", Digest: make([]byte, 8)},
		"9 addresses":   {Origin: idBytes(origA), Via: idBytes(relay1), Name: "a", Instance: 1, Digest: make([]byte, 8), Addrs: nine},
		"address size":  {Origin: idBytes(origA), Via: idBytes(relay1), Name: "a", Instance: 1, Digest: make([]byte, 8), Addrs: [][]byte{v4, {10, 1, 0}}},
		"link-local":    {Origin: idBytes(origA), Via: idBytes(relay1), Name: "a", Instance: 1, Digest: make([]byte, 8), Addrs: [][]byte{{169, 254, 1, 1}}},
		"multicast":     {Origin: idBytes(origA), Via: idBytes(relay1), Name: "a", Instance: 1, Digest: make([]byte, 8), Addrs: [][]byte{{239, 255, 68, 75}}},
		"loopback":      {Origin: idBytes(origA), Via: idBytes(relay1), Name: "a", Instance: 1, Digest: make([]byte, 8), Addrs: [][]byte{{127, 0, 0, 1}}},
	} {
		if _, err := bad.check(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if got := routableAddrs([]string{"fe80::1", "10.1.0.2", "::ffff:10.1.0.2", "fd00:1::2", "127.0.0.1", "x"}); got != "10.1.0.2,fd00:1::2" {
		t.Errorf("routableAddrs: %q", got)
	}
	var c claim
	if err := decode([]byte{0xf6}, &c); err == nil {
		t.Error("CBOR null accepted as a claim")
	}
	if _, err := decodeMeta(origA, make([]byte, MetaMax+1)); err == nil {
		t.Error("oversized meta accepted")
	}
}

// TestTreeParent: the members in ID order from the source form a tree of
// fanout treeFanout; a member's first ask goes to its parent, the source's
// first treeFanout successors ask the source.
func TestTreeParent(t *testing.T) {
	var ms []disk.NodeID
	for i := range 100 {
		ms = append(ms, disk.NodeID(fmt.Sprintf("%032x", i)))
	}
	for name, c := range map[string]struct {
		self, source int
		want         int // -1: ask the source
	}{
		"the source itself":       {5, 5, -1},
		"first child":             {6, 5, -1},
		"last child":              {5 + treeFanout, 5, -1},
		"first grandchild":        {5 + treeFanout + 1, 5, 6},
		"ninth of second level":   {5 + 2*treeFanout + 1, 5, 7},
		"wrapping around the end": {4, 5, 5 + (99-1)/treeFanout},
		"third level":             {5 + treeFanout + treeFanout*treeFanout + 1, 5, 5 + treeFanout + 1},
	} {
		got := treeParent(ms, ms[c.self], ms[c.source])
		want := disk.NodeID("")
		if c.want >= 0 {
			want = ms[c.want%100]
		}
		if got != want {
			t.Errorf("%s: parent %q, want %q", name, got, want)
		}
	}
	if got := treeParent(ms, "ffffffffffffffffffffffffffffffff", ms[0]); got != "" {
		t.Errorf("self not a member: %q", got)
	}
	// Every member but the source has a parent chain that ends at the
	// source in at most 3 steps at 100 members (fanout 8: 1+8+64 < 100).
	for i := 1; i < 100; i++ {
		steps, at := 0, ms[i]
		for at != "" && at != ms[0] {
			at = treeParent(ms, at, ms[0])
			steps++
		}
		if steps > 3 {
			t.Errorf("member %d: %d steps to the source", i, steps)
		}
	}
}
