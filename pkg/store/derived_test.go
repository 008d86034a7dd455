package store

import (
	"bytes"
	"cmp"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/diskd/diskd/pkg/disk"
)

// referenceDisks is Disks computed from scratch, as it was before lists
// had caches: every node's rows, sorted now.
func referenceDisks(s *Store) []disk.Disk {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []disk.Disk
	for _, e := range s.sortedNodesLocked() {
		var rs []*row
		for _, r := range e.rows {
			rs = append(rs, r)
		}
		sortRowPtrs(rs)
		for _, r := range rs {
			out = append(out, r.diskCopy())
		}
	}
	return out
}

// referenceWhere is Where as a scan of the table.
func referenceWhere(s *Store, q string) []disk.Disk {
	var out []disk.Disk
	for _, d := range referenceDisks(s) {
		if d.Matches(q) {
			out = append(out, d)
		}
	}
	SortWhere(out)
	return out
}

func listBytes(t *testing.T, l *JSONList) []byte {
	t.Helper()
	var b bytes.Buffer
	if _, err := l.WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// checkDerived fails unless the store's derived views (cached encodings,
// cached orders, the where index) say what a scan of the rows says.
func checkDerived(t *testing.T, s *Store, queries []string, step string) {
	t.Helper()
	// Each node's rows are exactly the table's rows placed on it, each
	// once, at its nidx.
	s.mu.RLock()
	placed := 0
	for id, e := range s.nodes {
		for i, r := range e.rows {
			if r.nodeID() != id || int(r.nidx) != i || s.rows[r.key()] != r {
				t.Fatalf("%s: node %s holds row %s (node %s) at %d, nidx %d", step, id, r.key(), r.nodeID(), i, r.nidx)
			}
		}
		placed += len(e.rows)
		// One present row at most at each kernel name of a node.
		at := map[string]*row{}
		for _, r := range e.rows {
			if prev := at[r.d.Name]; r.d.Present && prev != nil {
				t.Fatalf("%s: rows %s and %s both present at %s on %s", step, prev.key(), r.key(), r.d.Name, id)
			} else if r.d.Present {
				at[r.d.Name] = r
			}
		}
	}
	if placed != len(s.rows) {
		t.Fatalf("%s: %d rows placed on nodes, %d in the table", step, placed, len(s.rows))
	}
	s.mu.RUnlock()
	ref := referenceDisks(s)
	want := disk.AppendJSONArray(nil, ref)
	for i := range 2 { // the second list is made of cached encodings
		if got := listBytes(t, s.DisksJSON(nil, nil)); !bytes.Equal(got, want) {
			t.Fatalf("%s: list %d differs from the encoded table:\n got %s\nwant %s", step, i, got, want)
		}
	}
	present := func(d *disk.Disk) bool { return d.Present }
	wantP := disk.AppendJSONArray(nil, slices.DeleteFunc(slices.Clone(ref), func(d disk.Disk) bool { return !d.Present }))
	if got := listBytes(t, s.DisksJSON(present, nil)); !bytes.Equal(got, wantP) {
		t.Fatalf("%s: present list differs:\n got %s\nwant %s", step, got, wantP)
	}
	if got := s.Disks(nil); !slices.EqualFunc(got, ref, sameDisk) {
		t.Fatalf("%s: Disks differs from a fresh sort", step)
	}
	for _, q := range queries {
		if got, want := s.Where(q), referenceWhere(s, q); !slices.EqualFunc(got, want, sameDisk) {
			t.Fatalf("%s: where %q: got %d disks %v, a scan finds %d %v", step, q, len(got), rowsOf(got), len(want), rowsOf(want))
		}
	}
	// The index holds every row under its names, and nothing else.
	s.mu.RLock()
	defer s.mu.RUnlock()
	fresh := whereIndex{seed: s.where.seed, one: map[uint64]*row{}, more: map[uint64][]*row{}}
	for _, r := range s.rows {
		fresh.add(r)
	}
	if len(fresh.one) != len(s.where.one) || len(fresh.more) != len(s.where.more) {
		t.Fatalf("%s: index has %d+%d names, the rows have %d+%d", step, len(s.where.one), len(s.where.more), len(fresh.one), len(fresh.more))
	}
	byKey := func(a, b *row) int { return cmp.Compare(a.key(), b.key()) }
	for _, m := range []map[uint64][]*row{fresh.more, func() map[uint64][]*row {
		ones := map[uint64][]*row{}
		for h, r := range fresh.one {
			ones[h] = []*row{r}
		}
		return ones
	}()} {
		for h, rs := range m {
			got := slices.Clone(s.where.rows(h))
			slices.SortFunc(got, byKey)
			slices.SortFunc(rs, byKey)
			if !slices.Equal(got, rs) {
				t.Fatalf("%s: index entry holds %v, want %v", step, got, rs)
			}
		}
	}
}

func sameDisk(a, b disk.Disk) bool {
	return string(disk.AppendJSON(nil, &a)) == string(disk.AppendJSON(nil, &b)) && a.Row == b.Row
}

func rowsOf(ds []disk.Disk) []string {
	var out []string
	for _, d := range ds {
		out = append(out, string(d.Row))
	}
	return out
}

// TestDerivedViewsStayInStep drives a store with random reports (moves,
// clones, relabels, case-changed UUIDs, peers going offline and evicted,
// rows evicted, a reload from the state file) and after every step
// compares the list's cached encodings and orders, and the where index,
// with what a scan of the rows gives.
func TestDerivedViewsStayInStep(t *testing.T) {
	// In UTC, and in a zone whose offset has seconds.
	for _, loc := range []*time.Location{time.UTC, time.FixedZone("LMT", 3600+30)} {
		t.Run(loc.String(), func(t *testing.T) { derivedViewsStayInStep(t, loc) })
	}
}

// TestListOfTextTimes: times beyond what a stamp formats (a clock in the
// year -5) are kept as text; a list still shows a present disk seen
// after its node was heard with its own time, and the others with the
// node's.
func TestListOfTextTimes(t *testing.T) {
	c := &clock{t: time.Date(-5, 1, 2, 3, 4, 5, 0, time.UTC), step: time.Millisecond}
	s := New(Options{Local: disk.Node{ID: localID, Name: "here"}, Now: c.now})
	s.ApplyPeer(disk.Node{ID: peerID, Name: "there"}, []disk.Disk{d("sda", "A"), d("sdb", "B")})
	s.TouchPeer(disk.Node{ID: peerID, Name: "there"}) // the node now heard after its disks
	s.ApplyPeer(disk.Node{ID: "00000000000000000000000000000003", Name: "yonder"}, []disk.Disk{d("sdc", "C")})
	s.SetLocal([]disk.Disk{d("sdd", "D")})
	s.mu.RLock()
	text := 0
	for _, r := range s.rows {
		if r.enc.flags()&rowTextTimes != 0 {
			text++
		}
	}
	s.mu.RUnlock()
	if text != 4 {
		t.Fatalf("%d of 4 rows keep their times as text", text)
	}
	if got, want := listBytes(t, s.DisksJSON(nil, nil)), disk.AppendJSONArray(nil, referenceDisks(s)); !bytes.Equal(got, want) {
		t.Fatalf("list differs from the encoded table:\n got %s\nwant %s", got, want)
	}
}

func derivedViewsStayInStep(t *testing.T, loc *time.Location) {
	// Each reading of the clock a millisecond on: a report's disks are
	// then seen after their node was heard, as with a real clock.
	c := &clock{t: time.Date(2026, 11, 25, 12, 0, 0, 0, loc), step: time.Millisecond}
	opts := Options{Local: disk.Node{ID: localID, Name: "here"}, Now: c.now, MaxPeers: 2, MaxDisksPerNode: 6, MaxDisks: 14}
	s := New(opts)
	peers := []disk.Node{{ID: peerID, Name: "there"}, {ID: "00000000000000000000000000000003", Name: "yonder"},
		{ID: "00000000000000000000000000000004", Name: "afar"}}
	labels := []string{"A", "B", "ſTICK", "stick", "", "Ω", `q"\\`}
	uuids := []string{"aaaa-1", "AAAA-1", "bbbb-2", "ſſſſ-3", "SSSS-3", "", "cccc-4"}
	queries := []string{"A", "B", "stick", "STICK", "ſtick", "aaaa-1", "AaAa-1", "ssss-3", "ſſſſ-3", "/dev/sda",
		"/dev/sdb", "uuid:aaaa-1", "uuid:bbbb-2", "PARTX", "partx-1", "Ω", "ω", "nothing",
		// Identities: found through the table's keys, not the index.
		"uuid:ssss-3", "uuid:ſſſſ-3", "UUID:aaaa-1", "partuuid:partx-1", "weak:" + string(localID) + "/sda/1048576",
		"weak:" + string(peerID) + "/sdb/2097152"}
	rng := rand.New(rand.NewPCG(1, 2))
	report := func() []disk.Disk {
		var ds []disk.Disk
		for i := range rng.IntN(5) {
			d := disk.Disk{Name: fmt.Sprintf("sd%c", 'a'+rng.IntN(4)), Label: labels[rng.IntN(len(labels))],
				UUID: uuids[rng.IntN(len(uuids))], Type: "ext4", Size: uint64(1+rng.IntN(2)) << 20}
			d.Device = "/dev/" + d.Name
			if d.UUID == "" && rng.IntN(2) == 0 {
				d.PartUUID, d.PartLabel = "PARTX-1", "partx"
			}
			if i%2 == 0 {
				d.Mounts = []string{"/mnt/" + d.Name}
			}
			ds = append(ds, d)
		}
		return ds
	}
	dir := t.TempDir()
	for step := range 400 {
		c.add(time.Duration(rng.IntN(3000)) * time.Millisecond)
		what := ""
		switch k := rng.IntN(10); {
		case k < 3:
			what = "local report"
			s.SetLocal(report())
		case k < 6:
			p := peers[rng.IntN(len(peers))]
			what = "report of " + p.Name
			s.ApplyPeer(p, report())
		case k < 8:
			p := peers[rng.IntN(len(peers))]
			what = "heartbeat of " + p.Name
			s.TouchPeer(p)
		case k < 9:
			p := peers[rng.IntN(len(peers))]
			what = p.Name + " offline"
			s.SetPeerOffline(p.ID)
		default:
			what = "reload"
			db, _, err := OpenDB(filepath.Join(dir, "state.db"))
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Flush(db); err != nil {
				t.Fatal(err)
			}
			s = New(opts)
			if err := s.Load(db); err != nil {
				t.Fatal(err)
			}
			db.Close()
		}
		checkDerived(t, s, queries, fmt.Sprintf("step %d (%s)", step, what))
	}
	if c := s.Counts(); c.Disks == 0 {
		t.Fatal("the walk left an empty table: it tested nothing")
	}
}

func TestFoldKeyAgreesWithEqualFold(t *testing.T) {
	words := []string{"", "a", "A", "k", "K", "\u212a", "s", "S", "ſ", "ß", "ẞ", "Ω", "ω", "\u2126", "\xff", "\xfe", "\ufffd",
		"abc-DEF", "ǅ", "ǆ", "Ǆ", "İ", "i", "ı", "I"}
	for _, a := range words {
		for _, b := range words {
			if eq, same := strings.EqualFold(a, b), foldKey(a) == foldKey(b); eq != same {
				t.Errorf("EqualFold(%q, %q) = %v but foldKey gives %q and %q", a, b, eq, foldKey(a), foldKey(b))
			}
		}
	}
}

// TestListsDuringChanges: lists and wheres read the caches while reports
// change the rows (run under -race, this is what checks the caches'
// synchronisation); afterwards the views agree with a scan.
func TestListsDuringChanges(t *testing.T) {
	s := New(Options{Local: disk.Node{ID: localID, Name: "here"}, MaxPeers: 4})
	report := func(i int) []disk.Disk {
		var ds []disk.Disk
		for k := range 50 {
			n := fmt.Sprintf("sd%d", (k+i)%60)
			ds = append(ds, disk.Disk{Name: n, Device: "/dev/" + n, Label: fmt.Sprintf("L%d", (k*i)%7),
				UUID: fmt.Sprintf("u-%d", (k+i)%70)})
		}
		return ds
	}
	done := make(chan struct{})
	var readers sync.WaitGroup
	for range 2 {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				var b bytes.Buffer
				if _, err := s.DisksJSON(nil, nil).WriteTo(&b); err != nil || b.Len() < 2 {
					t.Errorf("list: %v", err)
				}
				s.Where("L3")
				s.Disks(nil)
			}
		}()
	}
	for i := range 300 {
		if i%2 == 0 {
			s.SetLocal(report(i))
		} else {
			s.ApplyPeer(disk.Node{ID: peerID, Name: "there"}, report(i))
		}
	}
	close(done)
	readers.Wait()
	checkDerived(t, s, []string{"L0", "L3", "u-5", "/dev/sd7"}, "after the concurrent run")
}
