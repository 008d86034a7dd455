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

	// What the store holds from the gossip path.
	applied             bool
	appInstance, appGen uint64
	appDigest           wire.Digest
	fetchAt             time.Time // a fetch in flight since then
	fetchFrom           disk.NodeID
	fetchTries          int
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
}

// fetchRetry is how long a fetch may stay unanswered before it is asked
// again (of the next member vouching for the origin).
const fetchRetry = 5 * time.Second

// wants returns the fetches due at now and marks them in flight. The
// origin itself is asked when it is a member; otherwise its relays in
// turn.
func (t *table) wants(now time.Time) []fetch {
	var out []fetch
	for _, o := range t.origins {
		if !o.online() || !o.missing() {
			o.fetchAt, o.fetchTries = time.Time{}, 0
			continue
		}
		if !o.fetchAt.IsZero() && now.Sub(o.fetchAt) < fetchRetry {
			continue
		}
		from := o.id
		if !o.vias[o.id] {
			vs := slices.Sorted(maps.Keys(o.vias))
			from = vs[o.fetchTries%len(vs)]
		}
		o.fetchAt, o.fetchFrom = now, from
		o.fetchTries++
		out = append(out, fetch{origin: o.id, from: from})
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
		out = append(out, fact{origin: o.id, via: via, name: o.name, instance: o.instance, gen: o.gen, digest: o.digest})
	}
	return out
}
