package peer_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/diskd/diskd/pkg/disk"
	"github.com/diskd/diskd/pkg/peer"
	"github.com/diskd/diskd/pkg/store"
	"github.com/diskd/diskd/pkg/testutil"
	"github.com/diskd/diskd/pkg/wire"
)

// These tests run real Services with real stores inside network
// namespaces joined by a bridge (testutil.Hosts): real sockets, real
// multicast. Waits are generous; speed is measured by the benchmarks.
const wait = 5 * time.Second

func TestPropagation(t *testing.T) {
	hosts := testutil.Hosts(t, 3)
	var nodes []*node
	for _, h := range hosts {
		nodes = append(nodes, startNode(t, h, nil))
	}
	a := nodes[0]
	a.st.SetLocal(loopDisks("h1", 2))
	for _, n := range nodes[1:] {
		testutil.Eventually(t, wait, n.h.Hostname+" lists h1's disks", func() bool {
			return len(n.disksOf(a.id())) == 2
		})
		p, _ := n.peer(a.id())
		if p.Name != "dkd-h1" || !p.Online || !slices.Contains(p.Addresses, "10.99.0.1") {
			t.Errorf("%s: peer h1 = %+v", n.h.Hostname, p)
		}
	}
	a.st.SetLocal(loopDisks("h1", 1))
	for _, n := range nodes[1:] {
		testutil.Eventually(t, wait, n.h.Hostname+" drops h1's second disk", func() bool {
			return len(n.disksOf(a.id())) == 1
		})
		if w := n.st.Where("h1_1"); len(w) != 1 || w[0].Present || w[0].Host != "dkd-h1" {
			t.Errorf("%s: where h1_1 = %+v", n.h.Hostname, w)
		}
	}
	// Our own address list is what peers see.
	if la := a.st.LocalNode().Addresses; !slices.Contains(la, "10.99.0.1") || !strings.HasPrefix(la[len(la)-1], "fe80::") {
		t.Errorf("local addresses %v", la)
	}
}

func TestLateJoinerLearnsEveryone(t *testing.T) {
	hosts := testutil.Hosts(t, 4)
	var nodes []*node
	for i, h := range hosts[:3] {
		n := startNode(t, h, nil)
		n.st.SetLocal(loopDisks(fmt.Sprintf("h%d", i+1), 3))
		nodes = append(nodes, n)
	}
	late := startNode(t, hosts[3], nil)
	late.st.SetLocal(loopDisks("h4", 2))
	for _, n := range nodes {
		testutil.Eventually(t, wait, "late joiner lists "+n.h.Hostname, func() bool {
			return len(late.disksOf(n.id())) == 3
		})
		testutil.Eventually(t, wait, n.h.Hostname+" lists the late joiner", func() bool {
			return len(n.disksOf(late.id())) == 2
		})
	}
}

func TestOffline(t *testing.T) {
	hosts := testutil.Hosts(t, 3)
	a := startNode(t, hosts[0], nil)
	b := startNode(t, hosts[1], nil)
	b.st.SetLocal(loopDisks("h2", 2))
	testutil.Eventually(t, wait, "h1 lists h2", func() bool { return len(a.disksOf(b.id())) == 2 })

	// Silence (the link cut, as good as a SIGKILL to the others): offline
	// after 3 intervals, disks kept as history.
	if err := hosts[1].SetLink(false); err != nil {
		t.Fatal(err)
	}
	cut := time.Now()
	testutil.Eventually(t, wait, "h2 offline on h1", func() bool { return !a.online(b.id()) })
	if since := time.Since(cut); since < 2*time.Second {
		t.Errorf("h2 offline after %v of silence; the rule is 3 intervals of 1 s", since)
	}
	if ds := a.st.Disks(func(d *disk.Disk) bool { return d.Node == b.id() }); len(ds) != 2 || ds[0].Present {
		t.Errorf("h2's disks on h1 after it went offline: %+v", ds)
	}
	// Back: online, and its disks present again (fetched anew).
	if err := hosts[1].SetLink(true); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, wait, "h2 back with its disks", func() bool {
		return a.online(b.id()) && len(a.disksOf(b.id())) == 2
	})

	// A clean stop says goodbye: offline at once, long before 3 intervals
	// of a slow heartbeat.
	c := startNode(t, hosts[2], func(c *peer.Config) { c.HeartbeatInterval = time.Minute })
	testutil.Eventually(t, wait, "h1 hears h3", func() bool { return a.online(c.id()) })
	c.stop()
	testutil.Eventually(t, wait, "h3 offline on h1 after goodbye", func() bool { return !a.online(c.id()) })
	if counter(a, "goodbyes_received") == 0 {
		t.Error("no goodbye counted")
	}
}

func TestAddressFamilies(t *testing.T) {
	hosts := testutil.Hosts(t, 3)
	dual := startNode(t, hosts[0], nil)
	v6 := startNode(t, hosts[1], func(c *peer.Config) { c.IPv4 = false })
	v4 := startNode(t, hosts[2], func(c *peer.Config) { c.IPv6 = false })
	for i, n := range []*node{dual, v6, v4} {
		n.st.SetLocal(loopDisks(fmt.Sprintf("h%d", i+1), 1))
	}
	for _, pair := range [][2]*node{{dual, v6}, {v6, dual}, {dual, v4}, {v4, dual}} {
		testutil.Eventually(t, wait, pair[0].h.Hostname+" lists "+pair[1].h.Hostname, func() bool {
			return len(pair[0].disksOf(pair[1].id())) == 1
		})
	}
	if got := v6.svc.Status().Interfaces; len(got) != 1 || got[0] != "eth0 (ipv6)" {
		t.Errorf("IPv6-only interfaces %v", got)
	}
	if p, _ := dual.peer(v6.id()); len(p.Addresses) != 1 || !strings.HasPrefix(p.Addresses[0], "fe80::") || !strings.HasSuffix(p.Addresses[0], "%eth0") {
		t.Errorf("IPv6-only peer's addresses %v", p.Addresses)
	}
	// The two single-family hosts share no family: they never meet.
	time.Sleep(500 * time.Millisecond)
	if _, ok := v6.peer(v4.id()); ok {
		t.Error("IPv6-only host heard the IPv4-only host")
	}
}

func TestAuthentication(t *testing.T) {
	const keyA = "1 aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n"
	const keyB = "1 bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\n" // same ID, other secret
	const keyC = "2 cccccccccccccccccccccccccccccccc\n"
	hosts := testutil.Hosts(t, 5)
	withKey := func(text string) func(*peer.Config) {
		return func(c *peer.Config) { c.KeyFile = writeKeys(t, text) }
	}
	a := startNode(t, hosts[0], withKey(keyA))
	b := startNode(t, hosts[1], withKey(keyA))
	wrong := startNode(t, hosts[2], withKey(keyB))
	none := startNode(t, hosts[3], nil)
	rotating := startNode(t, hosts[4], withKey(keyC+keyA)) // sends with C, accepts C and A
	all := []*node{a, b, wrong, none, rotating}
	for i, n := range all {
		n.st.SetLocal(loopDisks(fmt.Sprintf("h%d", i+1), 1))
	}
	testutil.Eventually(t, wait, "h1 and h2 list each other", func() bool {
		return len(a.disksOf(b.id())) == 1 && len(b.disksOf(a.id())) == 1
	})
	testutil.Eventually(t, wait, "the rotating host lists h1 and h2", func() bool {
		return len(rotating.disksOf(a.id())) == 1 && len(rotating.disksOf(b.id())) == 1
	})
	// Give every datagram time to arrive and be refused, then check.
	testutil.Eventually(t, wait, "refusals counted", func() bool {
		return counter(a, "drop_bad_tag") > 0 && counter(a, "drop_untagged") > 0 &&
			counter(a, "drop_unknown_key") > 0 && counter(none, "drop_unexpected_tag") > 0 &&
			counter(wrong, "drop_bad_tag") > 0
	})
	for _, n := range all {
		for _, m := range all {
			if n == m {
				continue
			}
			accepted := n == a && m == b || n == b && m == a || n == rotating && (m == a || m == b)
			if _, ok := n.peer(m.id()); ok != accepted {
				t.Errorf("%s knows %s: %v, want %v", n.h.Hostname, m.h.Hostname, ok, accepted)
			}
		}
	}
	if !a.svc.Status().Authenticated || none.svc.Status().Authenticated {
		t.Error("Status.Authenticated wrong")
	}
}

func TestLargeInventory(t *testing.T) {
	hosts := testutil.Hosts(t, 3)
	capture := newTap(t, hosts[2])
	a := startNode(t, hosts[0], nil)
	b := startNode(t, hosts[1], nil)
	disks := loopDisks("h1", 1000)
	for i := range disks {
		if i%4 == 0 {
			disks[i].Mounts = []string{fmt.Sprintf("/srv/data/volume-%04d", i)}
		}
	}
	a.st.SetLocal(disks)
	testutil.Eventually(t, wait, "h2 lists 1000 disks", func() bool { return len(b.disksOf(a.id())) == 1000 })
	got := b.disksOf(a.id())
	byName := map[string]disk.Disk{}
	for _, d := range got {
		byName[d.Name] = d
	}
	for _, w := range disks {
		d := byName[w.Name]
		w.Node, w.Host = a.id(), "dkd-h1"
		if !disk.SameDevice(&d, &w) {
			t.Fatalf("disk %s arrived as %+v, sent %+v", w.Name, d, w)
		}
	}
	largest, announce := 0, 0
	for _, dg := range capture.Datagrams() {
		largest = max(largest, len(dg))
		if p, err := wire.NewDecoder(nil).Decode(dg); err == nil && p.Type == wire.TypeAnnounce && p.Generation == 1 && p.Node == mustWireID(t, a.id()) && p.Announce.Chunk == 0 {
			announce = p.Announce.Chunks
		}
	}
	t.Logf("largest datagram on the wire %d bytes; 1000 disks in %d datagrams", largest, announce)
	if largest > wire.MaxDatagram || largest == 0 {
		t.Errorf("largest datagram %d bytes", largest)
	}
	if announce < 2 {
		t.Errorf("announce of 1000 disks in %d datagrams", announce)
	}
}

func mustWireID(t *testing.T, id disk.NodeID) wire.NodeID {
	w, err := wire.ParseNodeID(id)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func TestSeveralDaemonsOnOneHost(t *testing.T) {
	hosts := testutil.Hosts(t, 2)
	a1 := startNode(t, hosts[0], nil)
	a2 := startNode(t, hosts[0], nil)
	b := startNode(t, hosts[1], nil)
	all := []*node{a1, a2, b}
	for i, n := range all {
		n.st.SetLocal(loopDisks(fmt.Sprintf("d%d", i), 1))
	}
	for _, n := range all {
		for _, m := range all {
			if n != m {
				testutil.Eventually(t, wait, fmt.Sprintf("%s/%s lists %s", n.h.Hostname, n.id()[:6], m.id()[:6]), func() bool {
					return len(n.disksOf(m.id())) == 1
				})
			}
		}
	}
	if counter(a1, "drop_own") == 0 {
		t.Error("own looped-back datagrams not counted")
	}
	if counter(a1, "drop_node_conflict") != 0 {
		t.Error("node conflict without a shared node ID")
	}
}

func TestHostileInput(t *testing.T) {
	hosts := testutil.Hosts(t, 3)
	a := startNode(t, hosts[0], nil)
	evil := newTap(t, hosts[1])
	good := startNode(t, hosts[2], nil)

	valid := wire.NewEncoder(wire.NodeID{0xee}, wire.NewInstance(time.Now()), nil).
		Heartbeat(1, wire.Heartbeat{Name: "evil", Interval: time.Second})
	big := append(append([]byte{}, valid[:wire.HeaderSize]...), make([]byte, 1500)...)
	legacy := []byte("diskd:---\n- - 1111aaaa-0000-4000-8000-00000000000a\n  - root-a\n  - /dev/sda1\n")
	tests := []struct {
		name    string
		dst     netip.Addr
		dgs     [][]byte
		counter string
	}{
		{"garbage", netip.Addr{}, [][]byte{{0}, []byte("hello"), make([]byte, 100)}, "drop_too_short"},
		{"legacy protocol", netip.Addr{}, [][]byte{legacy}, "drop_bad_magic"},
		{"oversized", netip.Addr{}, [][]byte{big}, "drop_too_large"},
		{"bad body", netip.Addr{}, [][]byte{append(valid[:wire.HeaderSize:wire.HeaderSize], 0xa1, 0x01, 0x01)}, "drop_bad_body"},
		{"unicast to the port", hosts[0].Addr4, [][]byte{valid}, "drop_not_group"},
	}
	for _, tt := range tests {
		before := counter(a, tt.counter)
		evil.Send(tt.dst, tt.dgs...)
		testutil.Eventually(t, wait, tt.name+" counted as "+tt.counter, func() bool { return counter(a, tt.counter) > before })
	}
	// A flood from one source is cut at its rate; the real peer still gets through.
	flood := make([][]byte, 3000)
	enc := wire.NewEncoder(wire.NodeID{0xef}, wire.NewInstance(time.Now()), nil)
	for i := range flood {
		flood[i] = enc.Heartbeat(1, wire.Heartbeat{Name: "flood", Interval: time.Second})
	}
	evil.Send(netip.Addr{}, flood...)
	testutil.Eventually(t, wait, "flood rate-limited", func() bool { return counter(a, "drop_rate_limited") > 0 })
	good.st.SetLocal(loopDisks("good", 1))
	testutil.Eventually(t, wait, "the good peer still propagates", func() bool { return len(a.disksOf(good.id())) == 1 })
	// Replays of the good peer's datagrams change nothing.
	captured := newTap(t, hosts[1])
	good.svc.Announce()
	testutil.Eventually(t, wait, "an announce captured", func() bool { return len(captured.Datagrams()) > 0 })
	before := counter(a, "drop_duplicate") + counter(a, "drop_too_old")
	captured.Send(netip.Addr{}, captured.Datagrams()...)
	testutil.Eventually(t, wait, "replays dropped", func() bool {
		return counter(a, "drop_duplicate")+counter(a, "drop_too_old") > before
	})
	if s := a.svc.Status().Counters; s["generations_applied"] == 0 {
		t.Errorf("counters %v", s)
	}
}

func TestReplayOfAnEarlierRun(t *testing.T) {
	hosts := testutil.Hosts(t, 3)
	keys := "1 0123456789abcdef0123456789abcdef\n"
	withKey := func(c *peer.Config) { c.KeyFile = writeKeys(t, keys) }
	a := startNode(t, hosts[0], withKey)
	capture := newTap(t, hosts[2])
	first := startNode(t, hosts[1], withKey)
	id := first.id()
	first.st.SetLocal(loopDisks("old", 2))
	testutil.Eventually(t, wait, "h1 lists the first run", func() bool { return len(a.disksOf(id)) == 2 })
	old := capture.Datagrams()
	first.stop()
	// The same node restarts (a new instance) with other disks.
	cfg := testConfig(hosts[1])
	withKey(&cfg)
	restarted := startNodeWithStore(t, hosts[1], cfg, id)
	restarted.st.SetLocal(loopDisks("new", 1))
	testutil.Eventually(t, wait, "h1 lists the second run", func() bool {
		ds := a.disksOf(id)
		return len(ds) == 1 && ds[0].Label == "new_0"
	})
	before := counter(a, "drop_stale_instance")
	capture.Send(netip.Addr{}, old...)
	testutil.Eventually(t, wait, "old run's datagrams dropped", func() bool { return counter(a, "drop_stale_instance") > before })
	if ds := a.disksOf(id); len(ds) != 1 || ds[0].Label != "new_0" {
		t.Errorf("replay changed the inventory: %+v", ds)
	}
}

func TestPingAnnounceStatus(t *testing.T) {
	hosts := testutil.Hosts(t, 3)
	a := startNode(t, hosts[0], nil)
	b := startNode(t, hosts[1], nil)
	c := startNode(t, hosts[2], nil)
	testutil.Eventually(t, wait, "everyone met", func() bool { return a.online(b.id()) && a.online(c.id()) })
	n, err := a.svc.Ping(context.Background())
	if err != nil || n != 2 {
		t.Errorf("ping: %d answered, %v; want 2", n, err)
	}
	before := counter(a, "announces_sent")
	a.svc.Announce()
	testutil.Eventually(t, wait, "announce sent", func() bool { return counter(a, "announces_sent") > before })
	st := a.svc.Status()
	want := []string{"239.255.68.75:32004", "[ff02::444b]:32004", "[ff05::444b]:32004"}
	if !slices.Equal(st.Groups, want) || st.Authenticated || len(st.Interfaces) != 1 {
		t.Errorf("status %+v", st)
	}
	for _, r := range wire.Reasons() {
		if _, ok := st.Counters["drop_"+r.String()]; !ok {
			t.Errorf("no counter for drop reason %v", r)
		}
	}
	if st.Counters["sent_datagrams"] == 0 || st.Counters["received_bytes"] == 0 {
		t.Errorf("traffic counters %v", st.Counters)
	}
	// After Run returns, requests fail cleanly.
	a.stop()
	if _, err := a.svc.Ping(context.Background()); err != peer.ErrNotRunning {
		t.Errorf("ping after stop: %v", err)
	}
}

func TestInterfaceAppearsLater(t *testing.T) {
	hosts := testutil.Hosts(t, 2)
	a := startNode(t, hosts[0], nil)
	if err := hosts[1].Command("ip", "link", "set", "eth0", "down").Run(); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(hosts[1])
	b := startNodeWithStore(t, hosts[1], cfg, newNodeID())
	b.st.SetLocal(loopDisks("late", 1))
	if got := b.svc.Status().Interfaces; len(got) != 0 {
		t.Fatalf("interfaces with eth0 down: %v", got)
	}
	if err := hosts[1].Command("ip", "link", "set", "eth0", "up").Run(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, wait, "h1 lists h2 once its link is up", func() bool { return len(a.disksOf(b.id())) == 1 })
	testutil.Eventually(t, wait, "h2 joined both families", func() bool {
		got := b.svc.Status().Interfaces
		return len(got) == 1 && got[0] == "eth0 (ipv4 ipv6)"
	})
}

// bootStorm starts a service on each host at the same moment (the end of
// a power cut), waits until every host lists every other host's disk, and
// returns how long that took and the datagrams all sent in the first 2 s.
func bootStorm(t *testing.T, hosts []*testutil.Host) (time.Duration, uint64) {
	t.Helper()
	var nodes []*node
	for _, h := range hosts {
		cfg := testConfig(h)
		cfg.HeartbeatInterval = peer.DefaultInterval // only the boot traffic counts
		st := store.New(store.Options{Local: disk.Node{ID: newNodeID(), Name: h.Hostname}})
		st.SetLocal(loopDisks(h.Hostname, 1))
		svc, err := peer.New(cfg, st, logger(t, h.Hostname))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		n := &node{t: t, h: h, st: st, svc: svc, cancel: cancel, done: make(chan error, 1)}
		n.ctx = ctx
		t.Cleanup(n.stop)
		nodes = append(nodes, n)
	}
	start := time.Now()
	for _, n := range nodes {
		go func() { n.done <- n.svc.Run(n.ctx) }()
	}
	testutil.Eventually(t, 10*time.Second, "every host lists every other", func() bool {
		for _, n := range nodes {
			if len(n.st.Disks(func(d *disk.Disk) bool { return d.Present })) != len(nodes) {
				return false
			}
		}
		return true
	})
	took := time.Since(start)
	time.Sleep(time.Until(start.Add(2 * time.Second)))
	var sent uint64
	for _, n := range nodes {
		sent += counter(n, "sent_datagrams")
	}
	return took, sent
}

func TestBootStormScalesLinearly(t *testing.T) {
	if testing.Short() {
		t.Skip("30 hosts")
	}
	var took [2]time.Duration
	var sent [2]uint64
	for i, n := range []int{10, 20} {
		t.Run(fmt.Sprint(n), func(t *testing.T) { took[i], sent[i] = bootStorm(t, testutil.Hosts(t, n)) })
	}
	took10, sent10, took20, sent20 := took[0], sent[0], took[1], sent[1]
	t.Logf("10 hosts: all listed in %v, %d datagrams in 2 s; 20 hosts: %v, %d datagrams", took10, sent10, took20, sent20)
	// Linear growth doubles the datagrams; quadratic would quadruple them.
	if ratio := float64(sent20) / float64(sent10); ratio > 3 {
		t.Errorf("datagrams grew %.1fx from 10 to 20 hosts", ratio)
	}
}

// TestOtherGroupsOnThePort: another program on the host joins another
// group on our port; with IP_MULTICAST_ALL off the kernel does not hand
// that group's datagrams to our socket.
func TestOtherGroupsOnThePort(t *testing.T) {
	hosts := testutil.Hosts(t, 2)
	a := startNode(t, hosts[0], nil)
	other := netip.MustParseAddr("239.1.2.3")
	var c *net.UDPConn
	err := hosts[0].Do(func() (err error) {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		c, err = net.ListenMulticastUDP("udp4", ifi, &net.UDPAddr{IP: other.AsSlice(), Port: peer.DefaultPort})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	before := counter(a, "drop_not_group")
	dg := wire.NewEncoder(wire.NodeID{0xab}, wire.NewInstance(time.Now()), nil).
		Heartbeat(1, wire.Heartbeat{Name: "elsewhere", Interval: time.Second})
	newTap(t, hosts[1]).Send(other, dg)
	c.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 2048)
	if _, err := c.Read(buf); err != nil {
		t.Fatalf("the other group's member got nothing: %v", err)
	}
	time.Sleep(200 * time.Millisecond) // our socket would have had it by now
	if got := counter(a, "drop_not_group"); got != before {
		t.Errorf("our socket received the other group's datagram (drop_not_group %d -> %d)", before, got)
	}
	if _, ok := a.peer(wire.NodeID{0xab}.Domain()); ok {
		t.Error("a datagram to another group was accepted")
	}
}
