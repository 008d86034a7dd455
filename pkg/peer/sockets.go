package peer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"syscall"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// sendTimeout bounds every send: a full socket buffer drops the datagram
// rather than stall the protocol loop.
const sendTimeout = 100 * time.Millisecond

// recvBuffer is the socket receive buffer asked for: a network answering a
// query at once, 1000-disk inventories included, must not overflow it.
const recvBuffer = 4 << 20

// mconn is one family's multicast socket.
type mconn interface {
	// read returns one datagram with its destination, source and arrival
	// interface.
	read(buf []byte) (n int, dst, src netip.Addr, ifindex int, err error)
	join(ifi *net.Interface, g netip.Addr) error
	leave(ifi *net.Interface, g netip.Addr) error
	send(b []byte, ifi *net.Interface, g netip.Addr, port int) error
	close() error
}

// listen opens the UDP socket of one family on port: SO_REUSEADDR so
// several daemons on one host can share the port (each receives every
// multicast datagram), IP(V6)_MULTICAST_ALL off so memberships of other
// sockets on this port do not leak in, and a large receive buffer.
// Warnings are returned separately: the socket works without them.
func listen(network string, port int) (pc net.PacketConn, warn, err error) {
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		cerr := rc.Control(func(fd uintptr) {
			s := int(fd)
			if err := unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
				serr = fmt.Errorf("SO_REUSEADDR: %w", err)
				return
			}
			if network == "udp4" {
				if err := unix.SetsockoptInt(s, unix.IPPROTO_IP, unix.IP_MULTICAST_ALL, 0); err != nil {
					warn = errors.Join(warn, fmt.Errorf("IP_MULTICAST_ALL=0: %w (other groups on the port may be received; they are filtered)", err))
				}
			} else if err := unix.SetsockoptInt(s, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_ALL, 0); err != nil {
				warn = errors.Join(warn, fmt.Errorf("IPV6_MULTICAST_ALL=0: %w (other groups on the port may be received; they are filtered)", err))
			}
			// FORCE needs CAP_NET_ADMIN; without it the kernel caps at rmem_max.
			if unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, recvBuffer) != nil {
				_ = unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_RCVBUF, recvBuffer)
			}
		})
		return errors.Join(cerr, serr)
	}}
	addr := fmt.Sprintf("0.0.0.0:%d", port)
	if network == "udp6" {
		addr = fmt.Sprintf("[::]:%d", port)
	}
	pc, err = lc.ListenPacket(context.Background(), network, addr)
	return pc, warn, err
}

type conn4 struct {
	pc net.PacketConn
	p  *ipv4.PacketConn
}

func open4(port, ttl int) (mconn, error, error) {
	pc, warn, err := listen("udp4", port)
	if err != nil {
		return nil, nil, err
	}
	p := ipv4.NewPacketConn(pc)
	err = errors.Join(
		p.SetControlMessage(ipv4.FlagDst|ipv4.FlagInterface, true),
		p.SetMulticastTTL(ttl),
		p.SetMulticastLoopback(true))
	if err != nil {
		pc.Close()
		return nil, nil, err
	}
	return &conn4{pc: pc, p: p}, warn, nil
}

func (c *conn4) read(buf []byte) (int, netip.Addr, netip.Addr, int, error) {
	n, cm, src, err := c.p.ReadFrom(buf)
	if err != nil {
		return 0, netip.Addr{}, netip.Addr{}, 0, err
	}
	var dst netip.Addr
	ifindex := 0
	if cm != nil {
		dst, _ = netip.AddrFromSlice(cm.Dst)
		ifindex = cm.IfIndex
	}
	var s netip.Addr
	if u, ok := src.(*net.UDPAddr); ok {
		s = u.AddrPort().Addr()
	}
	return n, dst.Unmap(), s.Unmap(), ifindex, nil
}

func (c *conn4) join(ifi *net.Interface, g netip.Addr) error {
	return c.p.JoinGroup(ifi, &net.UDPAddr{IP: g.AsSlice()})
}

func (c *conn4) leave(ifi *net.Interface, g netip.Addr) error {
	return c.p.LeaveGroup(ifi, &net.UDPAddr{IP: g.AsSlice()})
}

func (c *conn4) send(b []byte, ifi *net.Interface, g netip.Addr, port int) error {
	if err := c.p.SetWriteDeadline(time.Now().Add(sendTimeout)); err != nil {
		return err
	}
	_, err := c.p.WriteTo(b, &ipv4.ControlMessage{IfIndex: ifi.Index}, &net.UDPAddr{IP: g.AsSlice(), Port: port})
	return err
}

func (c *conn4) close() error { return c.pc.Close() }

type conn6 struct {
	pc net.PacketConn
	p  *ipv6.PacketConn
}

func open6(port, hops int) (mconn, error, error) {
	pc, warn, err := listen("udp6", port)
	if err != nil {
		return nil, nil, err
	}
	p := ipv6.NewPacketConn(pc)
	err = errors.Join(
		p.SetControlMessage(ipv6.FlagDst|ipv6.FlagInterface, true),
		p.SetMulticastHopLimit(hops),
		p.SetMulticastLoopback(true))
	if err != nil {
		pc.Close()
		return nil, nil, err
	}
	return &conn6{pc: pc, p: p}, warn, nil
}

func (c *conn6) read(buf []byte) (int, netip.Addr, netip.Addr, int, error) {
	n, cm, src, err := c.p.ReadFrom(buf)
	if err != nil {
		return 0, netip.Addr{}, netip.Addr{}, 0, err
	}
	var dst netip.Addr
	ifindex := 0
	if cm != nil {
		dst, _ = netip.AddrFromSlice(cm.Dst)
		ifindex = cm.IfIndex
	}
	var s netip.Addr
	if u, ok := src.(*net.UDPAddr); ok {
		// Without the zone: its name was looked up in this thread's network
		// namespace. The caller names the interface from ifindex.
		s = u.AddrPort().Addr().WithZone("")
	}
	return n, dst, s, ifindex, nil
}

func (c *conn6) join(ifi *net.Interface, g netip.Addr) error {
	return c.p.JoinGroup(ifi, &net.UDPAddr{IP: g.AsSlice()})
}

func (c *conn6) leave(ifi *net.Interface, g netip.Addr) error {
	return c.p.LeaveGroup(ifi, &net.UDPAddr{IP: g.AsSlice()})
}

func (c *conn6) send(b []byte, ifi *net.Interface, g netip.Addr, port int) error {
	if err := c.p.SetWriteDeadline(time.Now().Add(sendTimeout)); err != nil {
		return err
	}
	// The interface goes by index in IPV6_PKTINFO only: a zone name would be
	// resolved in the calling thread's network namespace, which need not be
	// the socket's.
	_, err := c.p.WriteTo(b, &ipv6.ControlMessage{IfIndex: ifi.Index}, &net.UDPAddr{IP: g.AsSlice(), Port: port})
	return err
}

func (c *conn6) close() error { return c.pc.Close() }

// ifaceInfo is one interface the network could use.
type ifaceInfo struct {
	ifi   net.Interface
	v4    bool         // has an IPv4 address: can send IPv4 multicast
	v6    bool         // has an IPv6 link-local address: can send IPv6 multicast
	addrs []netip.Addr // its IPv4 and IPv6 addresses (link-local ones with their zone)
}

// scanInterfaces lists the usable interfaces: up, multicast-capable and
// not loopback, or exactly those named (loopback allowed when named).
func scanInterfaces(names []string) ([]ifaceInfo, error) {
	all, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("list interfaces: %w", err)
	}
	var out []ifaceInfo
	for _, ifi := range all {
		if len(names) > 0 && !slices.Contains(names, ifi.Name) {
			continue
		}
		if ifi.Flags&net.FlagUp == 0 || ifi.Flags&net.FlagMulticast == 0 && ifi.Flags&net.FlagLoopback == 0 {
			continue
		}
		if len(names) == 0 && ifi.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, err := ifi.Addrs()
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue // gone meanwhile
			}
			return nil, fmt.Errorf("addresses of %s: %w", ifi.Name, err)
		}
		info := ifaceInfo{ifi: ifi}
		for _, a := range addrs {
			pfx, err := netip.ParsePrefix(a.String())
			if err != nil {
				continue
			}
			ip := pfx.Addr().Unmap()
			switch {
			case ip.Is4():
				info.v4 = true
				info.addrs = append(info.addrs, ip)
			case ip.IsLinkLocalUnicast():
				info.v6 = true
				info.addrs = append(info.addrs, ip.WithZone(ifi.Name))
			case ip.IsGlobalUnicast():
				// Routable (global or ULA): what peers beyond the link use.
				info.addrs = append(info.addrs, ip)
			}
		}
		out = append(out, info)
	}
	return out, nil
}
