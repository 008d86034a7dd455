package test

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/diskd/diskd/pkg/peer"
	"github.com/diskd/diskd/pkg/testutil"
)

// Routed multicast (issue 12): two subnets joined by a router namespace
// (testutil.Routed); multicast crosses it only while the kernel's
// multicast routing runs there (testutil's router on the ipmr/ip6mr API)
// and only for datagrams sent with TTL 2 or more.

var (
	group4    = netip.MustParseAddr(peer.DefaultGroup4)
	group6    = netip.MustParseAddr(peer.DefaultGroup6Site)
	routedTTL = []string{"--ttl", "2"}
)

func TestRoutedMulticast(t *testing.T) {
	testutil.RequiresTool(t, "losetup", "mkfs.ext4", "blkid")
	for _, fam := range []struct {
		name string
		args []string
		addr func(*testutil.Host) netip.Addr
	}{
		{"ipv4", []string{"--ipv6=false"}, func(h *testutil.Host) netip.Addr { return h.Addr4 }},
		{"ipv6", []string{"--ipv4=false"}, func(h *testutil.Host) netip.Addr { return h.Addr6 }},
	} {
		t.Run(fam.name, func(t *testing.T) {
			nw := testutil.Routed(t, 2, 1)
			a1, a2, b1 := nw.Subnets[0][0], nw.Subnets[0][1], nw.Subnets[1][0]
			dev := newLoopDev(t)
			img := testutil.LoopImage(t, 32, "mkfs.ext4", "-q", "-L", "ROUTED_A1")
			args := append(slices.Clone(routedTTL), fam.args...)
			startOn(t, a1, []string{dev}, args...)
			da2 := startOn(t, a2, nil, args...)
			db1 := startOn(t, b1, nil, args...)
			losetup(t, dev, img)

			// Routing off: a1's own subnet hears it, the other does not.
			testutil.Eventually(t, peerWait, "ROUTED_A1 listed on a2", func() bool {
				g := find(listJSON(t, da2), "ROUTED_A1")
				return g != nil && g.Present
			})
			time.Sleep(3 * time.Second) // three heartbeats that could have crossed
			if _, ok := peerNamed(t, db1, "dkw-a1"); ok {
				t.Fatal("b1 knows a1 with multicast routing off")
			}

			// Routing on: b1 hears a1's heartbeats, asks, and lists the disk.
			nw.RouteMulticast(t, group4, group6)
			testutil.Eventually(t, peerWait, "ROUTED_A1 listed on b1", func() bool {
				g := find(listJSON(t, db1), "ROUTED_A1")
				return g != nil && g.Present && g.Host == "dkw-a1" && g.Device == dev
			})
			// a1 is known on b1 by its routable address (with ff02:: and
			// link-local sources it would only be a link-local one).
			p, _ := peerNamed(t, db1, "dkw-a1")
			if !slices.Contains(p.Addresses, fam.addr(a1).String()) {
				t.Errorf("a1's addresses on b1: %v, want %v among them", p.Addresses, fam.addr(a1))
			}
			// And the other way: b1 is listed on a1's subnet.
			testutil.Eventually(t, peerWait, "b1 online on a2", func() bool { return onlineOn(t, da2, "dkw-b1") })
		})
	}
}

// TestRoutableAddressesOnLink: on one link (ff02::, link-local sources) a
// peer still learns the other's routable addresses from its heartbeats.
func TestRoutableAddressesOnLink(t *testing.T) {
	nw := testutil.Routed(t, 2)
	a1, a2 := nw.Subnets[0][0], nw.Subnets[0][1]
	startOn(t, a1, nil, "--ipv4=false")
	d2 := startOn(t, a2, nil, "--ipv4=false")
	testutil.Eventually(t, peerWait, "a1's routable address on a2", func() bool {
		p, ok := peerNamed(t, d2, "dkw-a1")
		return ok && slices.Contains(p.Addresses, a1.Addr6.String())
	})
	// Its own addresses include the routable one too.
	var self []string
	for _, n := range peersOf(t, d2) {
		if n.Local {
			self = n.Addresses
		}
	}
	if !slices.Contains(self, a2.Addr6.String()) {
		t.Errorf("a2's own addresses %v lack %v", self, a2.Addr6)
	}
}

// BenchmarkRoutedPropagation: attach on subnet A → listed on subnet B
// through the multicast router, IPv4 and IPv6 (the same figure on one
// link is BenchmarkPeerPropagation, the baseline).
func BenchmarkRoutedPropagation(b *testing.B) {
	testutil.RequiresRoot(b)
	for _, fam := range []struct{ name, off string }{{"ipv4", "--ipv6=false"}, {"ipv6", "--ipv4=false"}} {
		b.Run(fam.name, func(b *testing.B) {
			nw := testutil.Routed(b, 1, 1)
			nw.RouteMulticast(b, group4, group6)
			benchPropagation(b, nw.Subnets[0][0], nw.Subnets[1][0], "--ttl", "2", fam.off)
		})
	}
}
