package testutil

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// TestRoutedMulticast checks the routed network the way the kernel's
// multicast routing promises: unicast crosses the router at once; a
// multicast datagram sent with TTL 2 crosses only while RouteMulticast
// runs, TTL 1 never does, and a link-scope IPv6 group (ff02::) never
// crosses even with a route for it.
func TestRoutedMulticast(t *testing.T) {
	nw := Routed(t, 1, 1)
	a, b := nw.Subnets[0][0], nw.Subnets[1][0]
	for _, dst := range []netip.Addr{b.Addr4, b.Addr6} {
		if !crosses(t, a, b, dst, 64) {
			t.Fatalf("unicast a1 -> b1 %v does not cross the router", dst)
		}
	}
	g4 := netip.MustParseAddr("239.255.68.75")
	g6 := netip.MustParseAddr("ff05::444b")
	g6link := netip.MustParseAddr("ff02::444b")
	tests := []struct {
		name  string
		group netip.Addr
		ttl   int
		route bool
		want  bool
	}{
		{"v4 no routing", g4, 2, false, false},
		{"v6 no routing", g6, 2, false, false},
		{"v4 routed ttl 2", g4, 2, true, true},
		{"v6 routed ttl 2", g6, 2, true, true},
		{"v4 routed ttl 1", g4, 1, true, false},
		{"v6 routed ttl 1", g6, 1, true, false},
		{"v6 link scope routed", g6link, 2, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.route {
				mr := nw.RouteMulticast(t, tt.group)
				defer mr.Stop()
			}
			got := crosses(t, a, b, tt.group, tt.ttl)
			if got != tt.want {
				t.Errorf("datagram to %v with ttl %d crossed = %v, want %v", tt.group, tt.ttl, got, tt.want)
			}
		})
	}
}

// crosses has src send a few datagrams to group (or a unicast address of
// dst) with ttl and reports whether dst heard one within a second.
func crosses(t *testing.T, src, dst *Host, group netip.Addr, ttl int) bool {
	t.Helper()
	fam := "udp4"
	if group.Is6() {
		fam = "udp6"
	}
	var c *net.UDPConn
	if err := dst.Do(func() (err error) {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		if !group.IsMulticast() {
			c, err = net.ListenUDP(fam, &net.UDPAddr{IP: group.AsSlice(), Port: 5455})
			return err
		}
		c, err = net.ListenMulticastUDP(fam, ifi, &net.UDPAddr{IP: group.AsSlice(), Port: 5455})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	err := src.Do(func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		pc, err := net.ListenPacket(fam, ":0")
		if err != nil {
			return err
		}
		defer pc.Close()
		if group.Is4() {
			p := ipv4.NewPacketConn(pc)
			if err := p.SetMulticastTTL(ttl); err != nil {
				return err
			}
			if err := p.SetMulticastInterface(ifi); err != nil {
				return err
			}
		} else {
			p := ipv6.NewPacketConn(pc)
			if err := p.SetMulticastHopLimit(ttl); err != nil {
				return err
			}
			if err := p.SetMulticastInterface(ifi); err != nil {
				return err
			}
		}
		// The first datagram of a (source, group) goes to the routing
		// daemon as an upcall; later ones follow the route it installs.
		for range 5 {
			if _, err := pc.WriteTo([]byte("hello"), &net.UDPAddr{IP: group.AsSlice(), Port: 5455}); err != nil {
				return err
			}
			time.Sleep(50 * time.Millisecond)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 16)
	n, err := c.Read(buf)
	return err == nil && string(buf[:n]) == "hello"
}
