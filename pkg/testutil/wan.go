package testutil

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"testing"
)

// Network is several subnets of hosts joined by one router, for tests of
// the peer network beyond one link. Subnet s (0-based) is 10.(91+s).0.0/24
// and fd00:(91+s)::/64; host N on it has .N and ::N, the router .254 and
// ::fe on every subnet. The router forwards unicast (IPv4 and IPv6) at
// once; multicast only once RouteMulticast is called, like a real router
// without a multicast routing daemon.
type Network struct {
	Subnets [][]*Host // the hosts of each subnet
	Router  *Host     // the router; its interfaces are eth-a, eth-b, ...
	ifaces  []string
}

// Routed builds a routed network with counts[s] hosts on subnet s (at
// most 26 subnets of at most 250 hosts). Hostnames are "dkw-a1", "dkw-a2",
// ... "dkw-b1", ... Everything is removed at cleanup, also on failure.
func Routed(t testing.TB, counts ...int) *Network {
	t.Helper()
	RequiresRoot(t)
	RequiresTool(t, "ip", "nsenter", "unshare", "mount", "umount")
	if len(counts) < 1 || len(counts) > 26 {
		t.Fatalf("Routed: %d subnets, want 1..26", len(counts))
	}
	base, dir := newHostSet(t)
	nw := &Network{Subnets: make([][]*Host, len(counts))}
	var all []*Host
	index := 0
	for s, n := range counts {
		if n < 0 || n > 250 {
			t.Fatalf("Routed: %d hosts on subnet %d, want 0..250", n, s)
		}
		letter := string(rune('a' + s))
		sw := fmt.Sprintf("%s-sw%s", base, letter)
		if err := newSwitch(sw); err != nil {
			t.Fatal(err)
		}
		for i := range n {
			index++
			tag := fmt.Sprintf("%s%d", letter, i+1)
			h := &Host{
				Index: index, Hostname: "dkw-" + tag,
				Addr4: netip.AddrFrom4([4]byte{10, byte(91 + s), 0, byte(i + 1)}),
				Addr6: ula(s, uint16(i+1)),
				NetNS: "/run/netns/" + base + "-" + tag,
				UTS:   filepath.Join(dir, "h"+tag+".uts"),
				Mnt:   filepath.Join(dir, "h"+tag+".mnt"),
				swNS:  sw, port: fmt.Sprintf("p%d", i+1),
				gw4: netip.AddrFrom4([4]byte{10, byte(91 + s), 0, 254}),
				gw6: ula(s, 0xfe),
			}
			nw.Subnets[s] = append(nw.Subnets[s], h)
			all = append(all, h)
		}
	}
	r, ifaces, err := buildRouter(base, len(counts))
	if err != nil {
		t.Fatal(err)
	}
	nw.Router, nw.ifaces = r, ifaces
	if err := buildHosts(all); err != nil {
		t.Fatal(err)
	}
	return nw
}

// ula is host n's address on subnet s: fd00:(91+s)::n.
func ula(s int, n uint16) netip.Addr {
	var b [16]byte
	b[0], b[1], b[2], b[3] = 0xfd, 0x00, 0x00, byte(0x91+s)
	b[14], b[15] = byte(n>>8), byte(n)
	return netip.AddrFrom16(b)
}

// buildRouter makes the router namespace with one interface per subnet,
// forwarding on, reverse-path filtering off (multicast from the other
// subnet must not be dropped as martian).
func buildRouter(base string, subnets int) (*Host, []string, error) {
	name := base + "-r"
	r := &Host{Hostname: "dkw-r", NetNS: "/run/netns/" + name}
	steps := [][]string{
		{"ip", "netns", "add", name},
		{"ip", "-n", name, "link", "set", "lo", "up"},
	}
	var ifaces []string
	for s := range subnets {
		letter := string(rune('a' + s))
		ifn, sw := "eth-"+letter, fmt.Sprintf("%s-sw%s", base, letter)
		ifaces = append(ifaces, ifn)
		steps = append(steps,
			[]string{"ip", "link", "add", ifn, "netns", name, "type", "veth", "peer", "name", "pr", "netns", sw},
			[]string{"ip", "-n", sw, "link", "set", "pr", "master", "br0", "up"},
			// No duplicate address detection: usable at once, like the hosts.
			[]string{"ip", "netns", "exec", name, "sysctl", "-qw", "net.ipv6.conf." + ifn + ".accept_dad=0"},
			[]string{"ip", "-n", name, "link", "set", ifn, "address", fmt.Sprintf("02:%02x:00:00:00:fe", 0x91+s), "up"},
			[]string{"ip", "-n", name, "addr", "add", fmt.Sprintf("10.%d.0.254/24", 91+s), "dev", ifn},
			[]string{"ip", "-n", name, "-6", "addr", "add", ula(s, 0xfe).String() + "/64", "dev", ifn, "nodad"},
		)
	}
	steps = append(steps,
		[]string{"ip", "netns", "exec", name, "sysctl", "-qw", "net.ipv4.ip_forward=1",
			"net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0", "net.ipv6.conf.all.forwarding=1"},
	)
	for _, s := range steps {
		if err := run(s[0], s[1:]...); err != nil {
			return nil, nil, fmt.Errorf("router: %w", err)
		}
	}
	for _, ifn := range ifaces {
		if err := run("ip", "netns", "exec", name, "sysctl", "-qw", "net.ipv4.conf."+ifn+".rp_filter=0"); err != nil {
			return nil, nil, fmt.Errorf("router: %w", err)
		}
	}
	return r, ifaces, nil
}

// Hosts returns every host of every subnet.
func (nw *Network) Hosts() []*Host {
	var out []*Host
	for _, s := range nw.Subnets {
		out = append(out, s...)
	}
	return out
}

// AddInterface makes h multi-homed: a second interface, ifname, on
// subnet s (which must have a host already) with host number n's
// addresses there (10.(91+s).0.n/24 and fd00:(91+s)::n/64), and no default
// route through it. It returns the IPv4 address. The interface goes with
// h's namespace at cleanup.
func (nw *Network) AddInterface(h *Host, s, n int, ifname string) (netip.Addr, error) {
	if s < 0 || s >= len(nw.Subnets) || len(nw.Subnets[s]) == 0 || n < 1 || n > 250 {
		return netip.Addr{}, fmt.Errorf("AddInterface: subnet %d, host number %d", s, n)
	}
	sw := nw.Subnets[s][0].swNS
	ns := filepath.Base(h.NetNS)
	port := fmt.Sprintf("m%d", n)
	a4 := netip.AddrFrom4([4]byte{10, byte(91 + s), 0, byte(n)})
	steps := [][]string{
		{"ip", "link", "add", ifname, "netns", ns, "type", "veth", "peer", "name", port, "netns", sw},
		{"ip", "-n", sw, "link", "set", port, "master", "br0", "up"},
		{"ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf." + ifname + ".accept_dad=0"},
		{"ip", "-n", ns, "link", "set", ifname, "address", fmt.Sprintf("02:%02x:00:01:00:%02x", 0x91+s, n), "up"},
		{"ip", "-n", ns, "addr", "add", a4.String() + "/24", "dev", ifname},
		{"ip", "-n", ns, "-6", "addr", "add", ula(s, uint16(n)).String() + "/64", "dev", ifname, "nodad"},
	}
	for _, st := range steps {
		if err := run(st[0], st[1:]...); err != nil {
			return netip.Addr{}, fmt.Errorf("AddInterface %s on subnet %d: %w", h.Hostname, s, err)
		}
	}
	return a4, nil
}
