package testutil

import (
	"bytes"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
)

// Tap is a plain multicast socket on a test host's eth0: it records every
// datagram sent to one IPv4 group and port, and injects datagrams of its
// own, as a stranger on the link would.
type Tap struct {
	t     testing.TB
	h     *Host
	group netip.AddrPort
	rx    *net.UDPConn
	mu    sync.Mutex
	got   [][]byte
	done  chan struct{}
}

// NewTap starts recording group on h until the test ends.
func NewTap(t testing.TB, h *Host, group netip.AddrPort) *Tap {
	t.Helper()
	tp := &Tap{t: t, h: h, group: group, done: make(chan struct{})}
	err := h.Do(func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		tp.rx, err = net.ListenMulticastUDP("udp4", ifi, net.UDPAddrFromAddrPort(group))
		if err == nil {
			err = tp.rx.SetReadBuffer(8 << 20)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(tp.done)
		buf := make([]byte, 65536)
		for {
			n, err := tp.rx.Read(buf)
			if err != nil {
				return
			}
			tp.mu.Lock()
			tp.got = append(tp.got, bytes.Clone(buf[:n]))
			tp.mu.Unlock()
		}
	}()
	t.Cleanup(func() { tp.rx.Close(); <-tp.done })
	return tp
}

// Datagrams returns what the tap received so far.
func (tp *Tap) Datagrams() [][]byte {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return slices.Clone(tp.got)
}

// Send injects datagrams to dst (the tap's group when invalid) from the
// tap's host.
func (tp *Tap) Send(dst netip.Addr, dgs ...[]byte) {
	tp.t.Helper()
	to := tp.group
	if dst.IsValid() {
		to = netip.AddrPortFrom(dst, tp.group.Port())
	}
	err := tp.h.Do(func() error {
		c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(to))
		if err != nil {
			return err
		}
		defer c.Close()
		for _, b := range dgs {
			if _, err := c.Write(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		tp.t.Fatal(err)
	}
}
