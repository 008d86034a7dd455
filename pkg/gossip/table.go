package gossip

import (
	"maps"
	"slices"
	"time"

	"github.com/diskd/diskd/pkg/disk"
	"github.com/diskd/diskd/pkg/wire"
)

// table is what the gossip path knows of every origin node, without I/O:
// claims in, decisions out (what is news, what to fetch from whom, who went
// offline). The Service owns one under its mutex.
//
// The rules are the datagrams' (docs/protocol.md): for one origin the
// newest instance wins and generations never go backwards; an origin is
// online while at least one live member vouches for it (itself when it is
// a member, else a relay that hears it by multicast).
type table struct {
	self    disk.NodeID
	max     int
	origins map[disk.NodeID]*origin
}

type origin struct {
	id       disk.NodeID
	name     string
	instance uint64
	gen      uint64
	digest   wire.Digest
	vias     map[disk.NodeID]bool // members vouching for it
	addrs    string               // routable addresses a relay said (fact.addrs)

	// What the store holds from the gossip path.
	applied             bool
	appInstance, appGen uint64
	appDigest           wire.Digest
	// The inventory last applied, kept while the origin is offline: a
	// member that flaps (suspected under load, then refuted) comes back
	// with the same generation, which is then applied again from here
	// instead of fetched.
	cache                   []disk.Disk
	cacheInstance, cacheGen uint64
	cacheDigest             wire.Digest
	fetchAt                 time.Time // a fetch in flight since then
	fetchFrom               disk.NodeID
	fetchTries              int
}

func newTable(self disk.NodeID, max int) *table {
	return &table{self: self, max: max, origins: make(map[disk.NodeID]*origin)}
}

// online reports whether some member vouches for o.
func (o *origin) online() bool { return len(o.vias) > 0 }

// missing reports whether the store lacks o's newest generation.
func (o *origin) missing() bool {
	return !o.applied || o.appInstance != o.instance || o.appGen < o.gen ||
		o.appGen == o.gen && o.appDigest != o.digest
}

// apply takes one fact from a member (via must be alive; the caller
// checks). It reports whether the fact was news: a newer generation or
// instance, a new name, a member starting or stopping to vouch. News is
// what a notice's receiver broadcasts again.
func (t *table) apply(f fact) (news bool) {
	if f.origin == t.self {
		return false // nobody knows us better than we do
	}
	o := t.origins[f.origin]
	if o == nil {
		if f.offline {
			return false
		}
		if len(t.origins) >= t.max && !t.evict() {
			return false
		}
		o = &origin{id: f.origin, vias: map[disk.NodeID]bool{}}
		t.origins[f.origin] = o
	}
	if f.instance < o.instance || f.instance == o.instance && f.gen < o.gen {
		return false // older than what we know: a late or replayed claim
	}
	if f.offline {
		if !o.vias[f.via] {
			return false
		}
		delete(o.vias, f.via)
		return true
	}
	if f.instance > o.instance || f.gen > o.gen || o.instance == 0 {
		o.instance, o.gen, o.digest = f.instance, f.gen, f.digest
		news = true
	} else if f.digest != o.digest && f.via == f.origin {
		// Same generation, another digest: only the origin itself may say so.
		o.digest = f.digest
		news = true
	}
	if o.name != f.name {
		o.name, news = f.name, true
	}
	if f.addrs != "" && f.addrs != o.addrs {
		o.addrs, news = f.addrs, true
	}
	if !o.vias[f.via] {
		o.vias[f.via] = true
		news = true
	}
	return news
}

// evict forgets an origin nobody vouches for, to make room.
func (t *table) evict() bool {
	for id, o := range t.origins {
		if !o.online() {
			delete(t.origins, id)
			return true
		}
	}
	return false
}

// memberGone removes a departed member's vouches and returns the origins
// left with none (now offline on the gossip path).
func (t *table) memberGone(m disk.NodeID) (offline []disk.NodeID) {
	for _, o := range t.origins {
		if o.vias[m] {
			delete(o.vias, m)
			if !o.online() {
				offline = append(offline, o.id)
			}
		}
	}
	slices.Sort(offline)
	return offline
}

// fetch is one inventory to ask for, and whom to ask.
type fetch struct {
	origin, from disk.NodeID
	inst, gen    uint64 // the generation wanted
}

// fetchRetry is how long a first fetch may stay unanswered before it is
// asked again (of the next member vouching for the origin); each retry
// waits twice as long, up to fetchRetryMax, so a loaded network is not
// flooded with repeats.
const (
	fetchRetry    = 5 * time.Second
	fetchRetryMax = 30 * time.Second
	// maxInFlight bounds the fetches a node has outstanding: a node that
	// joins a large network asks for the inventories a few at a time.
	maxInFlight = 16
)

func (o *origin) retryAfter() time.Duration {
	d := fetchRetry
	for i := 1; i < o.fetchTries && d < fetchRetryMax; i++ {
		d *= 2
	}
	return min(d, fetchRetryMax)
}

// wants returns the fetches due at now, at most maxInFlight outstanding,
// and marks them in flight. The source is the origin itself when it is a
// member, otherwise its relays in turn. The first try for a newer
// generation of an inventory we hold asks parent(source) instead when it
// names a member (a member that holds, or will soon hold, the generation:
// see treeParent), so a source serves a few members per change, not every
// one; a retry asks the source.
func (t *table) wants(now time.Time, parent func(source disk.NodeID) disk.NodeID) []fetch {
	var out []fetch
	var due []*origin
	inFlight := 0
	for _, o := range t.origins {
		if !o.online() || !o.missing() {
			o.fetchAt, o.fetchTries = time.Time{}, 0
			continue
		}
		if !o.fetchAt.IsZero() && now.Sub(o.fetchAt) < o.retryAfter() {
			inFlight++
			continue
		}
		due = append(due, o)
	}
	// Oldest request first, then by ID, so every origin gets its turn.
	slices.SortFunc(due, func(a, b *origin) int {
		if c := a.fetchAt.Compare(b.fetchAt); c != 0 {
			return c
		}
		return compareID(a.id, b.id)
	})
	for _, o := range due {
		if inFlight >= maxInFlight {
			break
		}
		inFlight++
		from := o.id
		if !o.vias[o.id] {
			vs := slices.Sorted(maps.Keys(o.vias))
			from = vs[o.fetchTries%len(vs)]
		}
		// Only a change goes down the tree: a node new to us (a start, a
		// join, a restart) is fetched from its source, as the others are
		// fetching theirs at the same moment, and a parent would only
		// hold requests it cannot answer yet.
		if o.fetchTries == 0 && o.applied && parent != nil {
			if p := parent(from); p != "" {
				from = p
			}
		}
		o.fetchAt, o.fetchFrom = now, from
		o.fetchTries++
		out = append(out, fetch{origin: o.id, from: from, inst: o.instance, gen: o.gen})
	}
	slices.SortFunc(out, func(a, b fetch) int { return compareID(a.origin, b.origin) })
	return out
}

func compareID(a, b disk.NodeID) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// unknown records that the member asked for id's inventory did not have
// it: the next fetch is due at once, and goes to the source.
func (t *table) unknown(id, from disk.NodeID) {
	if o := t.origins[id]; o != nil && o.fetchFrom == from && !o.fetchAt.IsZero() {
		o.fetchAt = time.Time{}
		o.fetchTries = max(o.fetchTries, 1)
	}
}

// holding returns id's inventory if we hold its generation gen of
// instance inst or a newer generation of it (0, 0: whatever we hold).
func (t *table) holding(id disk.NodeID, inst, gen uint64) ([]disk.Disk, fact, bool) {
	o := t.origins[id]
	if o == nil || !o.applied || o.cache == nil || o.cacheInstance != o.appInstance || o.cacheGen != o.appGen ||
		inst != 0 && (o.appInstance != inst || o.appGen < gen) {
		return nil, fact{}, false
	}
	return o.cache, fact{origin: id, name: o.name, instance: o.appInstance, gen: o.appGen, digest: o.appDigest}, true
}

// knows reports whether id is an origin some member vouches for: a
// request for an inventory of it we do not hold yet may wait for ours.
func (t *table) knows(id disk.NodeID) bool {
	o := t.origins[id]
	return o != nil && o.online()
}

// treeFanout is how many members one member serves a new generation to,
// at most (besides answering retries): the members, in node ID order
// starting at the source, form a tree of this fanout, and each asks its
// parent first. 1000 members are 4 levels deep.
const treeFanout = 8

// treeParent returns the member that self asks first for an inventory
// whose source is source: its parent in the tree over members (sorted
// IDs, self and source among them) rooted at source; "" when that is the
// source itself or either is not in members.
func treeParent(members []disk.NodeID, self, source disk.NodeID) disk.NodeID {
	n := len(members)
	r, ok1 := slices.BinarySearch(members, source)
	p, ok2 := slices.BinarySearch(members, self)
	if !ok1 || !ok2 || n < 2 {
		return ""
	}
	pos := (p - r + n) % n // self's place in the ring starting at source
	if pos == 0 {
		return ""
	}
	up := (pos - 1) / treeFanout
	if up == 0 {
		return ""
	}
	return members[(r+up)%n]
}

// cached returns the inventory last applied for id if it is the
// generation the origin is at now.
func (t *table) cached(id disk.NodeID) ([]disk.Disk, fact, bool) {
	o := t.origins[id]
	if o == nil || o.cache == nil || o.cacheInstance != o.instance || o.cacheGen != o.gen || o.cacheDigest != o.digest {
		return nil, fact{}, false
	}
	return o.cache, fact{origin: id, name: o.name, instance: o.instance, gen: o.gen, digest: o.digest}, true
}

// keep remembers disks as f's origin's applied inventory.
func (t *table) keep(f fact, disks []disk.Disk) {
	if o := t.origins[f.origin]; o != nil {
		o.cache, o.cacheInstance, o.cacheGen, o.cacheDigest = disks, f.instance, f.gen, f.digest
	}
}

// fetched records an inventory received for f's origin at f's instance
// and generation (digest: what the inventory hashes to). It reports
// whether to apply it: not when it is older than what the store holds.
func (t *table) fetched(f fact) bool {
	o := t.origins[f.origin]
	if o == nil || !o.online() {
		return false
	}
	if o.applied && (f.instance < o.appInstance || f.instance == o.appInstance && f.gen < o.appGen) {
		return false
	}
	if f.instance < o.instance || f.instance == o.instance && f.gen < o.gen {
		// Older than announced, but newer than the store's: apply it, and
		// keep wanting the newest.
		o.applied, o.appInstance, o.appGen, o.appDigest = true, f.instance, f.gen, f.digest
		return true
	}
	o.instance, o.gen, o.digest = f.instance, f.gen, f.digest
	if f.name != "" {
		o.name = f.name
	}
	o.applied, o.appInstance, o.appGen, o.appDigest = true, f.instance, f.gen, f.digest
	o.fetchAt, o.fetchTries = time.Time{}, 0
	return true
}

// wentOffline forgets what the store holds of an origin: when a path
// vouches for it again its inventory is fetched again.
func (t *table) wentOffline(id disk.NodeID) {
	if o := t.origins[id]; o != nil {
		o.applied, o.fetchAt, o.fetchTries = false, time.Time{}, 0
	}
}

// facts returns one fact per online origin (the digest table of a
// push/pull), at most max, the origin's own vouch preferred.
func (t *table) facts(max int) []fact {
	var out []fact
	for _, id := range slices.Sorted(maps.Keys(t.origins)) {
		o := t.origins[id]
		if !o.online() || len(out) == max {
			continue
		}
		via := o.id
		if !o.vias[via] {
			via = slices.Sorted(maps.Keys(o.vias))[0]
		}
		out = append(out, fact{origin: o.id, via: via, name: o.name, instance: o.instance, gen: o.gen, digest: o.digest, addrs: o.addrs})
	}
	return out
}
