package legacy

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/diskd/diskd/pkg/disk"
	"github.com/diskd/diskd/pkg/store"
	"github.com/diskd/diskd/pkg/wire"
)

const localID = disk.NodeID("0123456789abcdef0123456789abcdef")

// rig is the receiving core on a real store with a clock the test moves.
type rig struct {
	t     *testing.T
	now   time.Time
	st    *store.Store
	ctr   counters
	c     *core
	diskd map[netip.Addr]bool
}

func newRig(t *testing.T) *rig {
	r := &rig{t: t, now: time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC), diskd: map[netip.Addr]bool{}}
	r.st = store.New(store.Options{Local: disk.Node{ID: localID, Name: "here"}, Now: func() time.Time { return r.now }})
	r.c = newCore(r.st, &r.ctr, DefaultPeerInterval, func(a netip.Addr) bool { return r.diskd[a] })
	return r
}

func (r *rig) advance(d time.Duration) { r.now = r.now.Add(d); r.c.tick(r.now) }

func (r *rig) recv(src string, es ...Entry) { r.c.receive(r.now, netip.MustParseAddr(src), es) }

func (r *rig) node(src string) (disk.Node, bool) {
	return r.st.Node(NodeID(netip.MustParseAddr(src)))
}

func (r *rig) labels(id disk.NodeID) map[string]bool {
	m := map[string]bool{}
	for _, d := range r.st.Disks(func(d *disk.Disk) bool { return d.Node == id && d.Present }) {
		m[d.Label] = true
	}
	return m
}

func TestCoreAppliesAndReplaces(t *testing.T) {
	r := newRig(t)
	r.recv("10.99.0.2", Entry{"1111-AAAA", "OLD", "/dev/sda1"}, Entry{"2222-BBBB", "KEEP", "/dev/sdb1"})
	if _, ok := r.node("10.99.0.2"); ok {
		t.Fatal("a new source applied before it settled")
	}
	r.advance(Settle)
	n, ok := r.node("10.99.0.2")
	if !ok || n.Reach != disk.ReachLegacy || n.Name != "10.99.0.2" || !n.Online || n.ID != "legacy0a630002" || n.Disks != 2 {
		t.Fatalf("legacy node: %+v (%v)", n, ok)
	}
	d := r.st.Where("OLD")
	if len(d) != 1 || d[0].Host != "10.99.0.2" || d[0].Device != "/dev/sda1" || d[0].UUID != "1111-AAAA" || d[0].Name != "sda1" {
		t.Fatalf("where OLD: %+v", d)
	}
	// The next list replaces it (after the peer's gap): OLD is history.
	r.advance(time.Minute)
	r.recv("10.99.0.2", Entry{"2222-BBBB", "KEEP", "/dev/sdb1"}, Entry{"", "NEW", "/dev/sdc1"})
	if got := r.labels(n.ID); !got["KEEP"] || !got["NEW"] || got["OLD"] {
		t.Errorf("after the second list: %v", got)
	}
	if w := r.st.Where("OLD"); len(w) != 1 || w[0].Present {
		t.Errorf("OLD: %+v", w)
	}
	// Renamed by reverse DNS: node and disks carry the name.
	r.c.rename(r.now, netip.MustParseAddr("10.99.0.2"), "oldbox.example")
	if w := r.st.Where("KEEP"); len(w) != 1 || w[0].Host != "oldbox.example" {
		t.Errorf("after rename: %+v", w)
	}
}

func TestCoreCoalescesFloods(t *testing.T) {
	r := newRig(t)
	r.recv("10.99.0.3", Entry{"u", "FIRST", "/dev/x"})
	r.advance(Settle)
	for i := range 100 {
		r.recv("10.99.0.3", Entry{"u", fmt.Sprintf("L%d", i), "/dev/x"})
	}
	if got := r.ctr.get(listsApplied); got != 1 {
		t.Errorf("%d lists applied within the gap, want 1", got)
	}
	r.advance(ApplyGap)
	if got := r.labels(NodeID(netip.MustParseAddr("10.99.0.3"))); !got["L99"] || len(got) != 1 {
		t.Errorf("after the gap: %v, want the newest list", got)
	}
	if r.ctr.get(dropCoalesced) != 99 || r.ctr.get(listsApplied) != 2 {
		t.Errorf("coalesced %d applied %d", r.ctr.get(dropCoalesced), r.ctr.get(listsApplied))
	}
}

func TestCoreOffline(t *testing.T) {
	r := newRig(t)
	r.recv("10.99.0.4", Entry{"u", "L", "/dev/x"})
	r.advance(Settle)
	r.advance(OfflineAfter*DefaultPeerInterval - time.Second)
	if n, _ := r.node("10.99.0.4"); !n.Online {
		t.Fatal("offline before 3 periods")
	}
	r.advance(time.Second)
	n, _ := r.node("10.99.0.4")
	if n.Online || r.ctr.get(peersWentOffline) != 1 {
		t.Fatalf("not offline after 3 periods: %+v", n)
	}
	if w := r.st.Where("L"); len(w) != 1 || w[0].Present {
		t.Errorf("its disk: %+v, want history", w)
	}
	r.recv("10.99.0.4", Entry{"u", "L", "/dev/x"})
	if n, _ := r.node("10.99.0.4"); !n.Online {
		t.Error("not back online on its next announce")
	}
}

// TestCoreNeverTouchesDiskdPeers: a legacy datagram from a diskd peer's
// address is not taken (that peer speaks for itself), and no legacy node
// ID can be a diskd one, so a keyed peer's records stay as they were.
func TestCoreNeverTouchesDiskdPeers(t *testing.T) {
	r := newRig(t)
	keyed := disk.Node{ID: "fedcba9876543210fedcba9876543210", Name: "keyed", Addresses: []string{"10.99.0.5"}}
	r.st.ApplyPeer(keyed, []disk.Disk{{Name: "sda1", Device: "/dev/sda1", Label: "REAL"}})
	r.diskd[netip.MustParseAddr("10.99.0.5")] = true
	r.recv("10.99.0.5", Entry{"u", "FORGED", "/dev/sda1"})
	r.advance(time.Minute)
	if r.ctr.get(dropDiskdPeer) != 1 || len(r.st.Where("FORGED")) != 0 {
		t.Errorf("a diskd peer's address taken as a legacy peer")
	}
	if w := r.st.Where("REAL"); len(w) != 1 || w[0].Host != "keyed" || !w[0].Present {
		t.Errorf("keyed peer's disk: %+v", w)
	}
	// A legacy twin that turns out to be a diskd node goes offline.
	r.recv("10.99.0.6", Entry{"u", "TWIN", "/dev/sdb"})
	r.advance(Settle)
	r.diskd[netip.MustParseAddr("10.99.0.6")] = true
	r.advance(time.Minute)
	r.recv("10.99.0.6", Entry{"u", "TWIN", "/dev/sdb"})
	r.advance(time.Second)
	if n, _ := r.node("10.99.0.6"); n.Online {
		t.Error("legacy twin of a diskd node still online")
	}
	for _, a := range []string{"10.99.0.5", "255.255.255.255", "0.0.0.0"} {
		if id, err := wire.ParseNodeID(NodeID(netip.MustParseAddr(a))); err == nil {
			t.Errorf("legacy node ID %v parses as a diskd node ID", id)
		}
	}
}

func TestCorePeersBounded(t *testing.T) {
	r := newRig(t)
	for i := range MaxPeers + 10 {
		r.recv(fmt.Sprintf("10.98.%d.%d", i/250, i%250+1), Entry{"u", "x", "/dev/x"})
	}
	if r.ctr.get(dropPeersFull) != 10 || len(r.c.peers) != MaxPeers {
		t.Fatalf("peers %d, dropped %d", len(r.c.peers), r.ctr.get(dropPeersFull))
	}
	r.advance(Settle)
	r.advance(OfflineAfter * DefaultPeerInterval)
	r.recv("10.97.0.1", Entry{"u", "x", "/dev/x"})
	if _, ok := r.c.peers[netip.MustParseAddr("10.97.0.1")]; !ok {
		t.Error("a new source not admitted in place of an offline peer")
	}
}

func TestCoreDuplicateDevices(t *testing.T) {
	r := newRig(t)
	r.recv("10.99.0.7", Entry{"a", "A", "/dev/sda"}, Entry{"b", "B", "/dev/sda"}, Entry{"c", "C", ""}, Entry{"", "", ""})
	r.advance(Settle)
	if got := r.labels(NodeID(netip.MustParseAddr("10.99.0.7"))); !got["A"] || got["B"] || !got["C"] {
		t.Errorf("%v", got)
	}
	if r.ctr.get(entriesDuplicate) != 1 {
		t.Errorf("duplicates counted %d", r.ctr.get(entriesDuplicate))
	}
}
