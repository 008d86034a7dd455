// Command mcastprobe joins an IPv4 and an IPv6 multicast group on one
// interface, sends a datagram to each and waits for its own copy (multicast
// loopback). It exits 0 when both arrive. test/systemd_caps_test.go runs it
// with no capabilities inside a throwaway network namespace to show that
// diskd's peer traffic needs none.
package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"time"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: mcastprobe IFACE")
		os.Exit(2)
	}
	ifi, err := net.InterfaceByName(os.Args[1])
	if err != nil {
		fail(err)
	}
	for _, g := range []struct{ net, group string }{
		{"udp4", "239.255.42.99"},
		{"udp6", "ff02::4299"},
	} {
		if err := roundTrip(ifi, g.net, g.group); err != nil {
			fail(fmt.Errorf("%s %s: %w", g.net, g.group, err))
		}
		fmt.Printf("%s %s ok\n", g.net, g.group)
	}
}

func roundTrip(ifi *net.Interface, network, group string) error {
	addr := &net.UDPAddr{IP: net.ParseIP(group), Port: 42999}
	if network == "udp6" {
		addr.Zone = ifi.Name
	}
	rx, err := net.ListenMulticastUDP(network, ifi, addr)
	if err != nil {
		return fmt.Errorf("join: %w", err)
	}
	defer rx.Close()
	tx, err := net.DialUDP(network, nil, addr)
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	defer tx.Close()
	msg := []byte("diskd-mcastprobe")
	if _, err := tx.Write(msg); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	if err := rx.SetReadDeadline(time.Now().Add(3 * time.Second)); err != nil {
		return err
	}
	buf := make([]byte, 64)
	for {
		n, _, err := rx.ReadFromUDP(buf)
		if err != nil {
			return fmt.Errorf("receive: %w", err)
		}
		if bytes.Equal(buf[:n], msg) {
			return nil
		}
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "mcastprobe:", err)
	os.Exit(1)
}
