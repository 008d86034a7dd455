package wire

import (
	"testing"
	"time"
)

// packets encodes an announce of n sample disks and decodes it again.
func packets(t *testing.T, node NodeID, instance, gen uint64, n int) []*Packet {
	t.Helper()
	enc := NewEncoder(node, instance, nil)
	var out []*Packet
	for _, b := range enc.Announce(gen, "host", NewInventory(sampleDisks(n))) {
		p, err := NewDecoder(nil).Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, p)
	}
	return out
}

type step struct {
	p        *Packet
	complete bool
	reason   Reason
}

func run(t *testing.T, a *Assembler, steps []step) {
	t.Helper()
	now := time.Unix(1000, 0)
	for i, s := range steps {
		c, err := a.Add(now, s.p.Header, s.p.Announce)
		if got := ReasonOf(err); got != s.reason {
			t.Fatalf("step %d (gen %d chunk %d): reason %v, want %v (%v)", i, s.p.Generation, s.p.Announce.Chunk, got, s.reason, err)
		}
		if (c != nil) != s.complete {
			t.Fatalf("step %d (gen %d chunk %d): complete=%v, want %v", i, s.p.Generation, s.p.Announce.Chunk, c != nil, s.complete)
		}
		if c != nil {
			if c.Generation != s.p.Generation || c.Node != s.p.Node || c.Name != "host" {
				t.Fatalf("step %d: complete %+v", i, c)
			}
			for _, d := range c.Disks {
				if d.Node != s.p.Node.Domain() || d.Host != "host" {
					t.Fatalf("disk %+v not owned by the sender", d)
				}
			}
		}
	}
}

func TestAssembler(t *testing.T) {
	n1, n2, n3 := NodeID{1}, NodeID{2}, NodeID{3}
	const i1, i2 = 100 << 16, 200 << 16
	g5 := packets(t, n1, i1, 5, 30) // 3 chunks
	if len(g5) != 3 {
		t.Fatalf("want 3 chunks, got %d", len(g5))
	}
	g4 := packets(t, n1, i1, 4, 30)
	g6 := packets(t, n1, i1, 6, 1)
	g7 := packets(t, n1, i1, 7, 30)
	newInst := packets(t, n1, i2, 1, 1)
	last := len(g5) - 1

	tests := []struct {
		name  string
		lim   AssemblerLimits
		steps []step
		check func(*testing.T, *Assembler)
	}{
		{name: "out of order", steps: []step{{g5[last], false, 0}, {g5[0], false, 0}, {g5[1], true, 0}}},
		{name: "repeat chunk is ignored", steps: []step{{g5[0], false, 0}, {g5[0], false, 0}}},
		{name: "never backwards", steps: []step{{g6[0], true, 0}, {g5[0], false, ReasonOldGeneration}, {g6[0], false, ReasonHaveGeneration}}},
		{name: "newer generation discards older pending", steps: []step{{g5[0], false, 0}, {g6[0], true, 0}, {g5[1], false, ReasonOldGeneration}},
			check: func(t *testing.T, a *Assembler) {
				if _, _, _, _, ok := a.Pending(n1); ok || a.PendingBytes() != 0 {
					t.Errorf("still pending: %d bytes", a.PendingBytes())
				}
			}},
		{name: "new instance starts over", steps: []step{{g6[0], true, 0}, {newInst[0], true, 0}},
			check: func(t *testing.T, a *Assembler) {
				if inst, gen, _, ok := a.Applied(n1); !ok || inst != i2 || gen != 1 {
					t.Errorf("applied %x/%d", inst, gen)
				}
			}},
		{name: "pending per node keeps the newest", lim: AssemblerLimits{MaxPendingPerNode: 2},
			steps: []step{{g5[0], false, 0}, {g7[0], false, 0}, {g4[0], false, ReasonPendingFull}, {g6[0], true, 0}},
			check: func(t *testing.T, a *Assembler) {
				if gen, _, _, _, ok := a.Pending(n1); !ok || gen != 7 {
					t.Errorf("pending %d %v, want 7", gen, ok)
				}
			}},
		{name: "pending per node evicts the oldest", lim: AssemblerLimits{MaxPendingPerNode: 2},
			steps: []step{{g4[0], false, 0}, {g5[0], false, 0}, {g7[0], false, 0}, {g4[1], false, ReasonPendingFull}},
			check: func(t *testing.T, a *Assembler) {
				if a.Stats().Evicted != 1 {
					t.Errorf("evicted %d, want 1", a.Stats().Evicted)
				}
			}},
		{name: "pending in total", lim: AssemblerLimits{MaxPending: 2},
			steps: []step{
				{packets(t, n1, i1, 1, 30)[0], false, 0}, {packets(t, n2, i1, 1, 30)[0], false, 0},
				{packets(t, n3, i1, 1, 30)[0], false, 0}, {packets(t, n2, i1, 1, 30)[1], false, 0}},
			check: func(t *testing.T, a *Assembler) {
				if _, _, _, _, ok := a.Pending(n1); ok {
					t.Error("least recently used node 1 still pending")
				}
				if _, have, _, _, ok := a.Pending(n2); !ok || have != 2 {
					t.Error("node 2 lost its chunks")
				}
			}},
		{name: "pending bytes", lim: AssemblerLimits{MaxPendingBytes: 1500},
			steps: []step{{g5[0], false, 0}, {g5[1], false, ReasonPendingFull}},
			check: func(t *testing.T, a *Assembler) {
				if a.PendingBytes() != 0 {
					t.Errorf("%d bytes pending", a.PendingBytes())
				}
			}},
		{name: "too many disks", lim: AssemblerLimits{MaxDisks: 5}, steps: []step{{g5[0], false, ReasonTooManyDisks}}},
		{name: "nodes bound", lim: AssemblerLimits{MaxNodes: 1},
			steps: []step{{g5[0], false, 0}, {packets(t, n2, i1, 1, 1)[0], false, ReasonPendingFull}}},
		{name: "idle node evicted for a new one", lim: AssemblerLimits{MaxNodes: 1},
			steps: []step{{g6[0], true, 0}, {packets(t, n2, i1, 1, 1)[0], true, 0}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := NewAssembler(tt.lim)
			run(t, a, tt.steps)
			if tt.check != nil {
				tt.check(t, a)
			}
		})
	}
}

func TestAssemblerRejects(t *testing.T) {
	node := NodeID{9}
	t.Run("digest mismatch", func(t *testing.T) {
		ps := packets(t, node, 1, 1, 30)
		for _, p := range ps {
			p.Announce.Digest[0] ^= 1
		}
		steps := make([]step, len(ps))
		for i, p := range ps {
			steps[i] = step{p, false, 0}
		}
		steps[len(ps)-1].reason = ReasonBadDigest
		run(t, NewAssembler(AssemblerLimits{}), steps)
	})
	t.Run("disk listed twice", func(t *testing.T) {
		enc := NewEncoder(node, 1, nil)
		inv := NewInventory(sampleDisks(1))
		inv.entries = append(inv.entries, inv.entries[0])
		inv.digest = digestOf(inv.entries)
		p, err := NewDecoder(nil).Decode(enc.Announce(1, "host", inv)[0])
		if err != nil {
			t.Fatal(err)
		}
		run(t, NewAssembler(AssemblerLimits{}), []step{{p, false, ReasonBadInventory}})
	})
	t.Run("inconsistent chunk replaces", func(t *testing.T) {
		a := packets(t, node, 1, 1, 30)
		b := packets(t, node, 1, 1, 1) // same generation, other layout
		asm := NewAssembler(AssemblerLimits{})
		run(t, asm, []step{{a[0], false, 0}, {b[0], true, 0}})
		if asm.Stats().Inconsistent != 1 {
			t.Errorf("inconsistent %d", asm.Stats().Inconsistent)
		}
	})
	t.Run("expire and forget", func(t *testing.T) {
		asm := NewAssembler(AssemblerLimits{})
		ps := packets(t, node, 1, 1, 30)
		run(t, asm, []step{{ps[0], false, 0}})
		asm.Expire(time.Unix(999, 0))
		if _, _, _, _, ok := asm.Pending(node); !ok {
			t.Fatal("expired too early")
		}
		asm.Expire(time.Unix(1001, 0))
		if _, _, _, _, ok := asm.Pending(node); ok || asm.Stats().Expired != 1 || asm.PendingBytes() != 0 {
			t.Fatal("not expired")
		}
		run(t, asm, []step{{packets(t, node, 1, 2, 1)[0], true, 0}})
		asm.Forget(node)
		if _, _, _, ok := asm.Applied(node); ok {
			t.Fatal("forgotten node still applied")
		}
	})
	t.Run("empty inventory", func(t *testing.T) {
		asm := NewAssembler(AssemblerLimits{})
		p := packets(t, node, 1, 1, 0)[0]
		c, err := asm.Add(time.Now(), p.Header, p.Announce)
		if err != nil || c == nil || len(c.Disks) != 0 || c.Disks == nil {
			t.Fatalf("%+v %v", c, err)
		}
	})
}

func BenchmarkAnnounce1000(b *testing.B) {
	disks := sampleDisks(1000)
	kr := testKeys(b, key1)
	enc := NewEncoder(testNode, testInstance, kr)
	dec := NewDecoder(kr)
	b.ReportAllocs()
	for b.Loop() {
		asm := NewAssembler(AssemblerLimits{})
		dgs := enc.Announce(1, "host", NewInventory(disks))
		for _, d := range dgs {
			p, err := dec.Decode(d)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := asm.Add(time.Now(), p.Header, p.Announce); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(len(dgs)), "datagrams")
	}
}
