package store

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/diskd/diskd/pkg/disk"
)

const (
	localID = disk.NodeID("00000000000000000000000000000001")
	peerID  = disk.NodeID("00000000000000000000000000000002")
)

// clock is a test's time; with step set, each reading moves it on.
type clock struct {
	t    time.Time
	step time.Duration
}

func (c *clock) now() time.Time {
	t := c.t
	c.t = c.t.Add(c.step)
	return t
}
func (c *clock) add(d time.Duration) { c.t = c.t.Add(d) }

func newTestStore(t *testing.T) (*Store, *clock) {
	t.Helper()
	c := &clock{t: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)}
	return New(Options{Local: disk.Node{ID: localID, Name: "here"}, Now: c.now, MaxPeers: 2, MaxDisksPerNode: 3}), c
}

func d(name, label string) disk.Disk {
	return disk.Disk{Name: name, Device: "/dev/" + name, Label: label, UUID: "uuid-" + name}
}

func drain(sub *Subscription) (evs []string) {
	for {
		select {
		case ev := <-sub.C:
			switch {
			case ev.Disk != nil:
				evs = append(evs, ev.Kind.String()+" "+ev.Disk.Name+" present="+boolStr(ev.Disk.Present))
			default:
				evs = append(evs, ev.Kind.String()+" "+ev.Node.Name+" online="+boolStr(ev.Node.Online))
			}
		default:
			return evs
		}
	}
}

func boolStr(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

func TestSetLocalEventsAndHistory(t *testing.T) {
	s, c := newTestStore(t)
	sub := s.Subscribe(100)
	defer sub.Close()

	steps := []struct {
		name    string
		disks   []disk.Disk
		want    []string
		wantGen uint64
	}{
		{"first scan", []disk.Disk{d("loop0", "A"), d("loop1", "B")},
			[]string{"added loop0 present=1", "added loop1 present=1"}, 1},
		{"same again: no events, no new generation", []disk.Disk{d("loop0", "A"), d("loop1", "B")}, nil, 1},
		{"label change", []disk.Disk{d("loop0", "A2"), d("loop1", "B")}, []string{"changed loop0 present=1"}, 2},
		{"loop1 gone", []disk.Disk{d("loop0", "A2")}, []string{"changed loop1 present=0"}, 3},
		{"loop1 back", []disk.Disk{d("loop0", "A2"), d("loop1", "B")}, []string{"changed loop1 present=1"}, 4},
	}
	for _, st := range steps {
		c.add(time.Second)
		s.SetLocal(st.disks)
		got := drain(sub)
		slices.Sort(got)
		if !slices.Equal(got, st.want) {
			t.Errorf("%s: events %q, want %q", st.name, got, st.want)
		}
		if gen, _ := s.LocalDisks(); gen != st.wantGen {
			t.Errorf("%s: generation %d, want %d", st.name, gen, st.wantGen)
		}
	}
	all := s.Disks(nil)
	if len(all) != 2 || all[0].Host != "here" || all[0].Node != localID {
		t.Fatalf("Disks = %+v", all)
	}
	if !all[0].FirstSeen.Equal(time.Date(2026, 11, 25, 12, 0, 1, 0, time.UTC)) {
		t.Errorf("FirstSeen changed across updates: %v", all[0].FirstSeen)
	}
}

func TestWhereAnswersFromHistory(t *testing.T) {
	s, c := newTestStore(t)
	s.ApplyPeer(disk.Node{ID: peerID, Name: "there"}, []disk.Disk{d("sdb1", "BACKUP")})
	goneAt := c.t
	c.add(time.Minute)
	s.SetPeerOffline(peerID)
	c.add(time.Minute)
	s.SetLocal([]disk.Disk{d("loop0", "OTHER")})

	w := s.Where("BACKUP")
	if len(w) != 1 || w[0].Present || w[0].Host != "there" || !w[0].LastSeen.Equal(goneAt) {
		t.Fatalf("Where(BACKUP) = %+v, want one absent disk last seen on there at %v", w, goneAt)
	}
	// The same filesystem now present here ranks before the history entry.
	s.SetLocal([]disk.Disk{d("loop0", "OTHER"), {Name: "loop1", Device: "/dev/loop1", Label: "BACKUP"}})
	w = s.Where("backup")
	if len(w) != 0 {
		t.Errorf("labels are case-sensitive, got %+v", w)
	}
	w = s.Where("BACKUP")
	if len(w) != 2 || !w[0].Present || w[0].Host != "here" || w[1].Present {
		t.Fatalf("Where ranks present first: %+v", w)
	}
	if got := s.Where("UUID-SDB1"); len(got) != 1 {
		t.Errorf("UUIDs match case-insensitively: %+v", got)
	}
}

func TestPeerBoundsAndEviction(t *testing.T) {
	s, c := newTestStore(t) // MaxPeers 2, MaxDisksPerNode 3
	p := func(i byte) disk.NodeID { return disk.NodeID("0000000000000000000000000000001" + string('0'+i)) }
	s.ApplyPeer(disk.Node{ID: p(1), Name: "p1"}, []disk.Disk{d("a", ""), d("b", ""), d("c", ""), d("d", "")})
	if got := len(s.Disks(nil)); got != 3 {
		t.Errorf("report of 4 disks kept %d, want 3", got)
	}
	if s.Stats().TruncatedReports != 1 {
		t.Errorf("truncation not counted: %+v", s.Stats())
	}
	c.add(time.Second)
	s.ApplyPeer(disk.Node{ID: p(2), Name: "p2"}, nil)
	s.SetPeerOffline(p(1))
	c.add(time.Second)
	s.SetPeerOffline(p(2))
	c.add(time.Second)
	s.TouchPeer(disk.Node{ID: p(3), Name: "p3"})
	var names []string
	for _, n := range s.Nodes() {
		names = append(names, n.Name)
	}
	if !slices.Equal(names, []string{"here", "p2", "p3"}) {
		t.Errorf("nodes after eviction = %q, want the longest-offline p1 gone", names)
	}
	if len(s.Disks(nil)) != 0 {
		t.Errorf("evicted peer's disks remain")
	}
}

func TestSlowSubscriberIsDroppedNotWaitedFor(t *testing.T) {
	s, _ := newTestStore(t)
	slow := s.Subscribe(1)
	fast := s.Subscribe(10)
	s.SetLocal([]disk.Disk{d("loop0", ""), d("loop1", "")}) // two events: slow overflows
	if _, ok := <-slow.C; !ok {
		t.Fatal("first event lost")
	}
	if _, ok := <-slow.C; ok {
		t.Fatal("slow subscriber not closed")
	}
	if !errors.Is(slow.Err(), ErrOverflow) {
		t.Errorf("Err = %v, want ErrOverflow", slow.Err())
	}
	if got := len(drain(fast)); got != 2 {
		t.Errorf("fast subscriber got %d events, want 2", got)
	}
	fast.Close()
	fast.Close()
	if fast.Err() != nil {
		t.Errorf("Err after Close = %v", fast.Err())
	}
}

func TestPersistRoundTrip(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.db")
	db, aside, err := OpenDB(path)
	if err != nil || aside != "" {
		t.Fatal(err, aside)
	}
	s, c := newTestStore(t)
	s.SetLocal([]disk.Disk{d("loop0", "L0"), d("loop1", "L1")})
	s.ApplyPeer(disk.Node{ID: peerID, Name: "there", Addresses: []string{"10.0.0.2"}}, []disk.Disk{d("sdb", "P")})
	c.add(time.Minute)
	s.SetLocal([]disk.Disk{d("loop0", "L0")})
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
	w := s2.Where("L1")
	if len(w) != 1 || w[0].Present || w[0].Host != "here" {
		t.Errorf("local history lost: %+v", w)
	}
	w = s2.Where("P")
	if len(w) != 1 || w[0].Present {
		t.Errorf("peer disk after restart = %+v, want remembered, not present", w)
	}
	n, ok := s2.Node(peerID)
	if !ok || n.Online || n.Name != "there" || !slices.Equal(n.Addresses, []string{"10.0.0.2"}) {
		t.Errorf("peer after restart = %+v", n)
	}
	if w := s2.Where("L0"); len(w) != 1 || !w[0].Present {
		t.Errorf("local present disk after restart = %+v", w)
	}
}

func TestFlushWritesOnlyDirtyRecords(t *testing.T) {
	db, _, err := OpenDB(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s, _ := newTestStore(t)
	s.SetLocal([]disk.Disk{d("loop0", "A"), d("loop1", "B")})
	if err := s.Flush(db); err != nil {
		t.Fatal(err)
	}
	s.SetLocal([]disk.Disk{d("loop0", "A2"), d("loop1", "B")})
	nodes, disks, fn, fd := s.takeDirty()
	if len(nodes) != 0 || len(disks) != 1 || disks[0].Disk.Name != "loop0" || len(fn)+len(fd) != 0 {
		t.Errorf("dirty after one change: nodes=%v disks=%v", nodes, disks)
	}
}

func TestCorruptStateFileMovedAside(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.db")
	if err := os.WriteFile(path, []byte("this is not a database, it is a sentence of 64 bytes or more...."), 0o600); err != nil {
		t.Fatal(err)
	}
	db, aside, err := OpenDB(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if aside == "" {
		t.Fatal("corrupt file not reported as moved aside")
	}
	if b, err := os.ReadFile(aside); err != nil || len(b) < 10 {
		t.Errorf("moved-aside file %s: %v", aside, err)
	}
}

func TestNodeIDIsStable(t *testing.T) {
	dir := t.TempDir()
	a, err := LoadOrCreateNodeID(dir)
	if err != nil || !ValidNodeID(string(a)) {
		t.Fatal(a, err)
	}
	b, err := LoadOrCreateNodeID(dir)
	if err != nil || a != b {
		t.Errorf("second load %q, %v; want %q", b, err, a)
	}
	os.WriteFile(filepath.Join(dir, NodeIDFile), []byte("nope\n"), 0o644)
	if _, err := LoadOrCreateNodeID(dir); err == nil {
		t.Error("malformed identity accepted")
	}
}
