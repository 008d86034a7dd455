package legacy

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
	"golang.org/x/sys/unix"
)

// A small IPv4-only copy of pkg/peer's socket code (which is unexported
// and carries IPv6 and the peer protocol's buffers): the original has no
// IPv6, and keeping the bridge's socket here leaves pkg/peer untouched.

const sendTimeout = 100 * time.Millisecond

// conn is the bridge's one socket: bound to 0.0.0.0:port like the
// original's, so our datagrams leave from that port too.
type conn struct {
	pc net.PacketConn
	p  *ipv4.PacketConn
}

// listen opens it: SO_REUSEADDR so an original diskd on the same host can
// share the port, IP_MULTICAST_ALL off so other sockets' groups on the
// port stay out, destination and interface of each datagram reported.
func listen(port, ttl int) (*conn, error) {
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		cerr := rc.Control(func(fd uintptr) {
			if err := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
				serr = fmt.Errorf("SO_REUSEADDR: %w", err)
				return
			}
			// Best effort: without it, the destination check filters.
			_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MULTICAST_ALL, 0)
		})
		return errors.Join(cerr, serr)
	}}
	pc, err := lc.ListenPacket(context.Background(), "udp4", fmt.Sprintf("0.0.0.0:%d", port))
	if err != nil {
		return nil, err
	}
	p := ipv4.NewPacketConn(pc)
	if err := errors.Join(
		p.SetControlMessage(ipv4.FlagDst|ipv4.FlagInterface, true),
		p.SetMulticastTTL(ttl),
		p.SetMulticastLoopback(true)); err != nil {
		pc.Close()
		return nil, err
	}
	return &conn{pc: pc, p: p}, nil
}

func (c *conn) read(buf []byte) (n int, dst, src netip.Addr, err error) {
	n, cm, from, err := c.p.ReadFrom(buf)
	if err != nil {
		return 0, dst, src, err
	}
	if cm != nil {
		dst, _ = netip.AddrFromSlice(cm.Dst)
	}
	if u, ok := from.(*net.UDPAddr); ok {
		src = u.AddrPort().Addr()
	}
	return n, dst.Unmap(), src.Unmap(), nil
}

func (c *conn) join(ifi *net.Interface, g netip.Addr) error {
	return c.p.JoinGroup(ifi, &net.UDPAddr{IP: g.AsSlice()})
}

func (c *conn) leave(ifi *net.Interface, g netip.Addr) error {
	return c.p.LeaveGroup(ifi, &net.UDPAddr{IP: g.AsSlice()})
}

func (c *conn) send(b []byte, ifindex int, g netip.Addr, port int) error {
	if err := c.p.SetWriteDeadline(time.Now().Add(sendTimeout)); err != nil {
		return err
	}
	_, err := c.p.WriteTo(b, &ipv4.ControlMessage{IfIndex: ifindex}, &net.UDPAddr{IP: g.AsSlice(), Port: port})
	return err
}

func (c *conn) close() error { return c.pc.Close() }

// iface is an interface the bridge can use: up, multicast-capable, with
// an IPv4 address.
type iface struct {
	ifi   net.Interface
	addrs []netip.Addr
}

// scanInterfaces lists usable interfaces (exactly those named, when
// names are given) and every IPv4 address of this host, which is how our
// own looped-back datagrams are told apart.
func scanInterfaces(names []string) (use []iface, own []netip.Addr, err error) {
	all, err := net.Interfaces()
	if err != nil {
		return nil, nil, fmt.Errorf("list interfaces: %w", err)
	}
	for _, ifi := range all {
		addrs, err := ifi.Addrs()
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			return nil, nil, fmt.Errorf("addresses of %s: %w", ifi.Name, err)
		}
		it := iface{ifi: ifi}
		for _, a := range addrs {
			if pfx, err := netip.ParsePrefix(a.String()); err == nil && pfx.Addr().Unmap().Is4() {
				it.addrs = append(it.addrs, pfx.Addr().Unmap())
				own = append(own, pfx.Addr().Unmap())
			}
		}
		if len(names) > 0 && !slices.Contains(names, ifi.Name) {
			continue
		}
		if ifi.Flags&net.FlagUp == 0 || len(it.addrs) == 0 {
			continue
		}
		if len(names) == 0 && (ifi.Flags&net.FlagLoopback != 0 || ifi.Flags&net.FlagMulticast == 0) {
			continue
		}
		use = append(use, it)
	}
	return use, own, nil
}
