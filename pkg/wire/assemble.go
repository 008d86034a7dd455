package wire

import (
	"fmt"
	"time"

	"github.com/diskd/diskd/pkg/disk"
)

// AssemblerLimits bound what an Assembler holds.
type AssemblerLimits struct {
	MaxNodes          int // nodes tracked (0: 4096)
	MaxDisks          int // disks per generation (0: MaxDisks)
	MaxPendingPerNode int // incomplete generations per node (0: 2)
	MaxPending        int // incomplete generations in total (0: 64)
	MaxPendingBytes   int // bytes of disk entries held incomplete (0: 16 MiB)
	// MaxBaseBytes bounds the bytes of the last complete inventories kept
	// as the bases deltas apply to (0: 16 MiB, about 100,000 typical
	// disks; negative: none kept, every delta is refused as ReasonNoBase).
	// Over it, the least recently used node's base goes; its next delta is
	// then recovered by query.
	MaxBaseBytes int
}

func (l *AssemblerLimits) defaults() {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&l.MaxNodes, 4096)
	def(&l.MaxDisks, MaxDisks)
	def(&l.MaxPendingPerNode, 2)
	def(&l.MaxPending, 64)
	def(&l.MaxPendingBytes, 16<<20)
	if l.MaxBaseBytes == 0 {
		l.MaxBaseBytes = 16 << 20
	}
}

// AssemblerStats counts what an Assembler threw away on its own initiative.
type AssemblerStats struct {
	Evicted      uint64 // incomplete generations dropped to make room
	Expired      uint64 // incomplete generations that stopped progressing
	Inconsistent uint64 // incomplete generations replaced by a chunk that disagreed
	BasesEvicted uint64 // complete inventories forgotten to stay within MaxBaseBytes
}

// Complete is a generation whose every chunk arrived and whose digest
// matched.
type Complete struct {
	Node       NodeID
	Instance   uint64
	Generation uint64
	Name       string
	Digest     Digest
	Disks      []disk.Disk // owned by the node, Host set to Name
}

// Assembler puts announce chunks together into complete inventories. Per
// node it applies a generation only when all its chunks are there and it is
// newer than the last one applied for that instance, so a node's inventory
// never goes backwards (the generation applied is taken again only with
// another digest: the sender changed it without a new number). It does not judge instances: the caller must have
// dropped datagrams of an instance older than the node's current one; a
// different instance here replaces the node's state. Not safe for
// concurrent use.
type Assembler struct {
	lim   AssemblerLimits
	nodes map[NodeID]*asmNode
	count int // incomplete generations
	bytes int
	// baseBytes is what the nodes' bases hold.
	baseBytes int
	stats     AssemblerStats
	clock     uint64 // orders touches for LRU eviction
}

type asmNode struct {
	instance uint64
	applied  bool
	gen      uint64
	digest   Digest
	pending  []*partial
	used     uint64
	base     *Inventory // of gen, for deltas; nil when not kept
}

type partial struct {
	node   NodeID
	gen    uint64
	digest Digest
	name   string
	chunks int
	// got holds the chunks received, sparse: a claimed chunk count costs
	// nothing until chunks arrive.
	got      map[int]chunk
	ndisks   int
	bytes    int
	touched  time.Time
	lastUsed uint64
}

type chunk struct {
	disks []Disk
	raw   [][]byte
}

// NewAssembler returns an empty assembler.
func NewAssembler(lim AssemblerLimits) *Assembler {
	lim.defaults()
	return &Assembler{lim: lim, nodes: make(map[NodeID]*asmNode)}
}

// Stats returns the assembler's counters.
func (a *Assembler) Stats() AssemblerStats { return a.stats }

// PendingBytes returns the bytes of disk entries held for incomplete
// generations.
func (a *Assembler) PendingBytes() int { return a.bytes }

// Applied returns the instance and generation last applied for node.
func (a *Assembler) Applied(node NodeID) (instance, gen uint64, digest Digest, ok bool) {
	n := a.nodes[node]
	if n == nil || !n.applied {
		return 0, 0, Digest{}, false
	}
	return n.instance, n.gen, n.digest, true
}

// Pending reports the newest incomplete generation of node: its number,
// the chunks received and expected, and when the last one came.
func (a *Assembler) Pending(node NodeID) (gen uint64, have, of int, last time.Time, ok bool) {
	n := a.nodes[node]
	if n == nil {
		return 0, 0, 0, time.Time{}, false
	}
	var best *partial
	for _, p := range n.pending {
		if best == nil || p.gen > best.gen {
			best = p
		}
	}
	if best == nil {
		return 0, 0, 0, time.Time{}, false
	}
	return best.gen, len(best.got), best.chunks, best.touched, true
}

// Forget drops everything about node.
func (a *Assembler) Forget(node NodeID) {
	if n := a.nodes[node]; n != nil {
		for len(n.pending) > 0 {
			a.remove(n, n.pending[0])
		}
		a.setBase(n, nil)
		delete(a.nodes, node)
	}
}

// Expire drops incomplete generations that received nothing since before.
func (a *Assembler) Expire(before time.Time) {
	for _, n := range a.nodes {
		for i := 0; i < len(n.pending); {
			if p := n.pending[i]; p.touched.Before(before) {
				a.remove(n, p)
				a.stats.Expired++
				continue
			}
			i++
		}
	}
}

func (a *Assembler) remove(n *asmNode, p *partial) {
	for i, q := range n.pending {
		if q == p {
			n.pending = append(n.pending[:i], n.pending[i+1:]...)
			a.count--
			a.bytes -= p.bytes
			return
		}
	}
}

// evictLRU drops the least recently used incomplete generation other than
// keep, and reports whether there was one.
func (a *Assembler) evictLRU(keep *partial) bool {
	var vn *asmNode
	var vp *partial
	for _, n := range a.nodes {
		for _, p := range n.pending {
			if p != keep && (vp == nil || p.lastUsed < vp.lastUsed) {
				vn, vp = n, p
			}
		}
	}
	if vp == nil {
		return false
	}
	a.remove(vn, vp)
	a.stats.Evicted++
	return true
}

// Add offers one announce chunk received at now. It returns the complete
// generation when this chunk completes one, nil otherwise; a *DropError
// says why the chunk (or its generation) was dropped.
func (a *Assembler) Add(now time.Time, h Header, an *Announce) (*Complete, error) {
	a.clock++
	n := a.nodes[h.Node]
	if n == nil {
		if len(a.nodes) >= a.lim.MaxNodes && !a.evictIdleNode() {
			return nil, drop(ReasonPendingFull, "tracking %d nodes", len(a.nodes))
		}
		n = &asmNode{instance: h.Instance}
		a.nodes[h.Node] = n
	}
	n.used = a.clock
	if n.instance != h.Instance {
		for len(n.pending) > 0 {
			a.remove(n, n.pending[0])
		}
		a.setBase(n, nil)
		*n = asmNode{instance: h.Instance, used: a.clock}
	}
	// A generation already applied is taken again only with another digest:
	// the sender's inventory changed without a new generation, and the
	// newest word wins.
	if n.applied && h.Generation <= n.gen && !(h.Generation == n.gen && an.Digest != n.digest) {
		if h.Generation == n.gen {
			return nil, drop(ReasonHaveGeneration, "generation %d", h.Generation)
		}
		return nil, drop(ReasonOldGeneration, "generation %d < %d", h.Generation, n.gen)
	}
	var p *partial
	for _, q := range n.pending {
		if q.gen == h.Generation {
			p = q
		}
	}
	if p != nil && (p.chunks != an.Chunks || p.digest != an.Digest) {
		// The sender's last word wins: an honest sender never sends two
		// layouts of one generation, so one of them is garbage anyway.
		a.remove(n, p)
		a.stats.Inconsistent++
		p = nil
	}
	if p == nil {
		if len(n.pending) >= a.lim.MaxPendingPerNode {
			low := n.pending[0]
			for _, q := range n.pending {
				if q.gen < low.gen {
					low = q
				}
			}
			if h.Generation < low.gen {
				return nil, drop(ReasonPendingFull, "generation %d older than those pending", h.Generation)
			}
			a.remove(n, low)
			a.stats.Evicted++
		}
		for a.count >= a.lim.MaxPending && a.evictLRU(nil) {
		}
		p = &partial{node: h.Node, gen: h.Generation, digest: an.Digest, chunks: an.Chunks, got: map[int]chunk{}}
		n.pending = append(n.pending, p)
		a.count++
	}
	p.touched = now
	p.lastUsed = a.clock
	p.name = an.Name
	if _, ok := p.got[an.Chunk]; ok {
		return nil, nil // a repeat (an answer to someone else's query)
	}
	p.got[an.Chunk] = chunk{disks: an.Disks, raw: an.raw}
	p.ndisks += len(an.Disks)
	size := 0
	for _, r := range an.raw {
		size += len(r)
	}
	p.bytes += size
	a.bytes += size
	if p.ndisks > a.lim.MaxDisks {
		a.remove(n, p)
		return nil, drop(ReasonTooManyDisks, "generation %d has more than %d disks", h.Generation, a.lim.MaxDisks)
	}
	for a.bytes > a.lim.MaxPendingBytes {
		if !a.evictLRU(p) {
			a.remove(n, p)
			return nil, drop(ReasonPendingFull, "generation %d alone exceeds %d bytes", h.Generation, a.lim.MaxPendingBytes)
		}
	}
	if len(p.got) < p.chunks {
		return nil, nil
	}

	a.remove(n, p)
	var raw [][]byte
	for i := range p.chunks {
		raw = append(raw, p.got[i].raw...)
	}
	if d := digestOf(raw); d != p.digest {
		return nil, drop(ReasonBadDigest, "generation %d: digest %v, announced %v", h.Generation, d, p.digest)
	}
	c := &Complete{Node: h.Node, Instance: h.Instance, Generation: h.Generation, Name: p.name,
		Digest: p.digest, Disks: make([]disk.Disk, 0, p.ndisks)}
	id := h.Node.Domain()
	seen := make(map[string]bool, p.ndisks)
	base := &Inventory{entries: raw, names: make([]string, 0, p.ndisks), digest: p.digest}
	sorted := true
	for i := range p.chunks {
		ch := p.got[i].disks
		for j := range ch {
			if seen[ch[j].Name] {
				return nil, drop(ReasonBadInventory, "generation %d lists %q twice", h.Generation, ch[j].Name)
			}
			seen[ch[j].Name] = true
			if k := len(base.names); k > 0 && base.names[k-1] >= ch[j].Name {
				sorted = false
			}
			base.names = append(base.names, ch[j].Name)
			c.Disks = append(c.Disks, ch[j].ToDisk(id, p.name))
		}
	}
	if !sorted {
		base = nil // no delta can apply to it: one from a sender that sorts otherwise goes by query
	}
	a.applied(n, h.Generation, p.digest, base)
	return c, nil
}

// applied records generation gen (digest, entries base) as node n's.
func (a *Assembler) applied(n *asmNode, gen uint64, digest Digest, base *Inventory) {
	n.applied, n.gen, n.digest = true, gen, digest
	a.setBase(n, base)
	for i := 0; i < len(n.pending); {
		if q := n.pending[i]; q.gen <= gen { // a delta may overtake an announce's chunks
			a.remove(n, q)
			continue
		}
		i++
	}
}

// setBase replaces n's base, keeping the bases within MaxBaseBytes by
// forgetting the least recently used other nodes' ones.
func (a *Assembler) setBase(n *asmNode, base *Inventory) {
	if n.base != nil {
		a.baseBytes -= n.base.size()
		n.base = nil
	}
	if base == nil || a.lim.MaxBaseBytes < 0 {
		return
	}
	size := base.size()
	if size > a.lim.MaxBaseBytes {
		a.stats.BasesEvicted++
		return
	}
	for a.baseBytes+size > a.lim.MaxBaseBytes {
		var v *asmNode
		for _, o := range a.nodes {
			if o != n && o.base != nil && (v == nil || o.used < v.used) {
				v = o
			}
		}
		if v == nil {
			break
		}
		a.baseBytes -= v.base.size()
		v.base = nil
		a.stats.BasesEvicted++
	}
	n.base = base
	a.baseBytes += size
}

// BaseBytes returns the bytes held as bases for deltas.
func (a *Assembler) BaseBytes() int { return a.baseBytes }

// AddDelta offers a delta announce received at now. When the assembler
// holds exactly its base (the node's instance, the base generation and
// digest, and the inventory kept), it returns the complete generation the
// delta makes, checked against the delta's digest. Otherwise it returns a
// *DropError: ReasonNoBase when the base is not held (the caller recovers
// by query), ReasonHaveGeneration or ReasonOldGeneration when the node is
// already there or past it, ReasonBadDigest when the result is not what
// the sender meant, ReasonTooManyDisks beyond the disks' limit.
func (a *Assembler) AddDelta(now time.Time, h Header, d *Delta) (*Complete, error) {
	a.clock++
	n := a.nodes[h.Node]
	if n == nil || !n.applied || n.instance != h.Instance {
		return nil, drop(ReasonNoBase, "delta from generation %d: nothing applied", d.Base)
	}
	n.used = a.clock
	switch {
	case h.Generation == n.gen && d.Digest == n.digest:
		return nil, drop(ReasonHaveGeneration, "generation %d", h.Generation)
	case h.Generation < n.gen:
		return nil, drop(ReasonOldGeneration, "generation %d < %d", h.Generation, n.gen)
	case n.base == nil || d.Base != n.gen || d.BaseDigest != n.digest:
		return nil, drop(ReasonNoBase, "delta from generation %d, holding %d", d.Base, n.gen)
	}
	inv := n.base.Apply(d.names(), d.raw, d.Removed)
	if inv.digest != d.Digest {
		return nil, drop(ReasonBadDigest, "generation %d: digest %v, announced %v", h.Generation, inv.digest, d.Digest)
	}
	if len(inv.entries) > a.lim.MaxDisks {
		return nil, drop(ReasonTooManyDisks, "generation %d has more than %d disks", h.Generation, a.lim.MaxDisks)
	}
	c := &Complete{Node: h.Node, Instance: h.Instance, Generation: h.Generation, Name: d.Name,
		Digest: d.Digest, Disks: make([]disk.Disk, len(inv.entries))}
	id := h.Node.Domain()
	for i, raw := range inv.entries {
		var w Disk
		if err := decMode.Unmarshal(raw, &w); err != nil { // checked when received; cannot fail
			return nil, &DropError{ReasonBadBody, fmt.Errorf("delta base entry %d: %w", i, err)}
		}
		c.Disks[i] = w.ToDisk(id, d.Name)
	}
	a.applied(n, h.Generation, d.Digest, inv)
	return c, nil
}

// evictIdleNode forgets the least recently used node with nothing pending.
func (a *Assembler) evictIdleNode() bool {
	var vid NodeID
	var vn *asmNode
	for id, n := range a.nodes {
		if len(n.pending) == 0 && (vn == nil || n.used < vn.used) {
			vid, vn = id, n
		}
	}
	if vn == nil {
		return false
	}
	a.setBase(vn, nil)
	delete(a.nodes, vid)
	return true
}
