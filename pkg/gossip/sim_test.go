package gossip

import (
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/diskd/diskd/pkg/disk"
	"github.com/diskd/diskd/pkg/store"
	"github.com/diskd/diskd/pkg/wire"
)

// simCluster is n gossip services on a simNet, inside the caller's
// synctest bubble: each with its own store holding 2 disks, keyed, LAN
// profile, all started at the same instant, member 0 joining member 1 and
// every other member joining member 0 (one seed, as a user would set it
// up).
type simCluster struct {
	n       int
	net     *simNet
	svcs    []*Service
	trs     []*simTransport
	stores  []*store.Store
	cancels []context.CancelFunc
	wg      sync.WaitGroup
	t0      time.Time
}

// simLatency is the simulated network's one-way delay: a LAN's order.
const simLatency = 500 * time.Microsecond

func newSimCluster(tb testing.TB, n int) *simCluster {
	return newSimClusterOn(tb, n, "lan", simLatency)
}

// newSimClusterOn is newSimCluster with a gossip profile and a one-way
// link delay.
func newSimClusterOn(tb testing.TB, n int, profile string, latency time.Duration) *simCluster {
	return newSimClusterSeeds(tb, n, profile, latency, func(c *simCluster, i int) string {
		if i == 0 {
			return c.trs[1].addr
		}
		return c.trs[0].addr
	})
}

// newSimClusterSeeds is newSimClusterOn with member i joining seed(c, i).
func newSimClusterSeeds(tb testing.TB, n int, profile string, latency time.Duration, seed func(c *simCluster, i int) string) *simCluster {
	keys, err := wire.ParseKeys(strings.NewReader("1 0123456789abcdef0123456789abcdef\n"))
	if err != nil {
		tb.Fatal(err)
	}
	c := &simCluster{n: n, net: &simNet{latency: latency}}
	for range n {
		c.trs = append(c.trs, c.net.newHost())
	}
	for i := range n {
		// Node IDs from the index: the runs are reproducible.
		raw := fmt.Sprintf("%032x", i+1)
		if _, err := hex.DecodeString(raw); err != nil {
			tb.Fatal(err)
		}
		st := store.New(store.Options{Local: disk.Node{ID: disk.NodeID(raw), Name: fmt.Sprintf("n%d", i)}})
		st.SetLocal([]disk.Disk{
			{Name: "sda", Device: "/dev/sda", UUID: fmt.Sprintf("%08x-a", i), Type: "ext4", Size: 1 << 30},
			{Name: "sdb", Device: "/dev/sdb", UUID: fmt.Sprintf("%08x-b", i), Type: "xfs", Size: 1 << 31},
		})
		cfg := DefaultConfig()
		cfg.Join, cfg.Profile = []string{seed(c, i)}, profile
		s, err := New(cfg, Deps{Store: st, Keys: keys, Interval: 10 * time.Second, Instance: uint64(1000 + i)})
		if err != nil {
			tb.Fatal(err)
		}
		tr := c.trs[i]
		s.newTransport = func() (memberlistTransport, error) { return tr, nil }
		c.svcs = append(c.svcs, s)
		c.stores = append(c.stores, st)
	}
	c.t0 = time.Now()
	for _, s := range c.svcs {
		ctx, cancel := context.WithCancel(context.Background())
		c.cancels = append(c.cancels, cancel)
		c.wg.Add(1)
		go func() { defer c.wg.Done(); _ = s.Run(ctx) }()
	}
	return c
}

// stop ends every member at once, as a crash would (no leave messages:
// nothing is left to tell), and waits for them.
func (c *simCluster) stop() {
	for i, s := range c.svcs {
		if !s.killed.Load() {
			s.kill()
		}
		c.cancels[i]()
	}
	c.wg.Wait()
	// Time stops when the bubble's root returns: let memberlist's own
	// goroutines (probes, streams with their deadlines) run out first.
	time.Sleep(time.Minute)
}

// converge waits until every member lists every member and every store
// every disk, or until limit (virtual time). It returns both instants
// (-1 when not reached).
func (c *simCluster) converge(tb testing.TB, limit time.Duration, wantDisks ...int) (members, disks time.Duration) {
	members = -1
	want := 2 * c.n
	if len(wantDisks) > 0 {
		want = wantDisks[0]
	}
	done := make([]bool, c.n)
	left := c.n
	next := 10 * time.Second
	for time.Since(c.t0) < limit {
		if time.Since(c.t0) >= next && len(wantDisks) == 0 {
			next += 10 * time.Second
			var short []string
			for i, s := range c.svcs {
				if s.numMembers() != c.n || !done[i] {
					short = append(short, fmt.Sprintf("%d:%d/%d", i, s.numMembers(), c.stores[i].Counts().DisksPresent))
				}
			}
			tb.Logf("%v: members/disks short of %d/%d: %v", time.Since(c.t0), c.n, want, short)
		}
		if members < 0 {
			all := true
			for _, s := range c.svcs {
				if s.numMembers() != c.n {
					all = false
					break
				}
			}
			if all {
				members = time.Since(c.t0)
			}
		}
		for i, st := range c.stores {
			if !done[i] && st.Counts().DisksPresent == want {
				done[i] = true
				left--
			}
		}
		if left == 0 && members >= 0 {
			return members, time.Since(c.t0)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return members, -1
}

// killAndWait kills member v and waits until the others show it offline:
// it returns when the first and the last did (virtual time), 0 when not
// within limit.
func (c *simCluster) killAndWait(v int, limit time.Duration) (first, all time.Duration) {
	first = -1
	vid := c.stores[v].LocalNode().ID
	c.svcs[v].kill()
	t1 := time.Now()
	for time.Since(t1) < limit {
		off := 0
		for i, st := range c.stores {
			if i == v {
				continue
			}
			if nd, ok := st.Node(vid); ok && !nd.Online {
				off++
			}
		}
		if off > 0 && first < 0 {
			first = time.Since(t1)
		}
		if off == c.n-1 {
			return first, time.Since(t1)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return first, -1
}

// traffic sums what the members sent.
type traffic struct {
	packets, packetBytes, streams, streamBytes, fetches float64
}

func (c *simCluster) traffic() (t traffic) {
	for i, tr := range c.trs {
		t.packets += float64(tr.packets.Load())
		t.packetBytes += float64(tr.packetBytes.Load())
		t.streams += float64(tr.streams.Load())
		t.streamBytes += float64(tr.streamBytes.Load())
		t.fetches += float64(c.svcs[i].ctr.get(cFetchesSent))
	}
	return t
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestSimulatedCluster runs 30 members in a synctest bubble on an
// in-memory network (virtual time: the bounds are the protocol's, not the
// machine's load): every member lists every disk within 30 s, and a
// killed member is offline on all the others within the LAN profile's
// failure detection (suspicion 4 × log10(30) × 1 s probes, ≈ 6 s, plus
// the probe that finds it: 20 s is generous).
func TestSimulatedCluster(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newSimCluster(t, 30)
		defer c.stop()
		members, disks := c.converge(t, 30*time.Second)
		if members < 0 || disks < 0 {
			t.Fatalf("30 members: all members after %v, every disk everywhere after %v (-1: not within 30 s)", members, disks)
		}
		t.Logf("30 members: all members after %v, every disk everywhere after %v", members, disks)
		// A change on member 0 reaches everyone, and member 0 serves its
		// children in the fetch tree, not all 29 (retries aside).
		served := c.svcs[0].ctr.get(cFetchesServed)
		_, local := c.stores[0].LocalDisks()
		c.stores[0].SetLocal(append(local, disk.Disk{Name: "sdc", Device: "/dev/sdc", UUID: "new-c", Type: "vfat", Size: 1 << 29}))
		if _, d := c.converge(t, time.Since(c.t0)+10*time.Second, 61); d < 0 {
			t.Fatal("a change on member 0 not everywhere within 10 s")
		}
		n := c.svcs[0].ctr.get(cFetchesServed) - served
		t.Logf("member 0 served %d fetches of its change", n)
		if n > treeFanout+2 {
			t.Errorf("member 0 served %d fetches of its change, want at most %d (its children in the tree, and a retry or two)", n, treeFanout+2)
		}
		first, all := c.killAndWait(29, 20*time.Second)
		if all < 0 {
			t.Fatalf("killed member: first offline after %v, not offline everywhere within 20 s", first)
		}
		t.Logf("killed member offline: first %v, everywhere %v", first, all)
		if got := c.stores[0].Counts().DisksPresent; got != 59 {
			t.Errorf("after the kill member 0 lists %d present disks, want 59", got)
		}
	})
}

// TestSimulatedWAN runs the wan profile over links with 50 ms one-way
// delay (100 ms round trips; the kernel here has no netem to delay real
// links): 30 members converge, and a killed one is offline everywhere
// within the profile's detection (5 s probes, 3 s probe timeout,
// suspicion 6 × log10(30) × 5 s ≈ 44 s: 120 s is generous).
func TestSimulatedWAN(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newSimClusterOn(t, 30, "wan", 50*time.Millisecond)
		defer c.stop()
		members, disks := c.converge(t, 60*time.Second)
		if members < 0 || disks < 0 {
			t.Fatalf("wan, 30 members: all members after %v, every disk everywhere after %v (-1: not within 60 s)", members, disks)
		}
		first, all := c.killAndWait(29, 120*time.Second)
		t.Logf("wan, 50 ms links, 30 members: all members after %v, every disk everywhere after %v; killed member offline first %v, everywhere %v",
			members, disks, first, all)
		if all < 0 {
			t.Fatalf("killed member: first offline after %v, not offline everywhere within 120 s", first)
		}
	})
}

// TestSimulatedScale measures N members in a synctest bubble on the
// in-memory network, for the sizes in DISKD_SIM_SIZES (e.g.
// "50,200,1000"; skipped without it): time until every member lists every
// member and every disk, idle traffic per node per minute over 3 virtual
// minutes (push/pull runs every 60 s at 50, 120 s at 200, 180 s at 1000),
// the CPU this process spent per node per virtual minute of idle, and a
// killed member's detection time. Virtual time advances only when every
// goroutine is blocked, so the figures are the protocol's, not the load's.
func TestSimulatedScale(t *testing.T) {
	v := os.Getenv("DISKD_SIM_SIZES")
	if v == "" {
		t.Skip("set DISKD_SIM_SIZES=50,200,1000 to measure")
	}
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(f)
		if err != nil || n < 3 {
			t.Fatalf("DISKD_SIM_SIZES: %q", f)
		}
		t.Run(strconv.Itoa(n), func(t *testing.T) { synctest.Test(t, func(t *testing.T) { simScale(t, n) }) })
	}
}

func simScale(t *testing.T, n int) {

	cpu0 := cpuTime()
	c := newSimCluster(t, n)
	defer c.stop()
	members, disks := c.converge(t, 15*time.Minute)
	tr := c.traffic()
	var maxServed, maxSent uint64
	for _, s := range c.svcs {
		maxServed = max(maxServed, s.ctr.get(cFetchesServed))
		maxSent = max(maxSent, s.ctr.get(cFetchesSent))
	}
	t.Logf("N=%d: all members %.1f s, every disk everywhere %.1f s (virtual); start-up fetches per node %.1f (most sent by one %d, most served by one %d), CPU %.1f s in all",
		n, members.Seconds(), disks.Seconds(), tr.fetches/float64(n), maxSent, maxServed, (cpuTime() - cpu0).Seconds())
	if disks < 0 {
		t.Fatalf("N=%d: not converged in 15 virtual minutes", n)
	}
	time.Sleep(10 * time.Second)
	const idle = 3 * time.Minute
	a, cpuA := c.traffic(), cpuTime()
	time.Sleep(idle)
	b, cpuB := c.traffic(), cpuTime()
	per := func(x, y float64) float64 { return (y - x) / float64(n) / idle.Minutes() }
	var drops uint64
	for _, tr := range c.trs {
		drops += tr.dropped.Load()
	}
	t.Logf("N=%d idle per node per minute: UDP %.1f packets %.0f B; streams %.2f, %.0f B; fetches %.2f; CPU %.1f ms (process CPU / N / virtual minute); packets lost to full queues in all: %d",
		n, per(a.packets, b.packets), per(a.packetBytes, b.packetBytes), per(a.streams, b.streams), per(a.streamBytes, b.streamBytes),
		per(a.fetches, b.fetches), float64(cpuB-cpuA)/float64(time.Millisecond)/float64(n)/idle.Minutes(), drops)
	// One change: member 0 gets a third disk. Every other member fetches
	// the new generation from it (the origin serves them all).
	served0, b0 := c.svcs[0].ctr.get(cFetchesServed), c.traffic()
	cpuC := cpuTime()
	c.stores[0].SetLocal([]disk.Disk{
		{Name: "sda", Device: "/dev/sda", UUID: "00000000-a", Type: "ext4", Size: 1 << 30},
		{Name: "sdb", Device: "/dev/sdb", UUID: "00000000-b", Type: "xfs", Size: 1 << 31},
		{Name: "sdc", Device: "/dev/sdc", UUID: "00000000-c", Type: "vfat", Size: 1 << 29},
	})
	tc := time.Now()
	var firstC, allC time.Duration = -1, -1
	for time.Since(tc) < 5*time.Minute && allC < 0 {
		got := 0
		for _, st := range c.stores {
			if st.Counts().DisksPresent == 2*n+1 {
				got++
			}
		}
		if got > 1 && firstC < 0 {
			firstC = time.Since(tc)
		}
		if got == n {
			allC = time.Since(tc)
		}
		time.Sleep(10 * time.Millisecond)
	}
	ac := c.traffic()
	t.Logf("N=%d one change on member 0: first other member lists it %.2f s, all %.2f s (virtual); member 0 served %d fetches; all members sent %.0f packets, %.0f streams, %.0f stream bytes for it; CPU %.1f s",
		n, firstC.Seconds(), allC.Seconds(), c.svcs[0].ctr.get(cFetchesServed)-served0, ac.packets-b0.packets, ac.streams-b0.streams, ac.streamBytes-b0.streamBytes, (cpuTime() - cpuC).Seconds())
	if allC < 0 {
		t.Errorf("N=%d: a change not everywhere within 5 virtual minutes", n)
	}
	first, all := c.killAndWait(n-1, 5*time.Minute)
	t.Logf("N=%d killed member offline: first %.1f s, everywhere %.1f s (virtual)", n, first.Seconds(), all.Seconds())
	if all < 0 {
		t.Errorf("N=%d: killed member not offline everywhere within 5 virtual minutes", n)
	}

}

// TestHeldFetchesBounded: a keyed member asking for generations that never
// come (a peer gone bad, or a flood of retries) makes a parent hold at most
// maxHeld requests; the rest are answered at once, and the held ones are
// answered "unknown" and forgotten after holdMax.
func TestHeldFetchesBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newSimCluster(t, 3)
		defer c.stop()
		if m, _ := c.converge(t, 30*time.Second); m < 0 {
			t.Fatal("3 members did not converge within 30 s")
		}
		s := c.svcs[1]
		held := s.ctr.get(cFetchesHeld)
		req := fetchReq{Origin: idBytes(c.svcs[0].self), From: idBytes(c.svcs[2].self), Instance: 1000, Gen: 1 << 40}
		for range maxHeld + 100 {
			s.serveFetch(req)
		}
		s.mu.Lock()
		n := s.nHeld
		s.mu.Unlock()
		if n != maxHeld || s.ctr.get(cFetchesHeld)-held != maxHeld {
			t.Fatalf("%d requests held (%d counted), want at most %d", n, s.ctr.get(cFetchesHeld)-held, maxHeld)
		}
		time.Sleep(holdMax + 2*time.Second)
		s.mu.Lock()
		n = s.nHeld
		s.mu.Unlock()
		if n != 0 {
			t.Fatalf("%d requests still held %v later, want 0", n, holdMax+2*time.Second)
		}
	})
}

// TestJoinedByOthersResyncs: a member whose own join fails (its seed is
// not there yet) but whom the others join makes the same one extra state
// exchange a few seconds later as a member that joined. Without it, what
// was gossiped while it was still unknown to a member reached it only at
// the next push/pull, 30 s on (TestGossipNine: a relayed host missing on
// one subnet for the whole 30 s of the test).
func TestJoinedByOthersResyncs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newSimClusterSeeds(t, 3, "lan", simLatency, func(c *simCluster, i int) string {
			if i == 0 {
				return "10.255.255.1:32005" // nobody there
			}
			return c.trs[0].addr
		})
		defer c.stop()
		time.Sleep(10 * time.Second)
		if j := c.svcs[0].ctr.get(cJoins); j != 0 {
			t.Fatalf("member 0 joined %d times through a seed that is not there", j)
		}
		for i, s := range c.svcs {
			if got := s.ctr.get(cResyncs); got != 1 {
				t.Errorf("member %d made %d extra state exchanges within 10 s, want 1", i, got)
			}
		}
	})
}
