package test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/diskd/diskd/pkg/testutil"
	"github.com/diskd/diskd/pkg/wire"
)

// Multi-host tests: real diskd processes, each in its own network, UTS and
// mount namespace (testutil.Hosts), joined by a bridge; real loop devices
// and uevents. Each daemon reports only its own loop device.

const peerWait = 10 * time.Second

func TestPeerDiskPropagates(t *testing.T) {
	testutil.RequiresTool(t, "losetup", "mkfs.ext4", "blkid")
	hosts := testutil.Hosts(t, 3)
	dev := newLoopDev(t)
	img := testutil.LoopImage(t, 32, "mkfs.ext4", "-q", "-L", "PEER_H1")
	h1 := startOn(t, hosts[0], []string{dev})
	h2 := startOn(t, hosts[1], nil)
	h3 := startOn(t, hosts[2], nil)

	losetup(t, dev, img)
	for _, d := range []*testutil.Daemon{h2, h3} {
		testutil.Eventually(t, peerWait, "PEER_H1 listed on another host", func() bool {
			g := find(listJSON(t, d), "PEER_H1")
			return g != nil && g.Present && g.Host == "dkd-h1" && g.Device == dev
		})
	}
	// peers shows the others online, with addresses of both families.
	p, ok := peerNamed(t, h2, "dkd-h1")
	if !ok || !p.Online || p.Disks != 1 {
		t.Errorf("h2's view of h1: %+v", p)
	}
	if !strings.Contains(strings.Join(p.Addresses, " "), "10.99.0.1") || !strings.Contains(strings.Join(p.Addresses, " "), "fe80::") {
		t.Errorf("h1's addresses on h2: %v", p.Addresses)
	}
	// list --host narrows to one machine.
	if out := h3.MustCtl("list", "--host", "dkd-h1"); !strings.Contains(out, "PEER_H1") {
		t.Errorf("list --host dkd-h1 = %q", out)
	}
	// ping through the real CLI: both other hosts answer within a second.
	var pr struct{ Answered int }
	if err := json.Unmarshal([]byte(h2.MustCtl("ping", "--json")), &pr); err != nil || pr.Answered != 2 {
		t.Errorf("ping on h2: answered %d (%v), want 2", pr.Answered, err)
	}
	if out := h2.MustCtl("announce"); !strings.Contains(out, "announced") {
		t.Errorf("announce = %q", out)
	}

	losetup(t, "-d", dev)
	for _, d := range []*testutil.Daemon{h1, h2, h3} {
		testutil.Eventually(t, peerWait, "PEER_H1 not present", func() bool {
			g := find(listJSON(t, d), "PEER_H1")
			return g != nil && !g.Present
		})
	}
	if out := h3.MustCtl("where", "PEER_H1"); !strings.Contains(out, "dkd-h1") {
		t.Errorf("where on h3 = %q", out)
	}
}

func TestPeerOfflineDetection(t *testing.T) {
	hosts := testutil.Hosts(t, 3)
	h1 := startOn(t, hosts[0], nil)
	h2 := startOn(t, hosts[1], nil)
	// h3 heartbeats slowly: only its goodbye can make it offline quickly.
	h3 := startOn(t, hosts[2], nil, "--heartbeat-interval", "1m")
	for _, name := range []string{"dkd-h2", "dkd-h3"} {
		testutil.Eventually(t, peerWait, name+" online on h1", func() bool { return onlineOn(t, h1, name) })
	}

	if err := sigkill(h2); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	testutil.Eventually(t, peerWait, "h2 offline on h1", func() bool { return !onlineOn(t, h1, "dkd-h2") })
	t.Logf("SIGKILLed peer offline after %v (3 intervals of %s)", time.Since(killed).Round(10*time.Millisecond), peerHeartbeat)
	if time.Since(killed) < 2*time.Second {
		t.Errorf("offline after %v: before 3 intervals of silence", time.Since(killed))
	}
	if !onlineOn(t, h1, "dkd-h3") {
		t.Error("h3 went offline too")
	}

	if err := h3.Stop(); err != nil {
		t.Fatalf("h3 stop: %v", err)
	}
	stopped := time.Now()
	testutil.Eventually(t, peerWait, "h3 offline on h1 after its goodbye", func() bool { return !onlineOn(t, h1, "dkd-h3") })
	t.Logf("cleanly stopped peer offline after %v", time.Since(stopped).Round(10*time.Millisecond))
}

func TestPeerLateJoiner(t *testing.T) {
	testutil.RequiresTool(t, "losetup", "mkfs.ext4", "blkid")
	hosts := testutil.Hosts(t, 4)
	var ds []*testutil.Daemon
	for i, h := range hosts[:3] {
		dev := newLoopDev(t)
		losetup(t, dev, testutil.LoopImage(t, 32, "mkfs.ext4", "-q", "-L", fmt.Sprintf("LATE_H%d", i+1)))
		ds = append(ds, startOn(t, h, []string{dev}))
	}
	late := startOn(t, hosts[3], nil)
	for i := range ds {
		label := fmt.Sprintf("LATE_H%d", i+1)
		testutil.Eventually(t, peerWait, "late joiner lists "+label, func() bool {
			g := find(listJSON(t, late), label)
			return g != nil && g.Present
		})
	}
}

func TestPeerIPv6Only(t *testing.T) {
	testutil.RequiresTool(t, "losetup", "mkfs.ext4", "blkid")
	hosts := testutil.Hosts(t, 2)
	dev := newLoopDev(t)
	losetup(t, dev, testutil.LoopImage(t, 32, "mkfs.ext4", "-q", "-L", "V6ONLY"))
	v6 := startOn(t, hosts[0], []string{dev}, "--ipv4=false")
	dual := startOn(t, hosts[1], nil)
	testutil.Eventually(t, peerWait, "dual-stack host lists the IPv6-only host's disk", func() bool {
		g := find(listJSON(t, dual), "V6ONLY")
		return g != nil && g.Present && g.Host == "dkd-h1"
	})
	testutil.Eventually(t, peerWait, "IPv6-only host lists the dual-stack host", func() bool { return onlineOn(t, v6, "dkd-h2") })
	net := status(t, v6).Network
	if net == nil || len(net.Interfaces) != 1 || net.Interfaces[0] != "eth0 (ipv6)" || net.Counters["sent_datagrams_ipv4"] != 0 {
		t.Errorf("IPv6-only status: %+v", net)
	}
}

func TestPeerWrongKey(t *testing.T) {
	hosts := testutil.Hosts(t, 3)
	good := writeKeyFile(t, "1 0123456789abcdef0123456789abcdef\n")
	bad := writeKeyFile(t, "1 fedcba9876543210fedcba9876543210\n")
	h1 := startOn(t, hosts[0], nil, "--key-file", good)
	h2 := startOn(t, hosts[1], nil, "--key-file", good)
	wrong := startOn(t, hosts[2], nil, "--key-file", bad)
	testutil.Eventually(t, peerWait, "h1 and h2 meet", func() bool { return onlineOn(t, h1, "dkd-h2") && onlineOn(t, h2, "dkd-h1") })
	testutil.Eventually(t, peerWait, "the wrong key's datagrams refused", func() bool {
		return status(t, h1).Network.Counters["drop_bad_tag"] > 0 && status(t, wrong).Network.Counters["drop_bad_tag"] > 0
	})
	for _, c := range []struct {
		d    *testutil.Daemon
		name string
	}{{h1, "dkd-h3"}, {h2, "dkd-h3"}, {wrong, "dkd-h1"}, {wrong, "dkd-h2"}} {
		if _, ok := peerNamed(t, c.d, c.name); ok {
			t.Errorf("a daemon accepted %s across keys", c.name)
		}
	}
	if s := status(t, h1).Network; s == nil || !s.Authenticated {
		t.Errorf("status does not say authenticated: %+v", s)
	}
	if out := startOn(t, testutil.Hosts(t, 1)[0], nil).MustCtl("status"); !strings.Contains(strings.ToLower(out), "unauthenticated") {
		t.Errorf("status without a key does not say the network is unauthenticated:\n%s", out)
	}
}

func TestPeerLargeInventory(t *testing.T) {
	hosts := testutil.Hosts(t, 3)
	tap := newWireTap(t, hosts[2])
	big := startOn(t, hosts[0], []string{"/dev/fake*"}, "--blkid", fakeBlkid(t, 1000), "--uevents=false")
	other := startOn(t, hosts[1], nil)
	testutil.Eventually(t, peerWait, "1000 disks listed on the other host", func() bool { return presentOn(t, other, "dkd-h1") == 1000 })
	got := disksOn(t, other, "dkd-h1")
	labels := map[string]bool{}
	for _, d := range got {
		labels[d.Label] = true
	}
	for i := range 1000 {
		if !labels[fmt.Sprintf("BIG_%04d", i)] {
			t.Fatalf("BIG_%04d missing", i)
		}
	}
	largest, chunks := 0, 0
	for _, b := range tap.Datagrams() {
		largest = max(largest, len(b))
		if p, err := wire.NewDecoder(nil).Decode(b); err == nil && p.Type == wire.TypeAnnounce && p.Announce.Name == "dkd-h1" {
			chunks = max(chunks, p.Announce.Chunks)
		}
	}
	t.Logf("1000 devices: %d datagrams per announce, largest datagram on the wire %d bytes", chunks, largest)
	if largest > wire.MaxDatagram {
		t.Errorf("datagram of %d bytes on the wire", largest)
	}
	if chunks < 2 {
		t.Errorf("announce in %d datagrams", chunks)
	}
	_ = big
}

// TestPeerBootStorm: 20 daemons started at the same moment all list each
// other, and the datagrams they send grow linearly with their number.
func TestPeerBootStorm(t *testing.T) {
	if testing.Short() {
		t.Skip("20 daemons")
	}
	const n = 20
	hosts := testutil.Hosts(t, n)
	ds := make([]*testutil.Daemon, n)
	done := make(chan struct{})
	start := time.Now()
	for i, h := range hosts {
		go func() {
			defer func() { done <- struct{}{} }()
			ds[i] = testutil.StartDaemon(t, testutil.DaemonOptions{Prefix: h.Prefix(), NoWait: true,
				Args: []string{"--devices", "/dev/nothing-for-this-test"}})
		}()
	}
	for range hosts {
		<-done
	}
	for _, d := range ds {
		d.WaitReady()
	}
	testutil.Eventually(t, 20*time.Second, "every daemon lists every other", func() bool {
		for _, d := range ds {
			online := 0
			for _, p := range peersOf(t, d) {
				if !p.Local && p.Online {
					online++
				}
			}
			if online != n-1 {
				return false
			}
		}
		return true
	})
	took := time.Since(start)
	var sent uint64
	for _, d := range ds {
		sent += status(t, d).Network.Counters["sent_datagrams"]
	}
	perHost := float64(sent) / n
	t.Logf("%d daemons: all know each other %v after the first was started; %d datagrams sent, %.1f per daemon", n, took.Round(time.Millisecond), sent, perHost)
	// One datagram per daemon and peer (quadratic) would be >= 2*(n-1) per
	// daemon counting both families.
	if perHost >= 2*(n-1) {
		t.Errorf("%.1f datagrams per daemon for %d daemons: grows with the network", perHost, n)
	}
}
