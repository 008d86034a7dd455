package store

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/diskd/diskd/pkg/disk"
)

// stick is a filesystem with a UUID at a kernel name.
func stick(name, label, uuid string) disk.Disk {
	return disk.Disk{Name: name, Device: "/dev/" + name, Label: label, UUID: uuid, Type: "ext4", Size: 64 << 20}
}

// nodeNames maps node IDs to short names in what the tests print.
var nodeNames = strings.NewReplacer(string(localID), "here", string(peerID), "there")

// table prints every row: key, placement, presence, uniqueness.
func table(s *Store) []string {
	var out []string
	for _, d := range s.Disks(nil) {
		p := "absent"
		if d.Present {
			p = "present"
		}
		if d.NotUnique {
			p += " not-unique"
		}
		out = append(out, nodeNames.Replace(fmt.Sprintf("%s at %s/%s %s", d.Row, d.Node, d.Name, p)))
	}
	slices.Sort(out)
	return out
}

func rowEvents(sub *Subscription) []string {
	var out []string
	for _, e := range drain(sub) {
		out = append(out, e)
	}
	slices.Sort(out)
	return out
}

// TestRowMatching drives the store with reports, step by step, and checks
// the whole table and the events of each step: identity keys rows, a
// placement change moves a row, clones get rows of their own, and nothing
// flaps.
func TestRowMatching(t *testing.T) {
	A := func(name string) disk.Disk { return stick(name, "A", "AAAA-0001") }
	B := func(name string) disk.Disk { return stick(name, "B", "bbbb-0002") }
	C := func(name string) disk.Disk { return stick(name, "C", "cccc-0003") }
	type step struct {
		what    string
		local   []disk.Disk // nil: no local report in this step
		peer    []disk.Disk // nil: no peer report
		offline bool        // the peer goes offline
		want    []string
		events  []string // names of the disks in events: kind name present=
	}
	none := []disk.Disk{}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"three sticks on one kernel name, one after another", []step{
			{what: "A", local: []disk.Disk{A("loop150")},
				want:   []string{"uuid:aaaa-0001 at here/loop150 present"},
				events: []string{"added loop150 present=1"}},
			{what: "A out", local: none,
				want:   []string{"uuid:aaaa-0001 at here/loop150 absent"},
				events: []string{"changed loop150 present=0"}},
			{what: "B in", local: []disk.Disk{B("loop150")},
				want: []string{"uuid:aaaa-0001 at here/loop150 absent", "uuid:bbbb-0002 at here/loop150 present"}},
			{what: "C replaces B without a report in between", local: []disk.Disk{C("loop150")},
				want: []string{"uuid:aaaa-0001 at here/loop150 absent", "uuid:bbbb-0002 at here/loop150 absent",
					"uuid:cccc-0003 at here/loop150 present"},
				events: []string{"added loop150 present=1", "changed loop150 present=0"}},
		}},
		{"reattached under another name", []step{
			{what: "A on loop1", local: []disk.Disk{A("loop1")}},
			{what: "out", local: none},
			{what: "A on loop2", local: []disk.Disk{A("loop2")},
				want:   []string{"uuid:aaaa-0001 at here/loop2 present"},
				events: []string{"changed loop2 present=1"}},
		}},
		{"moved between two reports", []step{
			{what: "A on loop1", local: []disk.Disk{A("loop1"), B("loop3")}},
			{what: "A on loop2 now", local: []disk.Disk{A("loop2"), B("loop3")},
				want:   []string{"uuid:aaaa-0001 at here/loop2 present", "uuid:bbbb-0002 at here/loop3 present"},
				events: []string{"changed loop2 present=1"}},
		}},
		{"clones on one node: two rows, no flapping", []step{
			{what: "A twice", local: []disk.Disk{A("loop1"), A("loop2")},
				want: []string{"uuid:aaaa-0001 at here/loop1 present not-unique",
					"uuid:aaaa-0001@here/loop2 at here/loop2 present not-unique"}},
			{what: "same, other order", local: []disk.Disk{A("loop2"), A("loop1")},
				want: []string{"uuid:aaaa-0001 at here/loop1 present not-unique",
					"uuid:aaaa-0001@here/loop2 at here/loop2 present not-unique"}},
			{what: "clone detached", local: []disk.Disk{A("loop1")},
				want: []string{"uuid:aaaa-0001 at here/loop1 present",
					"uuid:aaaa-0001@here/loop2 at here/loop2 absent"},
				events: []string{"changed loop1 present=1", "changed loop2 present=0"}},
			{what: "clone back", local: []disk.Disk{A("loop1"), A("loop2")},
				want: []string{"uuid:aaaa-0001 at here/loop1 present not-unique",
					"uuid:aaaa-0001@here/loop2 at here/loop2 present not-unique"},
				events: []string{"changed loop1 present=1", "changed loop2 present=1"}},
			{what: "primary detached: the clone is promoted", local: []disk.Disk{A("loop2")},
				want:   []string{"uuid:aaaa-0001 at here/loop2 present"},
				events: []string{"changed loop2 present=1", "forgotten loop2 present=1"}},
		}},
		{"clones both detached at once: no promotion", []step{
			{what: "A twice", local: []disk.Disk{A("loop1"), A("loop2")}},
			{what: "both gone", local: none,
				want: []string{"uuid:aaaa-0001 at here/loop1 absent",
					"uuid:aaaa-0001@here/loop2 at here/loop2 absent"},
				events: []string{"changed loop1 present=0", "changed loop2 present=0"}},
		}},
		{"node with clones goes offline: no promotion", []step{
			{what: "A twice there", peer: []disk.Disk{A("sdb1"), A("sdc1")}},
			{what: "offline", offline: true,
				want: []string{"uuid:aaaa-0001 at there/sdb1 absent",
					"uuid:aaaa-0001@there/sdc1 at there/sdc1 absent"}},
		}},
		{"clone on another node", []step{
			{what: "A here", local: []disk.Disk{A("loop1")}},
			{what: "A there too", peer: []disk.Disk{A("sdb1")},
				want: []string{"uuid:aaaa-0001 at here/loop1 present not-unique",
					"uuid:aaaa-0001@there/sdb1 at there/sdb1 present not-unique"},
				events: []string{"added sdb1 present=1", "changed loop1 present=1", "node-changed there online=1"}},
			{what: "there reports it again", peer: []disk.Disk{A("sdb1")},
				want: []string{"uuid:aaaa-0001 at here/loop1 present not-unique",
					"uuid:aaaa-0001@there/sdb1 at there/sdb1 present not-unique"}},
			{what: "gone here: it moved there, one row", local: none,
				want:   []string{"uuid:aaaa-0001 at there/sdb1 present"},
				events: []string{"changed sdb1 present=1", "forgotten sdb1 present=1"}},
		}},
		{"moved to another node in order", []step{
			{what: "A here", local: []disk.Disk{A("loop1")}},
			{what: "gone here", local: none},
			{what: "A there", peer: []disk.Disk{A("sdb1")},
				want:   []string{"uuid:aaaa-0001 at there/sdb1 present"},
				events: []string{"changed sdb1 present=1", "node-changed there online=1"}},
		}},
		{"no UUID: weak identity, bound to its place", []step{
			{what: "raw disk", local: []disk.Disk{{Name: "sdd", Device: "/dev/sdd", Size: 8 << 30}},
				want: []string{"weak:here/sdd/8589934592 at here/sdd present"}},
			{what: "a partition UUID identifies", local: []disk.Disk{{Name: "sdd1", Device: "/dev/sdd1", PartUUID: "ABCD-01", Size: 1}},
				want: []string{"partuuid:abcd-01 at here/sdd1 present", "weak:here/sdd/8589934592 at here/sdd absent"}},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, c := newTestStore(t)
			s.opts.MaxDisksPerNode = 100
			sub := s.Subscribe(100)
			defer sub.Close()
			for _, st := range tc.steps {
				c.add(time.Second)
				if st.local != nil {
					s.SetLocal(st.local)
				}
				if st.peer != nil {
					s.ApplyPeer(disk.Node{ID: peerID, Name: "there"}, st.peer)
				}
				if st.offline {
					s.SetPeerOffline(peerID)
				}
				evs := rowEvents(sub)
				if st.want != nil {
					if got := table(s); !slices.Equal(got, st.want) {
						t.Errorf("%s: table\n%s\nwant\n%s", st.what, strings.Join(got, "\n"), strings.Join(st.want, "\n"))
					}
				}
				if st.events != nil && !slices.Equal(evs, st.events) {
					t.Errorf("%s: events %q, want %q", st.what, evs, st.events)
				}
			}
		})
	}
}

// TestWhereAnswersForEveryStick: the first example, through Where
// and History.
func TestWhereAnswersForEveryStick(t *testing.T) {
	s, c := newTestStore(t)
	s.opts.MaxDisksPerNode = 100
	labels := []string{"OLDPHOTOS", "NEWSTICK", "THIRD"}
	for i, l := range labels {
		c.add(time.Minute)
		s.SetLocal([]disk.Disk{stick("loop150", l, fmt.Sprintf("%08d-0000", i))})
		c.add(time.Minute)
		s.SetLocal(nil)
	}
	for _, l := range labels {
		w := s.Where(l)
		if len(w) != 1 || w[0].Present || w[0].Device != "/dev/loop150" || w[0].Label != l {
			t.Errorf("Where(%s) = %+v", l, w)
		}
	}
	// Two disks with one label are two disks.
	s.SetLocal([]disk.Disk{stick("loop1", "OLDPHOTOS", "99999999-0000")})
	if w := s.Where("OLDPHOTOS"); len(w) != 2 || !w[0].Present || w[1].Present {
		t.Errorf("Where(OLDPHOTOS) with two such disks = %+v", w)
	}
}

func TestHistoryIsBoundedNewestFirst(t *testing.T) {
	s, c := newTestStore(t)
	s.opts.HistoryPerDisk = 3
	for i := range 5 {
		c.add(time.Minute)
		s.SetLocal([]disk.Disk{stick(fmt.Sprintf("loop%d", i), "A", "a")})
		c.add(time.Minute)
		s.SetLocal(nil)
	}
	h := s.History("A")
	if len(h) != 1 {
		t.Fatalf("History = %+v", h)
	}
	var names []string
	for _, sg := range h[0].Sightings {
		names = append(names, sg.Name)
		if !sg.LastSeen.After(sg.FirstSeen) {
			t.Errorf("sighting %+v: last seen not after first seen", sg)
		}
	}
	if !slices.Equal(names, []string{"loop4", "loop3", "loop2"}) {
		t.Errorf("sightings %q, want the newest 3, newest first", names)
	}
	if got := s.Stats().HistoryTrimmed; got != 2 {
		t.Errorf("HistoryTrimmed = %d, want 2", got)
	}
	if !h[0].Disk.FirstSeen.Before(h[0].Sightings[2].FirstSeen) {
		t.Errorf("the disk's first sighting is older than its history: %v", h[0].Disk.FirstSeen)
	}
}

// TestHistoryAnswerIsBounded: a label shared by more disks than
// disk.MaxHistoryDisks gets that many, present first.
func TestHistoryAnswerIsBounded(t *testing.T) {
	s, _ := newTestStore(t)
	s.opts.MaxDisksPerNode = 1000
	var ds []disk.Disk
	for i := range disk.MaxHistoryDisks + 50 {
		ds = append(ds, stick(fmt.Sprintf("sd%d", i), "SAME", fmt.Sprintf("u%d", i)))
	}
	s.ApplyPeer(disk.Node{ID: peerID, Name: "there"}, ds)
	if n := len(s.Where("SAME")); n != disk.MaxHistoryDisks+50 {
		t.Fatalf("Where = %d disks", n)
	}
	if h := s.History("SAME"); len(h) != disk.MaxHistoryDisks {
		t.Errorf("History answered %d disks, want the bound %d", len(h), disk.MaxHistoryDisks)
	}
}

// TestEvictionOrder: the MaxDisks bound evicts the row absent the longest;
// with every row present it evicts the peer heard least recently; with
// nothing to evict it refuses, and each is counted.
func TestEvictionOrder(t *testing.T) {
	s, c := newTestStore(t)
	s.opts.MaxDisks, s.opts.MaxDisksPerNode = 3, 100
	add := func(names ...string) {
		var ds []disk.Disk
		for _, n := range names {
			ds = append(ds, stick(n, n, "uuid-"+n))
		}
		c.add(time.Second)
		s.SetLocal(ds)
	}
	add("a", "b", "c")
	add("b", "c") // a gone first
	add("c")      // then b
	add("c", "d") // full: a, the longest gone, makes room
	if w := s.Where("a"); len(w) != 0 {
		t.Errorf("a not evicted: %+v", w)
	}
	if w := s.Where("b"); len(w) != 1 {
		t.Errorf("b evicted before a: %+v", w)
	}
	add("c", "d", "e") // b goes
	if w := s.Where("b"); len(w) != 0 || s.Stats().EvictedDisks != 2 {
		t.Errorf("b: %+v, stats %+v", w, s.Stats())
	}
	add("c", "d", "e", "f") // all present, no peer: refused
	if w := s.Where("f"); len(w) != 0 || s.Stats().RefusedDisks != 1 {
		t.Errorf("f: %+v, stats %+v", w, s.Stats())
	}

	// A peer's disks make room for a newer peer's when everything is present.
	s2, c2 := newTestStore(t)
	s2.opts.MaxDisks, s2.opts.MaxDisksPerNode = 2, 100
	s2.ApplyPeer(disk.Node{ID: peerID, Name: "old"}, []disk.Disk{stick("sdb", "X", "x"), stick("sdc", "Y", "y")})
	c2.add(time.Second)
	p3 := disk.NodeID("00000000000000000000000000000003")
	s2.ApplyPeer(disk.Node{ID: p3, Name: "new"}, []disk.Disk{stick("sdb", "Z", "z")})
	if w := s2.Where("Z"); len(w) != 1 || s2.Stats().EvictedPeersForDisks != 1 {
		t.Errorf("new peer's disk: %+v, stats %+v", w, s2.Stats())
	}
	if _, ok := s2.Node(peerID); ok {
		t.Errorf("least recently heard peer not evicted")
	}
}

// TestPeersFullEvictsLeastRecentlyHeard: offline peers go first, then
// the least recently heard even if online, so a new machine always gets in.
func TestPeersFullEvictsLeastRecentlyHeard(t *testing.T) {
	p := func(i int) disk.NodeID { return disk.NodeID(fmt.Sprintf("%032x", 0x10+i)) }
	for _, tc := range []struct {
		name    string
		offline []int // peers set offline after all are heard
		want    []string
	}{
		{"all online: least recently heard goes", nil, []string{"here", "p2", "p3"}},
		{"an offline one goes first, even if heard later", []int{2}, []string{"here", "p1", "p3"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, c := newTestStore(t) // MaxPeers 2
			for i := 1; i <= 2; i++ {
				c.add(time.Second)
				s.TouchPeer(disk.Node{ID: p(i), Name: fmt.Sprintf("p%d", i)})
			}
			for _, i := range tc.offline {
				s.SetPeerOffline(p(i))
			}
			c.add(time.Second)
			s.TouchPeer(disk.Node{ID: p(3), Name: "p3"})
			var names []string
			for _, n := range s.Nodes() {
				names = append(names, n.Name)
			}
			if !slices.Equal(names, tc.want) {
				t.Errorf("nodes = %q, want %q", names, tc.want)
			}
			if s.Stats().EvictedPeers != 1 {
				t.Errorf("EvictedPeers = %d", s.Stats().EvictedPeers)
			}
		})
	}
}

// TestHeartbeatsDoNotWriteTheStateFile: heartbeats that change nothing
// mark nothing dirty and cost no transaction; a real change does; the last
// heard time reaches the file at a clean stop.
func TestHeartbeatsDoNotWriteTheStateFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	db, _, err := OpenDB(path)
	if err != nil {
		t.Fatal(err)
	}
	s, c := newTestStore(t)
	peer := disk.Node{ID: peerID, Name: "there", Addresses: []string{"10.0.0.2"}}
	s.ApplyPeer(peer, []disk.Disk{stick("sdb1", "P", "p")})
	if err := s.Flush(db); err != nil {
		t.Fatal(err)
	}
	base := s.Flushes()
	for range 100 {
		c.add(time.Second)
		s.TouchPeer(peer)
		s.ApplyPeer(peer, []disk.Disk{stick("sdb1", "P", "p")}) // an unchanged re-announce
		if err := s.Flush(db); err != nil {
			t.Fatal(err)
		}
	}
	if got := s.Flushes() - base; got != 0 {
		t.Errorf("100 heartbeats and unchanged announces cost %d transactions, want 0", got)
	}
	heard := c.t
	renamed := peer
	renamed.Name = "there2"
	s.TouchPeer(renamed)
	if nodes, _, _, _ := s.takeDirty(); len(nodes) != 1 {
		t.Errorf("a renamed peer is not dirty: %v", nodes)
	}
	s.TouchPeer(renamed)
	s.markAllPresentDirty() // what RunPersist does at a clean stop
	if err := s.Flush(db); err != nil {
		t.Fatal(err)
	}
	db.Close()
	db, _, err = OpenDB(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s2, _ := newTestStore(t)
	if err := s2.Load(db); err != nil {
		t.Fatal(err)
	}
	if n, _ := s2.Node(peerID); !n.LastSeen.Equal(heard) || n.Name != "there2" {
		t.Errorf("after a clean stop the peer was last heard %v as %q, want %v", n.LastSeen, n.Name, heard)
	}
}

// TestPersistRowsWithHistoryAndClones: rows, history and clones survive a
// restart with the same keys.
func TestPersistRowsWithHistoryAndClones(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	db, _, err := OpenDB(path)
	if err != nil {
		t.Fatal(err)
	}
	s, c := newTestStore(t)
	s.SetLocal([]disk.Disk{stick("loop1", "A", "a")})
	c.add(time.Minute)
	s.SetLocal(nil)
	c.add(time.Minute)
	s.SetLocal([]disk.Disk{stick("loop2", "A", "a"), stick("loop3", "A", "a")})
	if err := s.Flush(db); err != nil {
		t.Fatal(err)
	}
	want := table(s)
	wantHist := s.History("A")
	db.Close()
	db, _, err = OpenDB(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s2, _ := newTestStore(t)
	if err := s2.Load(db); err != nil {
		t.Fatal(err)
	}
	if got := table(s2); !slices.Equal(got, want) {
		t.Errorf("after reload\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if got := s2.History("A"); fmt.Sprint(got) != fmt.Sprint(wantHist) {
		t.Errorf("history after reload\n%+v\nwant\n%+v", got, wantHist)
	}
}

// TestMigrateFromSchema1: a state file written by diskd before identities
// loads with everything it held: records of one UUID on two machines
// become one row with both in its history, clones stay two rows, peers are
// offline. testdata/state-v1.db was written by this package at commit
// d97a302 (schema 1), driven through its API with a fake clock from
// 2026-11-20 10:00 UTC: OLDPHOTOS on peer nas as sdb1 (10:00-11:00),
// then here (laptop, node ...01) as loop0 (12:00-13:00, UUID in lower
// case), DATA on loop1, CLONE on loop2 and loop3 at once, and peer desk
// with a partition-UUID-only sdc1 and a bare sdd, gone offline.
func TestMigrateFromSchema1(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	copyFile(t, filepath.Join("testdata", "state-v1.db"), path)
	db, aside, err := OpenDB(path)
	if err != nil || aside != "" {
		t.Fatalf("OpenDB: %v (moved aside: %q)", err, aside)
	}
	s, _ := newTestStore(t)
	if err := s.Load(db); err != nil {
		t.Fatal(err)
	}
	nodeNames := strings.NewReplacer("0000000000000000000000000000000a", "nas", "0000000000000000000000000000000b", "desk")
	var got []string
	for _, r := range table(s) {
		got = append(got, nodeNames.Replace(r))
	}
	want := []string{
		"partuuid:abcd0001-01 at desk/sdc1 absent",
		"uuid:1a2b3c4d-0000-4000-8000-00000000aaaa at here/loop0 absent",
		"uuid:22222222-0000-4000-8000-000000000002 at here/loop1 present",
		"uuid:44444444-0000-4000-8000-000000000004 at here/loop2 present not-unique",
		"uuid:44444444-0000-4000-8000-000000000004@here/loop3 at here/loop3 present not-unique",
		"weak:desk/sdd/8589934592 at desk/sdd absent",
	}
	if !slices.Equal(got, want) {
		t.Errorf("migrated table\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	h := s.History("OLDPHOTOS")
	if len(h) != 1 || len(h[0].Sightings) != 2 {
		t.Fatalf("OLDPHOTOS history = %+v", h)
	}
	if sg := h[0].Sightings; sg[0].Host != "laptop" || sg[0].Name != "loop0" || sg[1].Host != "nas" || sg[1].Name != "sdb1" ||
		!sg[0].FirstSeen.Equal(time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)) ||
		!sg[1].FirstSeen.Equal(time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)) {
		t.Errorf("OLDPHOTOS sightings = %+v", sg)
	}
	if !h[0].Disk.FirstSeen.Equal(time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)) {
		t.Errorf("first seen = %v, want the nas sighting's", h[0].Disk.FirstSeen)
	}
	for _, n := range s.Nodes() {
		if !n.Local && n.Online {
			t.Errorf("peer %s online after load", n.Name)
		}
	}
	// The file is now schema 2, and opening it again changes nothing.
	db.Close()
	db, _, err = OpenDB(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.bolt.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketDisks) != nil || string(tx.Bucket(bucketMeta).Get(keySchema)) != "2" {
			t.Errorf("not migrated: disks bucket %v, schema %q", tx.Bucket(bucketDisks) != nil, tx.Bucket(bucketMeta).Get(keySchema))
		}
		return nil
	})
	s2, _ := newTestStore(t)
	if err := s2.Load(db); err != nil {
		t.Fatal(err)
	}
	if got2 := table(s2); !slices.Equal(got2, table(s)) {
		t.Errorf("second open differs: %q", got2)
	}
}

func TestNewerSchemaIsRefusedNotMovedAside(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	b, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	b.Update(func(tx *bolt.Tx) error {
		m, _ := tx.CreateBucket(bucketMeta)
		return m.Put(keySchema, []byte("3"))
	})
	b.Close()
	_, aside, err := OpenDB(path)
	if !errors.Is(err, ErrNewerSchema) || aside != "" {
		t.Fatalf("OpenDB of schema 3 = %v, aside %q; want ErrNewerSchema, nothing moved", err, aside)
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("state file gone: %v", err)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
