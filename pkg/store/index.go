package store

import (
	"hash/maphash"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/diskd/diskd/pkg/disk"
)

// whereIndex finds the rows a query can name (disk.Matches) without
// walking the table: `where` among 100,000 disks is a map lookup, not a
// scan. It maps a hash of each name a row answers to (label, partition
// label and device path as they are; UUID and PARTUUID folded, as Matches
// compares them case-insensitively) to the rows. Identities are not in
// it, nor a UUID or PARTUUID its row's identity spells: the table's own
// keys find them (Store.idCandidates). It only
// narrows: every candidate is checked with Matches, so a hash collision
// costs a comparison, never a wrong answer. Hashes rather than strings,
// and a name held by one row kept apart from names held by several (one
// pointer rather than a slice), keep it to a few words per name.
//
// The store keeps it in step with the rows: a row is indexed while it is
// in the table, under the names its disk has now (see fill, promoteLocked,
// forgetRowLocked, Load); unindex must see the same fields index saw.
type whereIndex struct {
	seed maphash.Seed
	one  map[uint64]*row   // names held by one row
	more map[uint64][]*row // names held by two rows or more
}

func newWhereIndex() whereIndex {
	return whereIndex{seed: maphash.MakeSeed(), one: make(map[uint64]*row), more: make(map[uint64][]*row)}
}

// keys returns the distinct hashes of the names d answers to.
func (x *whereIndex) keys(d *disk.Disk, buf *[6]uint64) []uint64 {
	ks := buf[:0]
	add := func(s string) {
		if s == "" {
			return
		}
		h := maphash.String(x.seed, s)
		if !slices.Contains(ks, h) {
			ks = append(ks, h)
		}
	}
	add(d.Label)
	add(d.PartLabel)
	add(d.Device)
	// A UUID (PARTUUID) its identity spells folded (as disk.Identity
	// makes it, from blkid's lower case) is found by the identity
	// (idCandidates): most rows need no index entry for it.
	if u := foldKey(d.UUID); d.ID != disk.IdentityUUID+u {
		add(u)
	}
	if u := foldKey(d.PartUUID); d.ID != disk.IdentityPartUUID+u {
		add(u)
	}
	return ks
}

func (x *whereIndex) add(r *row) {
	var buf [6]uint64
	d := r.disk()
	for _, h := range x.keys(&d, &buf) {
		if rs, ok := x.more[h]; ok {
			x.more[h] = append(rs, r)
		} else if o, ok := x.one[h]; ok {
			delete(x.one, h)
			x.more[h] = []*row{o, r}
		} else {
			x.one[h] = r
		}
	}
}

func (x *whereIndex) remove(r *row) {
	if r.enc.b == "" {
		return // a new row, not filled yet: not indexed
	}
	var buf [6]uint64
	d := r.disk()
	for _, h := range x.keys(&d, &buf) {
		if x.one[h] == r {
			delete(x.one, h)
			continue
		}
		rs := x.more[h]
		if i := slices.Index(rs, r); i >= 0 {
			rs = slices.Delete(rs, i, i+1)
		}
		switch len(rs) {
		case 0:
			delete(x.more, h)
		case 1:
			delete(x.more, h)
			x.one[h] = rs[0]
		default:
			x.more[h] = rs
		}
	}
}

// rows returns the rows indexed under h.
func (x *whereIndex) rows(h uint64) []*row {
	if r, ok := x.one[h]; ok {
		return []*row{r}
	}
	return x.more[h]
}

// lookup returns the rows q names, each once, in no particular order:
// those indexed under q, and the candidates given (rows whose identity
// may be q).
func (x *whereIndex) lookup(q string, candidates ...*row) []*row {
	if q == "" {
		return nil
	}
	var out []*row
	for _, r := range candidates {
		if d := r.disk(); !slices.Contains(out, r) && d.Matches(q) {
			out = append(out, r)
		}
	}
	for i, k := range [2]string{q, foldKey(q)} {
		if i == 1 && k == q {
			break
		}
		for _, r := range x.rows(maphash.String(x.seed, k)) {
			if d := r.disk(); !slices.Contains(out, r) && d.Matches(q) {
				out = append(out, r)
			}
		}
	}
	return out
}

// foldKey maps s to one representative of the strings strings.EqualFold
// holds equal to it: each rune becomes the smallest of its case-folding
// orbit (unicode.SimpleFold), an ASCII capital then its small letter, and
// invalid UTF-8 becomes U+FFFD, as EqualFold decodes it. A lower-case
// ASCII string (a UUID as blkid prints most) is returned as it is.
func foldKey(s string) string {
	i := 0
	for ; i < len(s); i++ {
		if c := s[i]; c >= utf8.RuneSelf || 'A' <= c && c <= 'Z' {
			break
		}
	}
	if i == len(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	b.WriteString(s[:i])
	for _, r := range s[i:] {
		b.WriteRune(foldRune(r))
	}
	return b.String()
}

func foldRune(r rune) rune {
	if r < utf8.RuneSelf {
		if 'A' <= r && r <= 'Z' {
			r += 'a' - 'A'
		}
		return r
	}
	m := r
	for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
		m = min(m, f)
	}
	if 'A' <= m && m <= 'Z' {
		m += 'a' - 'A'
	}
	return m
}
