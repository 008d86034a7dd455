package gossip

import (
	"net"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// countingTransport is a transport (memberlist's own UDP+TCP one in the
// daemon, an in-memory one in the simulations) counting what it sends, so
// status (and the figures) can say what gossip costs.
type countingTransport struct {
	memberlist.NodeAwareTransport
	packets, packetBytes, streams, streamBytes atomic.Uint64
}

var _ memberlist.NodeAwareTransport = (*countingTransport)(nil)

func (t *countingTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	t.packets.Add(1)
	t.packetBytes.Add(uint64(len(b)))
	return t.NodeAwareTransport.WriteTo(b, addr)
}

func (t *countingTransport) WriteToAddress(b []byte, addr memberlist.Address) (time.Time, error) {
	t.packets.Add(1)
	t.packetBytes.Add(uint64(len(b)))
	return t.NodeAwareTransport.WriteToAddress(b, addr)
}

func (t *countingTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	c, err := t.NodeAwareTransport.DialTimeout(addr, timeout)
	return t.count(c, err)
}

func (t *countingTransport) DialAddressTimeout(addr memberlist.Address, timeout time.Duration) (net.Conn, error) {
	c, err := t.NodeAwareTransport.DialAddressTimeout(addr, timeout)
	return t.count(c, err)
}

func (t *countingTransport) count(c net.Conn, err error) (net.Conn, error) {
	if err != nil {
		return nil, err
	}
	t.streams.Add(1)
	return &countingConn{Conn: c, n: &t.streamBytes}, nil
}

// countingConn counts the bytes written on a stream we opened (requests,
// replies and push/pull both ways are counted by their senders).
type countingConn struct {
	net.Conn
	n *atomic.Uint64
}

func (c *countingConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.n.Add(uint64(n))
	return n, err
}
