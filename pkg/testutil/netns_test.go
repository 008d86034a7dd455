package testutil

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestHosts(t *testing.T) {
	var kept []*Host
	t.Run("build", func(t *testing.T) {
		hosts := Hosts(t, 3)
		kept = hosts
		for _, h := range hosts {
			out, err := h.Command("hostname").Output()
			if err != nil || strings.TrimSpace(string(out)) != h.Hostname {
				t.Errorf("host %d: hostname %q, %v", h.Index, out, err)
			}
		}
		// /run is private to each host.
		if err := h1Write(hosts[0]); err != nil {
			t.Fatal(err)
		}
		mark := "/run/diskd/mark-" + filepath.Base(hosts[0].NetNS)
		if err := hosts[1].Command("test", "-e", mark).Run(); err == nil {
			t.Error("host 2 sees host 1's /run")
		}
		if _, err := os.Stat(mark); err == nil {
			t.Error("the root namespace sees host 1's /run")
		}
		for _, fam := range []string{"udp4", "udp6"} {
			if err := multicastOnce(t, hosts, fam); err != nil {
				t.Errorf("%s: %v", fam, err)
			}
		}
		// A host cut off at the switch hears nothing.
		if err := hosts[2].SetLink(false); err != nil {
			t.Fatal(err)
		}
		if err := multicastOnce(t, hosts, "udp4"); err == nil {
			t.Error("host 3 still reachable with its link down")
		}
	})
	// Cleanup ran when the subtest ended.
	for _, h := range kept {
		if _, err := os.Stat(h.NetNS); err == nil {
			t.Errorf("%s still exists after cleanup", h.NetNS)
		}
		if _, err := os.Stat(filepath.Dir(h.UTS)); err == nil {
			t.Errorf("%s still exists after cleanup", filepath.Dir(h.UTS))
		}
	}
}

func h1Write(h *Host) error {
	mark := "/run/diskd/mark-" + filepath.Base(h.NetNS)
	return h.Command("sh", "-c", "echo x > "+mark+" && test -e "+mark).Run()
}

// multicastOnce has host 1 send one datagram and every other host receive it.
func multicastOnce(t *testing.T, hosts []*Host, fam string) error {
	group := netip.MustParseAddr("239.255.42.1")
	if fam == "udp6" {
		group = netip.MustParseAddr("ff02::4242")
	}
	var conns []*net.UDPConn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for _, h := range hosts[1:] {
		var c *net.UDPConn
		err := h.Do(func() (err error) {
			ifi, err := net.InterfaceByName("eth0")
			if err != nil {
				return err
			}
			c, err = net.ListenMulticastUDP(fam, ifi, &net.UDPAddr{IP: group.AsSlice(), Port: 5454})
			return err
		})
		if err != nil {
			return err
		}
		conns = append(conns, c)
	}
	err := hosts[0].Do(func() error {
		c, err := net.Dial(fam, netip.AddrPortFrom(group.WithZone("eth0"), 5454).String())
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("hello"))
		return err
	})
	if err != nil {
		return err
	}
	for i, c := range conns {
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		buf := make([]byte, 16)
		n, err := c.Read(buf)
		if err != nil {
			return err
		}
		if string(buf[:n]) != "hello" {
			t.Errorf("host %d got %q", i+2, buf[:n])
		}
	}
	return nil
}
