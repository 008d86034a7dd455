package test

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/ipv4"

	"github.com/diskd/diskd/pkg/legacy"
	"github.com/diskd/diskd/pkg/testutil"
)

// The original Perl diskd (App::Diskd 0.01, test/testdata/legacy) as a
// real peer on a namespace host: fake blkid output, a DNS answer for its
// own name, its Unix socket for `list`.

// perlPeer is one running original daemon.
type perlPeer struct {
	t    testing.TB
	h    *testutil.Host
	home string
	cmd  *exec.Cmd
	done chan struct{}
}

func requirePerlDiskd(t testing.TB) {
	t.Helper()
	testutil.RequiresRoot(t)
	testutil.RequiresTool(t, "perl", "unshare", "mount")
	if out, err := exec.Command("perl", "-MPOE", "-MIO::Socket::Multicast", "-MYAML::XS", "-MNet::Nslookup", "-e", "1").CombinedOutput(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("the original diskd's Perl modules are not installed; .ci/run must install test/ci-packages.txt: %v\n%s", err, out)
		}
		t.Skipf("the original diskd's Perl modules are missing (apt-get install $(grep -v '^#' test/ci-packages.txt)): %v\n%s", err, out)
	}
}

var dnsStubs sync.Map // host netns path -> struct{}

// startDNSStub answers every A query on h's 127.0.0.1:53 with h's
// address: the original resolves its own host name over DNS only.
func startDNSStub(t testing.TB, h *testutil.Host) {
	if _, loaded := dnsStubs.LoadOrStore(h.NetNS, struct{}{}); loaded {
		return
	}
	var pc net.PacketConn
	if err := h.Do(func() (err error) { pc, err = net.ListenPacket("udp4", "127.0.0.1:53"); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close(); dnsStubs.Delete(h.NetNS) })
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if r := dnsAnswer(buf[:n], h.Addr4); r != nil {
				pc.WriteTo(r, from)
			}
		}
	}()
}

// dnsAnswer answers a one-question query: an A record for an A query,
// no records otherwise.
func dnsAnswer(q []byte, a netip.Addr) []byte {
	if len(q) < 12 || binary.BigEndian.Uint16(q[4:]) != 1 {
		return nil
	}
	i := 12
	for i < len(q) && q[i] != 0 {
		i += int(q[i]) + 1
	}
	if i+5 > len(q) {
		return nil
	}
	qtype := binary.BigEndian.Uint16(q[i+1:])
	question := q[12 : i+5]
	r := append([]byte{}, q[:2]...)
	r = append(r, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0)
	r = append(r, question...)
	if qtype == 1 {
		r[7] = 1
		ip := a.As4()
		r = append(r, 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4)
		r = append(r, ip[:]...)
	}
	return r
}

// startPerlPeer runs the original daemon on h with blkid printing
// blkidOut; it is killed at cleanup. It announces 5 s later.
func startPerlPeer(t testing.TB, h *testutil.Host, blkidOut string) *perlPeer {
	t.Helper()
	requirePerlDiskd(t)
	home, err := os.MkdirTemp("", "lgp") // short: the socket path must fit sun_path
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(home) })
	startDNSStub(t, h)
	blkid := filepath.Join(home, "blkid.txt")
	fake := filepath.Join(home, "fake-blkid")
	if err := os.WriteFile(blkid, []byte(blkidOut), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(fake, []byte("#!/bin/sh\nexec cat '"+blkid+"'\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	lib := filepath.Join(testutil.RepoRoot(t), "test", "testdata", "legacy")
	script := fmt.Sprintf("mount --bind '%s' /usr/sbin/blkid && exec perl -I'%s/App-Diskd-compat/lib' '%s/App-Diskd/bin/diskd' -d",
		fake, lib, lib)
	p := &perlPeer{t: t, h: h, home: home, done: make(chan struct{})}
	p.cmd = h.Command("unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script)
	p.cmd.Env = append(os.Environ(), "HOME="+home, "RES_NAMESERVERS=127.0.0.1")
	logf, err := os.Create(filepath.Join(home, "diskd.log"))
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start the original diskd: %v", err)
	}
	go func() { p.cmd.Wait(); logf.Close(); close(p.done) }()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(home, "diskd.log"))
			t.Logf("original diskd log on %s:\n%s", h.Hostname, b)
		}
	})
	testutil.Eventually(t, 20*time.Second, "the original diskd's socket", func() bool {
		select {
		case <-p.done:
			b, _ := os.ReadFile(filepath.Join(home, "diskd.log"))
			t.Fatalf("the original diskd exited:\n%s", b)
		default:
		}
		c, err := net.Dial("unix", p.socket())
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return p
}

func (p *perlPeer) socket() string { return filepath.Join(p.home, ".diskd-socket") }

// alive reports whether the daemon still runs.
func (p *perlPeer) alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

func (p *perlPeer) stop() {
	if p.alive() {
		p.cmd.Process.Signal(syscall.SIGKILL)
	}
	<-p.done
}

// list is the original's own `list` through its socket: its lines.
func (p *perlPeer) list() ([]string, error) {
	c, err := net.Dial("unix", p.socket())
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	readReply := func() (string, error) { // each reply ends "\r\n"
		var b bytes.Buffer
		for !bytes.HasSuffix(b.Bytes(), []byte("\r\n")) {
			line, err := r.ReadBytes('\n')
			b.Write(line)
			if err != nil {
				return b.String(), err
			}
		}
		return strings.TrimSuffix(b.String(), "\r\n"), nil
	}
	if _, err := readReply(); err != nil {
		return nil, fmt.Errorf("greeting: %w", err)
	}
	if _, err := c.Write([]byte("list\n")); err != nil {
		return nil, err
	}
	out, err := readReply()
	if err != nil {
		return nil, err
	}
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if l != "" {
			lines = append(lines, l)
		}
	}
	return lines, nil
}

// perlLine is how the original's `list` prints a disk.
func perlLine(host, uuid, label, dev string) string {
	return fmt.Sprintf("%-15s %-37s %-10s %s", host+":", uuid, label, dev)
}

// legacyGroup is the original's group and port.
var legacyGroup = netip.AddrPortFrom(netip.MustParseAddr(legacy.DefaultGroup), legacy.DefaultPort)

// heard is one datagram on the legacy group with where it came from and
// the IP TTL it arrived with.
type heard struct {
	b   []byte
	src netip.AddrPort
	ttl int
	at  time.Time // when read
}

// legacyWatch records the legacy group on h's eth0, with sources and TTLs.
func legacyWatch(t testing.TB, h *testutil.Host) func() []heard {
	t.Helper()
	var c *net.UDPConn
	err := h.Do(func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		c, err = net.ListenMulticastUDP("udp4", ifi, net.UDPAddrFromAddrPort(legacyGroup))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	p := ipv4.NewPacketConn(c)
	if err := p.SetControlMessage(ipv4.FlagTTL, true); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []heard
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			n, cm, src, err := p.ReadFrom(buf)
			if err != nil {
				return
			}
			hd := heard{b: bytes.Clone(buf[:n]), src: src.(*net.UDPAddr).AddrPort(), at: time.Now()}
			if cm != nil {
				hd.ttl = cm.TTL
			}
			mu.Lock()
			got = append(got, hd)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() { c.Close(); <-done })
	return func() []heard {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(got)
	}
}

// blkidUUID is the UUID blkid reads from an image.
func blkidUUID(t testing.TB, img string) string {
	out, err := exec.Command("blkid", "-c", "/dev/null", "-o", "value", "-s", "UUID", img).Output()
	if err != nil {
		t.Fatalf("blkid %s: %v", img, err)
	}
	return strings.TrimSpace(string(out))
}
