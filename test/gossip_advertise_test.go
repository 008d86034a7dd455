package test

import (
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/diskd/diskd/pkg/testutil"
)

// TestGossipAdvertise: a1 is multi-homed (eth0 on subnet A, eth1 on
// subnet B) and b1, on B, cannot reach subnet A at all (a blackhole
// route), so only a1's B address works for it. Multicast stays on a1's
// eth0, so b1 hears a1 by gossip alone.
//   - a1 advertising its B address: b1 lists a1 by gossip at that address,
//     which takes b1 fetching a1's inventory over TCP from it;
//   - a1 advertising its A address: b1 learns that address when a1 joins
//     it, its probes to it fail, and it counts a1 failed.
func TestGossipAdvertise(t *testing.T) {
	nw := testutil.Routed(t, 1, 1)
	a1, b1 := nw.Subnets[0][0], nw.Subnets[1][0]
	onB, err := nw.AddInterface(a1, 1, 50, "eth1")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("ip", "-n", strings.TrimPrefix(b1.NetNS, "/run/netns/"), "route", "add", "blackhole", "10.91.0.0/24").CombinedOutput(); err != nil {
		t.Fatalf("blackhole route on b1: %v: %s", err, out)
	}
	key := writeKeyFile(t, gossipKey)

	t.Run("reached at the advertised address", func(t *testing.T) {
		db1 := startOn(t, b1, nil, gossipArgs(key, onB.String())...)
		da1 := startOn(t, a1, nil, gossipArgs(key, b1.Addr4.String(), "--advertise", onB.String(), "--interface", "eth0")...)
		testutil.Eventually(t, gossipWait, "a1 on b1 by gossip at "+onB.String(), func() bool {
			p, ok := peerNamed(t, db1, "dkw-a1")
			return ok && p.Online && p.Reach == "gossip" && slices.Equal(p.Addresses, []string{onB.String()})
		})
		if g := gossipStatus(t, da1); g.Advertise != onB.String()+":32005" {
			t.Errorf("a1's status says it advertises %q, want %s:32005", g.Advertise, onB)
		}
		da1.Stop()
		db1.Stop()
	})
	t.Run("an address the peer cannot reach", func(t *testing.T) {
		db1 := startOn(t, b1, nil, gossipArgs(key, onB.String())...)
		startOn(t, a1, nil, gossipArgs(key, b1.Addr4.String(), "--advertise", a1.Addr4.String(), "--interface", "eth0")...)
		testutil.Eventually(t, gossipWait, "b1 to count a1 failed", func() bool {
			return gossipStatus(t, db1).Counters["members_failed"] >= 1
		})
	})
}

// TestGossipAdvertiseBehindNAT: a1 sits on subnet A behind a router that
// translates addresses (nftables: the router's B address, port 32005 TCP
// and UDP, forwards to a1; what a1 sends to B leaves with the router's
// address), and b1 cannot reach subnet A at all. a1 advertises the
// router's address, as a host behind a NAT with a port forward does, and
// b1 lists it by gossip there: its probes and its inventory fetch (TCP)
// both went through the translation.
func TestGossipAdvertiseBehindNAT(t *testing.T) {
	testutil.RequiresTool(t, "nft")
	nw := testutil.Routed(t, 1, 1)
	a1, b1 := nw.Subnets[0][0], nw.Subnets[1][0]
	ns := func(h *testutil.Host) string { return strings.TrimPrefix(h.NetNS, "/run/netns/") }
	if out, err := exec.Command("ip", "-n", ns(b1), "route", "add", "blackhole", "10.91.0.0/24").CombinedOutput(); err != nil {
		t.Fatalf("blackhole route on b1: %v: %s", err, out)
	}
	const public = "10.92.0.254" // the router on subnet B
	rules := fmt.Sprintf(`table ip nat {
	chain pre {
		type nat hook prerouting priority dstnat;
		iifname "eth-b" ip daddr %[1]s tcp dport 32005 dnat to %[2]s
		iifname "eth-b" ip daddr %[1]s udp dport 32005 dnat to %[2]s
	}
	chain post {
		type nat hook postrouting priority srcnat;
		oifname "eth-b" ip saddr 10.91.0.0/24 masquerade
	}
}
`, public, a1.Addr4)
	cmd := exec.Command("ip", "netns", "exec", ns(nw.Router), "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft on the router: %v: %s", err, out)
	}
	key := writeKeyFile(t, gossipKey)
	db1 := startOn(t, b1, nil, gossipArgs(key, public)...)
	da1 := startOn(t, a1, nil, gossipArgs(key, b1.Addr4.String(), "--advertise", public)...)
	testutil.Eventually(t, gossipWait, "a1 on b1 by gossip at "+public, func() bool {
		p, ok := peerNamed(t, db1, "dkw-a1")
		return ok && p.Online && p.Reach == "gossip" && slices.Equal(p.Addresses, []string{public})
	})
	testutil.Eventually(t, gossipWait, "b1 on a1 by gossip", func() bool {
		p, ok := peerNamed(t, da1, "dkw-b1")
		return ok && p.Online && p.Reach == "gossip"
	})
	if n := gossipStatus(t, db1).Counters["members_failed"]; n != 0 {
		t.Errorf("b1 counted %d members failed; the translated address should answer its probes", n)
	}
}
