package sim

import (
	"strings"
	"testing"
	"time"

	"github.com/diskd/diskd/pkg/peer"
	"github.com/diskd/diskd/pkg/wire"
)

const testKeys = "1 0123456789abcdef0123456789abcdef\n"

func keys(t testing.TB) *wire.Keyring {
	t.Helper()
	k, err := wire.ParseKeys(strings.NewReader(testKeys))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func options(t testing.TB, n int) Options {
	return Options{N: n, Disks: 2, LatencyMin: 200 * time.Microsecond, LatencyMax: time.Millisecond,
		HeartbeatInterval: peer.DefaultInterval, Seed: 1, Keys: keys(t)}
}

// TestSimulatedNetwork: 50 nodes started at once (a power cut ends) all
// know each other's current generation, online, within a bound of
// simulated time; a node killed without a word goes offline everywhere
// after 3 intervals (not before 2: its last heartbeat was at most one
// interval before it died), and one that stops cleanly at once.
func TestSimulatedNetwork(t *testing.T) {
	const converge = 5 * time.Second // simulated
	iv := peer.DefaultInterval
	n := New(options(t, 50))
	for i := range n.Nodes {
		n.Start(i)
	}
	if !n.RunUntil(Epoch.Add(converge), 10*time.Millisecond, n.Converged) {
		t.Fatalf("not converged %v after all started at once", converge)
	}
	t.Logf("50 nodes converged %v after all started at once", n.Now().Sub(Epoch))

	// A change reaches everyone.
	n.Run(n.Now().Add(time.Minute))
	n.Change(3)
	changed := n.Now()
	if !n.RunUntil(changed.Add(time.Second), time.Millisecond, n.Converged) {
		t.Fatal("a change did not reach everyone within a second")
	}

	// Killed: online everywhere for 2 intervals, offline everywhere by 3
	// intervals and one offline check.
	const dead = 7
	n.Kill(dead)
	killed := n.Now()
	n.Run(killed.Add(2*iv - time.Millisecond))
	for i, nd := range n.Nodes {
		if nd.Up && !n.Online(i, dead) {
			t.Fatalf("node %d took the killed node offline %v after it died", i, n.Now().Sub(killed))
		}
	}
	n.Run(killed.Add(offlineBy(iv)))
	for i, nd := range n.Nodes {
		if nd.Up && n.Online(i, dead) {
			t.Fatalf("node %d still holds the killed node online %v after it died", i, n.Now().Sub(killed))
		}
	}

	// Goodbye: offline everywhere at once.
	const leaving = 9
	n.Stop(leaving)
	n.Run(n.Now().Add(10 * time.Millisecond))
	for i, nd := range n.Nodes {
		if nd.Up && n.Online(i, leaving) {
			t.Fatalf("node %d holds the node that said goodbye online", i)
		}
	}
	// The other two copies come later, and count as replays.
	n.Run(n.Now().Add(100 * time.Millisecond))
	if c := n.Nodes[0].M.Counters(); c["goodbyes_received"] != 1 || c["drop_stale_instance"] != 2 {
		t.Errorf("goodbyes_received %d, drop_stale_instance %d: want the first of 3 copies taken, 2 dropped",
			c["goodbyes_received"], c["drop_stale_instance"])
	}
	if !n.Converged() {
		t.Error("the network is not converged after a kill and a goodbye")
	}

	// The killed node comes back (a new instance): everyone knows it again.
	n.Start(dead)
	if !n.RunUntil(n.Now().Add(converge), 10*time.Millisecond, n.Converged) {
		t.Fatal("a restarted node not known everywhere")
	}
}

// offlineBy is when every node has taken a silent node offline: 3
// intervals after its last heartbeat, found at the next check (at most a
// second later).
func offlineBy(iv time.Duration) time.Duration { return 3*iv + time.Second + 10*time.Millisecond }

// TestSimulatedLoss: on a link that loses datagrams, a node that missed
// an announce learns of the gap from the next heartbeat and asks: every
// node still converges, at start and after a change.
func TestSimulatedLoss(t *testing.T) {
	opt := options(t, 30)
	opt.Loss = 0.05
	n := New(opt)
	for i := range n.Nodes {
		n.Start(i)
	}
	// One heartbeat interval reveals every gap; the queries that follow
	// take a few seconds more.
	bound := peer.DefaultInterval + 5*time.Second
	if !n.RunUntil(Epoch.Add(bound), 10*time.Millisecond, n.Converged) {
		t.Fatalf("not converged %v after start, with 5%% loss", bound)
	}
	t.Logf("converged %v after start, with 5%% loss", n.Now().Sub(Epoch))
	for i := range 5 {
		n.Change(i)
	}
	changed := n.Now()
	if !n.RunUntil(n.Now().Add(bound), 10*time.Millisecond, n.Converged) {
		t.Fatalf("changes not everywhere %v later, with 5%% loss", bound)
	}
	t.Logf("changes everywhere %v later", n.Now().Sub(changed))
}

// TestSendsPerNodeStayFlat: what a node sends - at a power cut and then
// idle - does not grow with the size of the network (what it receives
// does: that is multicast).
func TestSendsPerNodeStayFlat(t *testing.T) {
	sent := func(size int) float64 {
		n := New(options(t, size))
		for i := range n.Nodes {
			n.Start(i)
		}
		n.Run(Epoch.Add(90 * time.Second))
		if !n.Converged() {
			t.Fatalf("N=%d: not converged", size)
		}
		return float64(n.Total().SentDatagrams) / float64(size)
	}
	small, large := sent(10), sent(100)
	t.Logf("datagrams sent per node in the first 90 s: %.1f with 10 nodes, %.1f with 100", small, large)
	if large > 1.2*small {
		t.Errorf("a node of 100 sends %.1f datagrams, one of 10 sends %.1f", large, small)
	}
}
