package gossip

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// simNet is an in-memory network for memberlist transports, built to run
// inside a testing/synctest bubble: packets go through buffered channels
// (a full queue drops, as a full UDP socket buffer does; a stopped host's
// packets are lost), streams are net.Pipe pairs; every wait is on a
// channel or a timer, so virtual time advances only when every member is
// idle and the figures do not depend on how busy the machine is.
// memberlist's own MockNetwork does not fit: its sends block on unbuffered
// channels (a killed member would wedge its senders) and its maps are not
// locked.
type simNet struct {
	// latency is the one-way delay of a packet; a dial takes a round
	// trip. Stream writes themselves take no time.
	latency time.Duration

	mu    sync.Mutex
	hosts map[string]*simTransport // by "ip:port"
	next  int
}

// simTransport is one member's end; it counts what its member sends:
// packets, streams it opens and the bytes it writes on any stream.
type simTransport struct {
	net      *simNet
	ip       net.IP
	port     int
	addr     string
	packetCh chan *memberlist.Packet
	streamCh chan net.Conn
	down     atomic.Bool

	packets, packetBytes, streams, streamBytes, dropped atomic.Uint64
}

var _ memberlist.NodeAwareTransport = (*simTransport)(nil)

const (
	simPacketQueue = 512  // a UDP socket's receive buffer, in packets
	simStreamQueue = 4096 // a listen backlog (Linux somaxconn, which Go listens with)
)

// newHost adds a host at the next address (10.x.y.z, port 32005).
func (n *simNet) newHost() *simTransport {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.next++
	ip := net.IPv4(10, byte(n.next>>16), byte(n.next>>8), byte(n.next)).To4()
	t := &simTransport{net: n, ip: ip, port: DefaultPort, addr: net.JoinHostPort(ip.String(), strconv.Itoa(DefaultPort)),
		packetCh: make(chan *memberlist.Packet, simPacketQueue), streamCh: make(chan net.Conn, simStreamQueue)}
	if n.hosts == nil {
		n.hosts = make(map[string]*simTransport)
	}
	n.hosts[t.addr] = t
	return t
}

func (n *simNet) host(addr string) *simTransport {
	n.mu.Lock()
	defer n.mu.Unlock()
	t := n.hosts[addr]
	if t == nil || t.down.Load() {
		return nil
	}
	return t
}

func (t *simTransport) FinalAdvertiseAddr(string, int) (net.IP, int, error) { return t.ip, t.port, nil }

func (t *simTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	return t.WriteToAddress(b, memberlist.Address{Addr: addr})
}

func (t *simTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	now := time.Now()
	t.packets.Add(1)
	t.packetBytes.Add(uint64(len(b)))
	dest := t.net.host(a.Addr)
	if dest == nil || t.down.Load() {
		return now, nil // lost, as UDP to a dead host is
	}
	p := &memberlist.Packet{Buf: bytes.Clone(b), From: &net.UDPAddr{IP: t.ip, Port: t.port}, Timestamp: now}
	deliver := func() {
		if dest.down.Load() {
			return
		}
		select {
		case dest.packetCh <- p:
		default:
			dest.dropped.Add(1)
		}
	}
	if t.net.latency > 0 {
		time.AfterFunc(t.net.latency, deliver)
	} else {
		deliver()
	}
	return now, nil
}

func (t *simTransport) PacketCh() <-chan *memberlist.Packet { return t.packetCh }
func (t *simTransport) StreamCh() <-chan net.Conn           { return t.streamCh }

func (t *simTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return t.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

func (t *simTransport) DialAddressTimeout(a memberlist.Address, _ time.Duration) (net.Conn, error) {
	time.Sleep(2 * t.net.latency) // the handshake
	dest := t.net.host(a.Addr)
	if dest == nil || t.down.Load() {
		return nil, fmt.Errorf("dial %s: connection refused", a.Addr)
	}
	c, s := net.Pipe()
	t.streams.Add(1)
	served := &simConn{Conn: s, n: &dest.streamBytes, local: dest, remote: t}
	select {
	case dest.streamCh <- served:
	default:
		c.Close()
		s.Close()
		return nil, fmt.Errorf("dial %s: backlog full", a.Addr)
	}
	return &simConn{Conn: c, n: &t.streamBytes, local: t, remote: dest}, nil
}

func (t *simTransport) IngestPacket(conn net.Conn, addr net.Addr, now time.Time, shouldClose bool) error {
	if shouldClose {
		defer conn.Close()
	}
	b, err := io.ReadAll(conn)
	if err != nil || len(b) == 0 {
		return errors.New("sim: bad packet stream")
	}
	t.packetCh <- &memberlist.Packet{Buf: b, From: addr, Timestamp: now}
	return nil
}

func (t *simTransport) IngestStream(conn net.Conn) error {
	t.streamCh <- conn
	return nil
}

// Shutdown takes the host off the network: what is sent to it is lost,
// dials to it are refused.
func (t *simTransport) Shutdown() error {
	t.down.Store(true)
	return nil
}

// simConn is one end of a stream; it counts the bytes its side writes and
// reports the hosts' addresses as TCP addresses.
type simConn struct {
	net.Conn
	n             *atomic.Uint64
	local, remote *simTransport
}

func (c *simConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.n.Add(uint64(n))
	return n, err
}

func (c *simConn) LocalAddr() net.Addr  { return &net.TCPAddr{IP: c.local.ip, Port: c.local.port} }
func (c *simConn) RemoteAddr() net.Addr { return &net.TCPAddr{IP: c.remote.ip, Port: c.remote.port} }
