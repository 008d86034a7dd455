package testutil

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// Multicast routing through the kernel's own API (ipmr, ip6mr), the way
// smcroute or pimd drive it, with no package needed: a raw socket made the
// multicast routing socket (MRT_INIT / MRT6_INIT), one virtual interface
// per router interface, and for every (source, group) the kernel reports
// as unresolved (a NOCACHE upcall) a forwarding entry to every other
// interface when the group is one we route. Each interface has TTL
// threshold 1, so the kernel forwards only datagrams sent with TTL (hop
// limit) 2 or more, and decrements it: exactly what `--ttl 2` is for.
// Closing the socket removes every route.

// Linux uapi constants (linux/mroute.h, linux/mroute6.h).
const (
	mrtInit     = 200 // MRT_INIT, MRT6_INIT
	mrtAddVIF   = 202 // MRT_ADD_VIF, MRT6_ADD_MIF
	mrtAddMFC   = 204 // MRT_ADD_MFC, MRT6_ADD_MFC
	viffIfindex = 0x8 // VIFF_USE_IFINDEX
	msgNoCache  = 1   // IGMPMSG_NOCACHE, MRT6MSG_NOCACHE
	maxVIFs     = 32  // MAXVIFS
)

// MulticastRouter is multicast routing switched on in a Network's router.
type MulticastRouter struct {
	mu     sync.Mutex
	fds    []int
	routes int // forwarding entries installed
	done   sync.WaitGroup
}

// RouteMulticast starts forwarding groups (IPv4 and IPv6 mixed) between
// every pair of the router's interfaces, until Stop or the test's end.
func (nw *Network) RouteMulticast(t testing.TB, groups ...netip.Addr) *MulticastRouter {
	t.Helper()
	var g4, g6 []netip.Addr
	for _, g := range groups {
		if g.Is4() {
			g4 = append(g4, g)
		} else {
			g6 = append(g6, g)
		}
	}
	mr := &MulticastRouter{}
	t.Cleanup(mr.Stop)
	err := nw.Router.Do(func() error {
		if len(g4) > 0 {
			fd, err := mrouteSocket4(nw.ifaces)
			if err != nil {
				return err
			}
			mr.start(fd, g4, len(nw.ifaces), upcall4, addMFC4)
		}
		if len(g6) > 0 {
			fd, err := mrouteSocket6(nw.ifaces)
			if err != nil {
				return err
			}
			mr.start(fd, g6, len(nw.ifaces), upcall6, addMFC6)
		}
		return nil
	})
	if err != nil {
		mr.Stop()
		t.Fatalf("multicast routing: %v", err)
	}
	return mr
}

// Routes returns how many (source, group) entries were installed.
func (mr *MulticastRouter) Routes() int {
	mr.mu.Lock()
	defer mr.mu.Unlock()
	return mr.routes
}

// Stop switches multicast routing off: the kernel drops its routes.
func (mr *MulticastRouter) Stop() {
	mr.mu.Lock()
	fds := mr.fds
	mr.fds = nil
	mr.mu.Unlock()
	for _, fd := range fds {
		// Shutdown wakes the reader; close releases the routing socket.
		_ = unix.Shutdown(fd, unix.SHUT_RDWR)
	}
	mr.done.Wait()
	for _, fd := range fds {
		_ = unix.Close(fd)
	}
}

type upcallFunc func(b []byte) (vif int, src, grp netip.Addr, ok bool)
type addMFCFunc func(fd, parent int, src, grp netip.Addr, vifs int) error

func (mr *MulticastRouter) start(fd int, groups []netip.Addr, vifs int, parse upcallFunc, add addMFCFunc) {
	mr.mu.Lock()
	mr.fds = append(mr.fds, fd)
	mr.mu.Unlock()
	mr.done.Add(1)
	go func() {
		defer mr.done.Done()
		buf := make([]byte, 65536)
		for {
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil || n == 0 {
				if errors.Is(err, unix.EINTR) {
					continue
				}
				return // shut down
			}
			vif, src, grp, ok := parse(buf[:n])
			if !ok || vif >= vifs || !slices.Contains(groups, grp) {
				continue
			}
			if add(fd, vif, src, grp, vifs) == nil {
				mr.mu.Lock()
				mr.routes++
				mr.mu.Unlock()
			}
		}
	}()
}

func mrouteSocket4(ifaces []string) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_IGMP)
	if err != nil {
		return -1, fmt.Errorf("raw IGMP socket: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, mrtInit, 1); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("MRT_INIT: %w", err)
	}
	for vif, name := range ifaces {
		ifi, err := net.InterfaceByName(name)
		if err != nil {
			unix.Close(fd)
			return -1, err
		}
		// struct vifctl: vifi u16, flags u8, threshold u8, rate_limit u32,
		// lcl_ifindex i32 (union with lcl_addr), rmt_addr [4]byte.
		b := make([]byte, 16)
		binary.NativeEndian.PutUint16(b[0:], uint16(vif))
		b[2], b[3] = viffIfindex, 1
		binary.NativeEndian.PutUint32(b[8:], uint32(ifi.Index))
		if err := unix.SetsockoptString(fd, unix.IPPROTO_IP, mrtAddVIF, string(b)); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("MRT_ADD_VIF %s: %w", name, err)
		}
	}
	return fd, nil
}

// upcall4 reads a struct igmpmsg: it overlays an IP header, so a real IGMP
// packet (protocol 2 at byte 9) is told apart by im_mbz (byte 9) being 0.
func upcall4(b []byte) (int, netip.Addr, netip.Addr, bool) {
	if len(b) < 20 || b[9] != 0 || b[8] != msgNoCache {
		return 0, netip.Addr{}, netip.Addr{}, false
	}
	return int(b[10]), netip.AddrFrom4([4]byte(b[12:16])), netip.AddrFrom4([4]byte(b[16:20])), true
}

func addMFC4(fd, parent int, src, grp netip.Addr, vifs int) error {
	// struct mfcctl: origin [4], group [4], parent u16, ttls [32]u8, then
	// (aligned to 4) pkt_cnt, byte_cnt, wrong_if u32, expire i32.
	b := make([]byte, 60)
	s4, g4 := src.As4(), grp.As4()
	copy(b[0:], s4[:])
	copy(b[4:], g4[:])
	binary.NativeEndian.PutUint16(b[8:], uint16(parent))
	for v := range min(vifs, maxVIFs) {
		if v != parent {
			b[10+v] = 1
		}
	}
	return unix.SetsockoptString(fd, unix.IPPROTO_IP, mrtAddMFC, string(b))
}

func mrouteSocket6(ifaces []string) (int, error) {
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMPV6)
	if err != nil {
		return -1, fmt.Errorf("raw ICMPv6 socket: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, mrtInit, 1); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("MRT6_INIT: %w", err)
	}
	for mif, name := range ifaces {
		ifi, err := net.InterfaceByName(name)
		if err != nil {
			unix.Close(fd)
			return -1, err
		}
		// struct mif6ctl: mifi u16, flags u8, threshold u8, pifi u16,
		// (pad) rate_limit u32.
		b := make([]byte, 12)
		binary.NativeEndian.PutUint16(b[0:], uint16(mif))
		b[3] = 1
		binary.NativeEndian.PutUint16(b[4:], uint16(ifi.Index))
		if err := unix.SetsockoptString(fd, unix.IPPROTO_IPV6, mrtAddVIF, string(b)); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("MRT6_ADD_MIF %s: %w", name, err)
		}
	}
	return fd, nil
}

// upcall6 reads a struct mrt6msg: mbz u8 (0, where an ICMPv6 message has a
// non-zero type), msgtype u8, mif u16, pad u32, src [16], dst [16].
func upcall6(b []byte) (int, netip.Addr, netip.Addr, bool) {
	if len(b) < 40 || b[0] != 0 || b[1] != msgNoCache {
		return 0, netip.Addr{}, netip.Addr{}, false
	}
	mif := int(binary.NativeEndian.Uint16(b[2:]))
	return mif, netip.AddrFrom16([16]byte(b[8:24])), netip.AddrFrom16([16]byte(b[24:40])), true
}

func addMFC6(fd, parent int, src, grp netip.Addr, mifs int) error {
	// struct mf6cctl: origin sockaddr_in6 (28), group sockaddr_in6 (28),
	// parent u16, (pad 2) if_set of 256 bits as 8 u32.
	b := make([]byte, 92)
	for i, a := range []netip.Addr{src, grp} {
		off := 28 * i
		binary.NativeEndian.PutUint16(b[off:], unix.AF_INET6)
		a16 := a.As16()
		copy(b[off+8:], a16[:])
	}
	binary.NativeEndian.PutUint16(b[56:], uint16(parent))
	for m := range mifs {
		if m != parent {
			w := binary.NativeEndian.Uint32(b[60+4*(m/32):])
			binary.NativeEndian.PutUint32(b[60+4*(m/32):], w|1<<(m%32))
		}
	}
	return unix.SetsockoptString(fd, unix.IPPROTO_IPV6, mrtAddMFC, string(b))
}
