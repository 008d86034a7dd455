package peer_test

import (
	"testing"
	"time"

	"github.com/diskd/diskd/pkg/disk"
	"github.com/diskd/diskd/pkg/peer"
	"github.com/diskd/diskd/pkg/testutil"
)

// Delta announces between in-process services on namespace hosts
// (docs/protocol.md "8 Delta announce"). The same through real daemons
// and loop devices is in test/peer_delta_test.go.

// toggle returns ds with disk i taken out when present, put back when not.
func toggle(all []disk.Disk, present []bool, i int) []disk.Disk {
	present[i] = !present[i]
	var out []disk.Disk
	for j, p := range present {
		if p {
			out = append(out, all[j])
		}
	}
	return out
}

// names returns the names of ds, for comparing inventories.
func names(ds []disk.Disk) map[string]bool {
	m := map[string]bool{}
	for _, d := range ds {
		m[d.Name] = true
	}
	return m
}

func sameNames(a, b []disk.Disk) bool {
	ma, mb := names(a), names(b)
	if len(ma) != len(mb) {
		return false
	}
	for n := range ma {
		if !mb[n] {
			return false
		}
	}
	return true
}

// TestDeltaBurst: 100 changes 20 ms apart on one node reach the others as
// deltas (a few small announces where the inventory is tiny), and every
// receiver ends with the sender's inventory.
func TestDeltaBurst(t *testing.T) {
	hosts := testutil.Hosts(t, 3)
	a := startNode(t, hosts[0], nil)
	b := startNode(t, hosts[1], nil)
	c := startNode(t, hosts[2], nil)
	all := loopDisks("h1", 20)
	present := make([]bool, len(all))
	for i := range 10 {
		present[i] = true
	}
	a.st.SetLocal(toggle(all, present, 10))
	for _, n := range []*node{b, c} {
		testutil.Eventually(t, wait, n.h.Hostname+" lists h1's 11 disks", func() bool { return len(n.disksOf(a.id())) == 11 })
	}
	sent0 := counter(a, "deltas_sent")
	var cur []disk.Disk
	for i := range 100 {
		cur = toggle(all, present, i%len(all))
		a.st.SetLocal(cur)
		time.Sleep(20 * time.Millisecond)
	}
	for _, n := range []*node{b, c} {
		testutil.Eventually(t, wait, n.h.Hostname+" ends with h1's inventory", func() bool { return sameNames(n.disksOf(a.id()), cur) })
	}
	if got := counter(a, "deltas_sent") - sent0; got < 90 {
		t.Errorf("%d deltas for 100 changes", got)
	}
	if got := counter(a, "changes_waited"); got != 0 {
		t.Errorf("%d changes waited for the byte budget in a burst it should carry", got)
	}
	for _, n := range []*node{b, c} {
		if got := counter(n, "deltas_applied"); got < 90 {
			t.Errorf("%s applied %d deltas", n.h.Hostname, got)
		}
	}
}

// TestOldReceiverConverges: a receiver that drops delta announces as an
// unknown type (every daemon from before them) still ends with every
// change, by heartbeat, query and announce.
func TestOldReceiverConverges(t *testing.T) {
	hosts := testutil.Hosts(t, 2)
	a := startNode(t, hosts[0], nil)
	old := startNode(t, hosts[1], func(c *peer.Config) { c.IgnoreDeltas = true })
	all := loopDisks("h1", 8)
	present := make([]bool, len(all))
	for i := range 4 {
		present[i] = true
	}
	a.st.SetLocal(toggle(all, present, 4))
	testutil.Eventually(t, wait, "the old receiver lists h1's 5 disks", func() bool { return len(old.disksOf(a.id())) == 5 })
	var cur []disk.Disk
	for i := range 6 {
		cur = toggle(all, present, i)
		a.st.SetLocal(cur)
		time.Sleep(50 * time.Millisecond)
	}
	testutil.Eventually(t, 3*wait, "the old receiver ends with h1's inventory", func() bool { return sameNames(old.disksOf(a.id()), cur) })
	if counter(a, "deltas_sent") == 0 {
		t.Error("no delta sent: the test proves nothing")
	}
	if counter(old, "drop_unknown_type") == 0 || counter(old, "deltas_applied") != 0 {
		t.Errorf("old receiver: drop_unknown_type %d, deltas_applied %d", counter(old, "drop_unknown_type"), counter(old, "deltas_applied"))
	}
}

// TestMissedDeltaRecovers: a receiver cut off while a change goes out
// misses its delta; the next delta does not apply to what it holds
// (no_base), and it recovers by query.
func TestMissedDeltaRecovers(t *testing.T) {
	hosts := testutil.Hosts(t, 2)
	// A long heartbeat, so that no heartbeat repairs the gap before the
	// second delta shows it.
	slow := func(c *peer.Config) { c.HeartbeatInterval = 30 * time.Second }
	a := startNode(t, hosts[0], slow)
	b := startNode(t, hosts[1], slow)
	all := loopDisks("h1", 6)
	present := make([]bool, len(all))
	for i := range 3 {
		present[i] = true
	}
	a.st.SetLocal(toggle(all, present, 3))
	testutil.Eventually(t, wait, "b lists h1's 4 disks", func() bool { return len(b.disksOf(a.id())) == 4 })
	if err := hosts[1].SetLink(false); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = hosts[1].SetLink(true) })
	a.st.SetLocal(toggle(all, present, 4))
	testutil.Eventually(t, wait, "the lost delta sent", func() bool { return counter(a, "deltas_sent") >= 1 })
	time.Sleep(100 * time.Millisecond)
	if err := hosts[1].SetLink(true); err != nil {
		t.Fatal(err)
	}
	cur := toggle(all, present, 0)
	a.st.SetLocal(cur)
	testutil.Eventually(t, 2*wait, "b ends with h1's inventory", func() bool { return sameNames(b.disksOf(a.id()), cur) })
	if got := counter(b, "drop_no_base"); got == 0 {
		t.Errorf("drop_no_base = 0: b did not see the gap a delta leaves")
	}
	if got := counter(b, "deltas_applied"); got != 0 {
		t.Errorf("b applied %d deltas across a gap", got)
	}
}
