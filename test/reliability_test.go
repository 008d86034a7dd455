package test

import (
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/diskd/diskd/pkg/disk"
	"github.com/diskd/diskd/pkg/peer"
	"github.com/diskd/diskd/pkg/testutil"
	"github.com/diskd/diskd/pkg/wire"
)

// The reliability suite (issue 10): each case drives the real binaries on
// namespace hosts as an attacker or a failure would, checks that what it
// bounds stays bounded, and prints its figures as "figure: ..." lines.
// `make test` runs a short form of every case; `make reliability` runs the
// long form (-reliability) and prints every figure.
//
// DISKD_RELIABILITY_DISKD=PATH runs the target daemons from another diskd
// binary (for before/after figures); the attackers stay this tree's code.

var reliabilityLong = flag.Bool("reliability", false, "run the reliability suite's long form (make reliability)")

// pick returns short in `make test`, long under -reliability.
func pick[T any](short, long T) T {
	if *reliabilityLong {
		return long
	}
	return short
}

func figure(t *testing.T, format string, args ...any) {
	t.Helper()
	t.Logf("figure: %s: %s", t.Name(), fmt.Sprintf(format, args...))
}

// targetBinary is the diskd the targets of the suite run.
func targetBinary() string { return os.Getenv("DISKD_RELIABILITY_DISKD") }

// startTarget starts the daemon under attack on h.
func startTarget(t *testing.T, h *testutil.Host, args ...string) *testutil.Daemon {
	t.Helper()
	return testutil.StartDaemon(t, testutil.DaemonOptions{Prefix: h.Prefix(), Binary: targetBinary(),
		Args: append([]string{"--heartbeat-interval", peerHeartbeat, "--devices", "/dev/nothing-for-this-test"}, args...)})
}

func rssMiB(t testing.TB, d *testutil.Daemon) float64 {
	return float64(rssKiB(t, d.Cmd.Process.Pid, "VmRSS:")) / 1024
}

func netCounters(t *testing.T, d *testutil.Daemon) map[string]uint64 {
	t.Helper()
	n := status(t, d).Network
	if n == nil {
		t.Fatal("no network status")
	}
	return n.Counters
}

// accounted reports whether every datagram the daemon received is counted
// once, as accepted or as dropped.
func accounted(c map[string]uint64) bool {
	if _, ok := c["datagrams_accepted"]; !ok && targetBinary() != "" {
		return true // a build from before these counters, for its figures
	}
	return c["received_datagrams"] == c["datagrams_accepted"]+c["datagrams_dropped"]
}

// sender is a stranger on the link: UDP sockets on host h, each bound to a
// source address of its own (added to h's eth0 as 10.99.0.100 and up: on a
// link anyone can use as many addresses as they like), aimed at the peer
// network's IPv4 group.
type sender struct {
	conns []*net.UDPConn
	sent  atomic.Uint64
	fails atomic.Uint64
}

func newSender(t *testing.T, h *testutil.Host, sources int) *sender {
	t.Helper()
	if sources < 1 || sources > 150 {
		t.Fatalf("sources %d: want 1-150", sources)
	}
	ns := filepath.Base(h.NetNS)
	var addrs []netip.Addr
	for i := range sources {
		a := netip.AddrFrom4([4]byte{10, 99, 0, byte(100 + i)})
		if out, err := exec.Command("ip", "-n", ns, "addr", "add", a.String()+"/24", "dev", "eth0").CombinedOutput(); err != nil {
			t.Fatalf("ip addr add %s: %v %s", a, err, out)
		}
		addrs = append(addrs, a)
	}
	s := &sender{}
	group := net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(peer.DefaultGroup4), peer.DefaultPort))
	err := h.Do(func() error {
		for _, a := range addrs {
			c, err := net.DialUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(a, 0)), group)
			if err != nil {
				return err
			}
			s.conns = append(s.conns, c)
		}
		return nil
	})
	t.Cleanup(func() {
		for _, c := range s.conns {
			c.Close()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// send sends b from source i (modulo the number of sources).
func (s *sender) send(i int, b []byte) {
	if _, err := s.conns[i%len(s.conns)].Write(b); err != nil {
		s.fails.Add(1)
		return
	}
	s.sent.Add(1)
}

// paced sends dgs in order at about rate a second, spread over the sources.
func (s *sender) paced(dgs [][]byte, rate int) {
	start := time.Now()
	for i, b := range dgs {
		if i%50 == 0 {
			if ahead := time.Until(start.Add(time.Duration(i) * time.Second / time.Duration(rate))); ahead > 0 {
				time.Sleep(ahead)
			}
		}
		s.send(i, b)
	}
}

// validDatagrams are well-formed datagrams of every type from a few made-up
// nodes, tagged with keys (nil: untagged).
func validDatagrams(t *testing.T, keys *wire.Keyring) [][]byte {
	var out [][]byte
	for n := range 4 {
		enc := wire.NewEncoder(wire.NodeID{0xdd, byte(n)}, wire.NewInstance(time.Now()), keys)
		inv := wire.NewInventory(fakeDisks(n, 16))
		out = append(out, enc.Heartbeat(1, wire.Heartbeat{Name: fmt.Sprintf("junk%d", n), Digest: inv.Digest(), Interval: time.Second}))
		out = append(out, enc.Announce(1, fmt.Sprintf("junk%d", n), inv)...)
		out = append(out, enc.Query(1, nil), enc.Query(1, []wire.NodeID{{1}, {2}}), enc.Goodbye(1))
	}
	return out
}

// junkPool makes n datagrams, a third each random bytes, valid datagrams
// cut short, and valid datagrams with a few bytes changed.
func junkPool(r *rand.Rand, valid [][]byte, n int) [][]byte {
	pool := make([][]byte, n)
	for i := range pool {
		v := valid[r.IntN(len(valid))]
		switch i % 3 {
		case 0:
			b := make([]byte, r.IntN(1500))
			for j := range b {
				b[j] = byte(r.Uint32())
			}
			pool[i] = b
		case 1:
			pool[i] = v[:r.IntN(len(v))]
		default:
			b := append([]byte(nil), v...)
			for range 1 + r.IntN(4) {
				b[r.IntN(len(b))] ^= byte(1 + r.IntN(255))
			}
			pool[i] = b
		}
	}
	return pool
}

func fakeDisks(node, n int) []disk.Disk {
	ds := make([]disk.Disk, n)
	for i := range ds {
		ds[i] = disk.Disk{Name: fmt.Sprintf("sd%d", i), Device: fmt.Sprintf("/dev/sd%d", i), MajMin: fmt.Sprintf("8:%d", i),
			UUID:  fmt.Sprintf("%08x-4444-4000-8000-%012x", node, i),
			Label: fmt.Sprintf("FAKE_%04d_%02d", node, i), Type: "ext4", Usage: "filesystem", Size: 1 << 30}
	}
	return ds
}

// listLatencies runs `diskctl list --json` against d until stop closes and
// returns each run's duration and the number of failed runs.
func listLatencies(t *testing.T, d *testutil.Daemon, stop <-chan struct{}) (lat []time.Duration, failed int) {
	_, diskctl := testutil.Binaries(t)
	for {
		select {
		case <-stop:
			return lat, failed
		default:
		}
		t0 := time.Now()
		if err := exec.Command(diskctl, "--socket", d.Socket, "list", "--json").Run(); err != nil {
			failed++
		}
		lat = append(lat, time.Since(t0))
	}
}

// TestReliabilityJunkFlood: a stranger floods the group at full rate from
// 16 source addresses with random bytes and valid datagrams cut short or
// altered, on an unauthenticated and on a keyed network. Root's `diskctl
// list` is served throughout, and every datagram the daemon receives is
// counted once (accepted or dropped with a reason); on the keyed network
// none is accepted. Figures: list p99 during the flood beside before it,
// RSS growth, datagrams sent and received.
func TestReliabilityJunkFlood(t *testing.T) {
	testutil.RequiresTool(t, "ip")
	flood := pick(2*time.Second, 10*time.Second)
	for _, keyed := range []bool{false, true} {
		name := "unkeyed"
		if keyed {
			name = "keyed"
		}
		t.Run(name, func(t *testing.T) {
			hosts := testutil.Hosts(t, 2)
			var args []string
			var attackerKeys *wire.Keyring
			if keyed {
				args = []string{"--key-file", writeKeyFile(t, "1 0123456789abcdef0123456789abcdef\n")}
				// The stranger does not have the key: it tags with a guess.
				var err error
				if attackerKeys, err = wire.ParseKeys(strings.NewReader("1 not-the-key-but-a-good-guess\n")); err != nil {
					t.Fatal(err)
				}
			}
			d := startTarget(t, hosts[0], args...)
			valid := append(validDatagrams(t, nil), validDatagrams(t, attackerKeys)...)
			pool := junkPool(rand.New(rand.NewPCG(1, uint64(len(name)))), valid, 8192)
			s := newSender(t, hosts[1], 16)

			stop := make(chan struct{})
			var before []time.Duration
			go func() { time.Sleep(time.Second); close(stop) }()
			before, _ = listLatencies(t, d, stop)
			rss0 := rssMiB(t, d)
			c0 := netCounters(t, d)

			stop = make(chan struct{})
			var wg sync.WaitGroup
			for g := range 2 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := g; ; i += 2 {
						if i%256 == g {
							select {
							case <-stop:
								return
							default:
							}
						}
						s.send(i, pool[i%len(pool)])
					}
				}()
			}
			var during []time.Duration
			var failed int
			listDone := make(chan struct{})
			go func() { defer close(listDone); during, failed = listLatencies(t, d, stop) }()
			rssMax := rss0
			for end := time.Now().Add(flood); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
				rssMax = max(rssMax, rssMiB(t, d))
			}
			close(stop)
			wg.Wait()
			<-listDone

			var c map[string]uint64
			testutil.Eventually(t, 30*time.Second, "every datagram received counted once", func() bool {
				c = netCounters(t, d)
				return accounted(c)
			})
			recv := c["received_datagrams"] - c0["received_datagrams"]
			figure(t, "%v flood from 16 sources: %d datagrams sent (%.0f/s), %d received by the daemon (the rest dropped by the kernel), %d dropped by the daemon, %d accepted",
				flood, s.sent.Load(), float64(s.sent.Load())/flood.Seconds(), recv,
				c["datagrams_dropped"]-c0["datagrams_dropped"], c["datagrams_accepted"]-c0["datagrams_accepted"])
			figure(t, "diskctl list --json p50 %.1f ms, p99 %.1f ms during the flood (%d runs, %d failed); before it p50 %.1f ms, p99 %.1f ms",
				ms(percentile(during, 50)), ms(percentile(during, 99)), len(during), failed, ms(percentile(before, 50)), ms(percentile(before, 99)))
			figure(t, "RSS %.1f MiB before, %.1f MiB at most during the flood (+%.1f MiB)", rss0, rssMax, rssMax-rss0)
			var reasons []string
			for k, v := range c {
				if strings.HasPrefix(k, "drop_") && v > c0[k] {
					reasons = append(reasons, fmt.Sprintf("%s %d", k, v-c0[k]))
				}
			}
			figure(t, "drops by reason: %s", strings.Join(slices.Sorted(slices.Values(reasons)), ", "))

			if failed > 0 {
				t.Errorf("%d of %d diskctl list runs failed during the flood", failed, len(during))
			}
			if recv == 0 {
				t.Fatal("the daemon received nothing of the flood")
			}
			if keyed && c["datagrams_accepted"] != c0["datagrams_accepted"] {
				t.Errorf("keyed network accepted %d datagrams from a stranger", c["datagrams_accepted"]-c0["datagrams_accepted"])
			}
			if rssMax-rss0 > 64 {
				t.Errorf("RSS grew by %.1f MiB during the flood", rssMax-rss0)
			}
		})
	}
}

// TestReliabilityForgedAndReplayed: on a keyed network a stranger who
// recorded a real peer's datagrams replays them exactly, alters them (a
// body byte, the key ID, the tag stripped), and forges new ones in the
// peer's name with a guessed key and a newer instance. The peer has been
// killed and has gone offline: every one of the stranger's datagrams is
// dropped and counted, none accepted, and the peer stays offline with its
// disks as they were.
func TestReliabilityForgedAndReplayed(t *testing.T) {
	hosts := testutil.Hosts(t, 3)
	keyFile := writeKeyFile(t, "1 0123456789abcdef0123456789abcdef\n")
	tap := newWireTap(t, hosts[2])
	d := startTarget(t, hosts[0], "--key-file", keyFile)
	real := testutil.StartDaemon(t, testutil.DaemonOptions{Prefix: hosts[1].Prefix(),
		Args: []string{"--heartbeat-interval", peerHeartbeat, "--key-file", keyFile, "--devices", "/dev/fake*", "--blkid", fakeBlkid(t, 3), "--uevents=false"}})
	testutil.Eventually(t, peerWait, "the real peer's disks listed", func() bool { return presentOn(t, d, "dkd-h2") == 3 })
	realID, err := wire.ParseNodeID(status(t, real).NodeID)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second) // a few heartbeats more to record
	if err := sigkill(real); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, peerWait, "the killed peer offline", func() bool { return !onlineOn(t, d, "dkd-h2") })

	var recorded [][]byte
	for _, b := range tap.Datagrams() {
		if len(b) >= wire.HeaderSize && string(b[8:24]) == string(realID[:]) {
			recorded = append(recorded, b)
		}
	}
	if len(recorded) < 3 {
		t.Fatalf("recorded %d datagrams of the real peer", len(recorded))
	}
	guess, _ := wire.ParseKeys(strings.NewReader("1 0123456789abcdef0123456789abcdeX\n"))
	forger := wire.NewEncoder(realID, wire.NewInstance(time.Now().Add(time.Hour)), guess)
	rounds := pick(40, 400)
	kinds := map[string][][]byte{}
	for range rounds {
		for _, b := range recorded {
			kinds["replayed"] = append(kinds["replayed"], b)
			body := append([]byte(nil), b...)
			body[wire.HeaderSize] ^= 0x40
			kinds["body altered"] = append(kinds["body altered"], body)
			kid := append([]byte(nil), b...)
			kid[7] = 9
			kinds["other key ID"] = append(kinds["other key ID"], kid)
			bare := append([]byte(nil), b[:len(b)-wire.TagSize]...)
			bare[6], bare[7] = 0, 0
			kinds["tag stripped"] = append(kinds["tag stripped"], bare)
		}
		kinds["forged with a guessed key"] = append(kinds["forged with a guessed key"],
			forger.Heartbeat(99, wire.Heartbeat{Name: "dkd-h2", Interval: time.Hour}),
			forger.Announce(99, "dkd-h2", wire.NewInventory(fakeDisks(2, 4)))[0])
	}
	var all [][]byte
	for _, dgs := range kinds {
		all = append(all, dgs...)
	}
	rand.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })

	c0 := netCounters(t, d)
	// 16 sources at 2000 datagrams a second in all: below the per-source
	// rate, so every datagram reaches the tag check (none is cut earlier).
	s := newSender(t, hosts[2], 16)
	s.paced(all, 2000)
	own := func(c map[string]uint64) uint64 { return c["drop_own"] }
	var c map[string]uint64
	testutil.Eventually(t, 30*time.Second, "all of the stranger's datagrams counted", func() bool {
		c = netCounters(t, d)
		return accounted(c) && c["received_datagrams"]-c0["received_datagrams"]-(own(c)-own(c0)) >= s.sent.Load()
	})
	dropped := c["datagrams_dropped"] - c0["datagrams_dropped"] - (own(c) - own(c0))
	accepted := c["datagrams_accepted"] - c0["datagrams_accepted"]
	var reasons []string
	for k, v := range c {
		if strings.HasPrefix(k, "drop_") && k != "drop_own" && v > c0[k] {
			reasons = append(reasons, fmt.Sprintf("%s %d", k, v-c0[k]))
		}
	}
	figure(t, "%d forged or replayed datagrams sent (%d kinds), %d dropped and counted (%.1f %%), %d accepted; by reason: %s",
		s.sent.Load(), len(kinds), dropped, 100*float64(dropped)/float64(s.sent.Load()), accepted, strings.Join(slices.Sorted(slices.Values(reasons)), ", "))
	if accepted != 0 || dropped != s.sent.Load() {
		t.Errorf("sent %d: dropped %d, accepted %d", s.sent.Load(), dropped, accepted)
	}
	if onlineOn(t, d, "dkd-h2") {
		t.Error("replays made the killed peer online again")
	}
	ds := disksOn(t, d, "dkd-h2")
	if len(ds) != 3 {
		t.Errorf("the peer's disks changed: %+v", ds)
	}
	for _, x := range ds {
		if x.Present || !strings.HasPrefix(x.Label, "BIG_") {
			t.Errorf("disk after the attack: %+v", x)
		}
	}
}

// TestReliabilityFakeNodes: a stranger on an unauthenticated network
// announces thousands of made-up nodes with 16 disks each, every one
// advertising a one-hour heartbeat interval, from 64 source addresses,
// until the peer table is full, and keeps them alive with heartbeats
// cycling through them. A real new machine (1 s heartbeats)
// starts during that flood and is listed, online with its disks. Long
// form: 4096 nodes (the default table size), and once the flood ends the
// forged nodes go offline within our policy's timeout (3 x
// peer.MaxPeerInterval), not after 3 hours. Short form: 256 nodes into a
// table of 128 (max_peers). Figures: RSS and state-file growth, time for
// the real machine to be listed, time until the forged nodes are offline.
func TestReliabilityFakeNodes(t *testing.T) {
	testutil.RequiresTool(t, "ip")
	nodes := pick(256, 4096)
	hosts := testutil.Hosts(t, 3)
	var args []string
	if !*reliabilityLong {
		conf := filepath.Join(t.TempDir(), "diskd.conf")
		if err := os.WriteFile(conf, []byte("[network]\nmax_peers = 128\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		args = []string{"--config", conf}
	}
	d := startTarget(t, hosts[0], args...)
	stateFile := filepath.Join(d.StateDir, "state.db")
	size := func() float64 {
		st, err := os.Stat(stateFile)
		if err != nil {
			t.Fatal(err)
		}
		return float64(st.Size()) / (1 << 20)
	}
	rss0, size0 := rssMiB(t, d), size()

	var dgs [][]byte
	encs := make([]*wire.Encoder, nodes)
	digests := make([]wire.Digest, nodes)
	name := func(i int) string { return fmt.Sprintf("fake%04d", i) }
	for i := range nodes {
		encs[i] = wire.NewEncoder(wire.NodeID{0xfa, 0xce, byte(i >> 8), byte(i)}, wire.NewInstance(time.Now()), nil)
		inv := wire.NewInventory(fakeDisks(i, 16))
		digests[i] = inv.Digest()
		dgs = append(dgs, encs[i].Heartbeat(1, wire.Heartbeat{Name: name(i), Digest: digests[i], Interval: time.Hour}))
		dgs = append(dgs, encs[i].Announce(1, name(i), inv)...)
	}
	s := newSender(t, hosts[1], 64)
	start := time.Now()
	s.paced(dgs, 2000)
	fillTook := time.Since(start)

	// The flood goes on: every fake node heartbeats every 2.5 s (5 s in
	// the short form, where twice the table's size cycle through it: a
	// peer is then kept 2.5 s after it was last heard).
	rate := pick(nodes/5, nodes*2/5)
	stop := make(chan struct{})
	flooding := make(chan struct{})
	go func() {
		defer close(flooding)
		for round := 0; ; round++ {
			hb := make([][]byte, nodes)
			for i := range hb {
				hb[i] = encs[i].Heartbeat(1, wire.Heartbeat{Name: name(i), Digest: digests[i], Interval: time.Hour})
			}
			select {
			case <-stop:
				return
			default:
			}
			s.paced(hb, rate)
		}
	}()
	joinAt := time.Now()
	testutil.StartDaemon(t, testutil.DaemonOptions{Prefix: hosts[2].Prefix(),
		Args: []string{"--heartbeat-interval", peerHeartbeat, "--devices", "/dev/fake*", "--blkid", fakeBlkid(t, 2), "--uevents=false"}})
	realListed := func() bool {
		out, _, code := d.Ctl("list", "--host", "dkd-h3", "--json")
		var ds []disk.Disk
		if code != 0 || json.Unmarshal([]byte(out), &ds) != nil {
			return false
		}
		n := 0
		for _, x := range ds {
			if x.Present {
				n++
			}
		}
		return n == 2 && onlineOn(t, d, "dkd-h3")
	}
	joined := false
	deadline := time.Now().Add(30 * time.Second)
	for !joined && time.Now().Before(deadline) {
		joined = realListed()
		if !joined {
			time.Sleep(100 * time.Millisecond)
		}
	}
	joinTook := time.Since(joinAt)
	// Still listed a round of the flood later.
	if joined {
		time.Sleep(pick(3*time.Second, 5*time.Second))
		if !realListed() {
			joined = false
			t.Error("the real machine was listed, then lost during the flood")
		}
	}
	close(stop)
	<-flooding
	floodTook := time.Since(start)
	var c map[string]uint64
	testutil.Eventually(t, 60*time.Second, "every datagram counted", func() bool { c = netCounters(t, d); return accounted(c) })
	time.Sleep(2 * time.Second) // let the state file catch up
	rss1, size1 := rssMiB(t, d), size()
	peers := peersOf(t, d)
	online := 0
	for _, p := range peers {
		if !p.Local && p.Online && strings.HasPrefix(p.Name, "fake") {
			online++
		}
	}
	figure(t, "%d fake nodes x 16 disks, 1 h interval, from 64 sources (table filled in %v, %d datagrams in %v): RSS %.1f → %.1f MiB, state file %.2f → %.2f MiB; %d peers known, %d fake online; peers_evicted %d, intervals_clamped %d",
		nodes, fillTook.Round(time.Millisecond), s.sent.Load(), floodTook.Round(time.Second), rss0, rss1, size0, size1, len(peers), online, c["peers_evicted"], c["intervals_clamped"])
	if joined {
		figure(t, "a real machine started during the flood, with the table full: listed online with its disks %v after it was started, and still a few seconds later", joinTook.Round(time.Millisecond))
	} else {
		figure(t, "a real machine started during the flood: NOT listed within %v (drop_peers_full %d)", joinTook.Round(time.Second), c["drop_peers_full"])
		t.Error("the real machine that joined during the flood is not listed")
	}
	if !*reliabilityLong {
		return
	}
	// Our policy: offline after 3 x MaxPeerInterval of silence, whatever
	// the node advertised (plus the check's period).
	policy := 3 * peer.MaxPeerInterval
	lastSent := time.Now()
	fakeOnline := func() int {
		n := 0
		for _, p := range peersOf(t, d) {
			if p.Online && strings.HasPrefix(p.Name, "fake") {
				n++
			}
		}
		return n
	}
	left := fakeOnline()
	for left > 0 && time.Since(lastSent) < policy+30*time.Second {
		time.Sleep(5 * time.Second)
		left = fakeOnline()
	}
	if left == 0 {
		figure(t, "forged nodes (advertising 1 h) all offline %v after the flood ended (policy: 3 x %v)", time.Since(lastSent).Round(time.Second), peer.MaxPeerInterval)
	} else {
		figure(t, "forged nodes (advertising 1 h): %d still online %v after the flood ended", left, time.Since(lastSent).Round(time.Second))
		t.Errorf("%d forged nodes online beyond our policy's timeout", left)
	}
}
