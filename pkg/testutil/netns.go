package testutil

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Host is one fake machine for multi-host tests: its own network namespace
// (eth0 on a bridge shared with the other hosts, 10.99.0.N/24 plus an IPv6
// link-local address, a route for 224.0.0.0/4), its own UTS namespace
// (hostname) and its own mount namespace (a private tmpfs on /run, with
// /run/diskd, and the netns's sysfs). The bridge lives in a namespace of
// its own; nothing is added to the machine's root network namespace, so
// tests may multicast freely between hosts.
type Host struct {
	Index    int        // 1-based
	Hostname string     // "dkd-h1", ...
	Addr4    netip.Addr // 10.99.0.Index
	Addr6    netip.Addr // a routable (ULA) IPv6 address; only on routed networks (Network)
	NetNS    string     // path of the network namespace (/run/netns/NAME)
	UTS, Mnt string     // paths of the persisted UTS and mount namespaces
	swNS     string     // the switch's netns name
	port     string     // the host's port on the switch ("p1")
	gw4, gw6 netip.Addr // default routes, when the host's subnet has a router
}

// netnsSeq numbers the host sets of one test process, for unique names.
var netnsSeq atomic.Int64

const netnsPrefix = "dkt"

// Hosts builds n hosts joined by one bridge (multicast snooping off) and
// returns them. Everything is removed at cleanup, also when the test
// fails: processes still inside the namespaces are killed, the namespaces
// and the bridge deleted. Needs root, ip(8), nsenter(1) and unshare(1).
func Hosts(t testing.TB, n int) []*Host {
	t.Helper()
	RequiresRoot(t)
	RequiresTool(t, "ip", "nsenter", "unshare", "mount", "umount")
	if n < 1 || n > 250 {
		t.Fatalf("Hosts: n=%d, want 1..250", n)
	}
	base, dir := newHostSet(t)
	sw := base + "-sw"
	hosts := make([]*Host, n)
	for i := range hosts {
		name := fmt.Sprintf("%s-h%d", base, i+1)
		hosts[i] = &Host{
			Index: i + 1, Hostname: fmt.Sprintf("dkd-h%d", i+1),
			Addr4: netip.AddrFrom4([4]byte{10, 99, 0, byte(i + 1)}),
			NetNS: "/run/netns/" + name,
			UTS:   filepath.Join(dir, fmt.Sprintf("h%d.uts", i+1)),
			Mnt:   filepath.Join(dir, fmt.Sprintf("h%d.mnt", i+1)),
			swNS:  sw, port: fmt.Sprintf("p%d", i+1),
		}
	}
	if err := newSwitch(sw); err != nil {
		t.Fatal(err)
	}
	if err := buildHosts(hosts); err != nil {
		t.Fatal(err)
	}
	return hosts
}

// newHostSet names a new set of hosts and prepares the directory their
// namespace files live in; the whole set is removed at cleanup, also when
// the test fails.
func newHostSet(t testing.TB) (base, dir string) {
	t.Helper()
	collectStaleNetns()
	base = fmt.Sprintf("%s%d-%d", netnsPrefix, os.Getpid(), netnsSeq.Add(1))
	dir = filepath.Join(os.TempDir(), "diskd-"+base)
	t.Cleanup(func() {
		if err := removeHosts(base, dir); err != nil {
			t.Errorf("removing test hosts: %v", err)
		}
	})
	// The namespace files need a private mount to live on.
	for _, err := range []error{
		os.MkdirAll(dir, 0o755),
		run("mount", "--bind", dir, dir),
		run("mount", "--make-private", dir),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	return base, dir
}

// newSwitch makes a namespace holding one bridge, multicast snooping off.
func newSwitch(name string) error {
	for _, s := range [][]string{
		{"ip", "netns", "add", name},
		{"ip", "-n", name, "link", "set", "lo", "up"},
		{"ip", "-n", name, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0", "stp_state", "0", "forward_delay", "0"},
		{"ip", "-n", name, "link", "set", "br0", "up"},
	} {
		if err := run(s[0], s[1:]...); err != nil {
			return err
		}
	}
	return nil
}

// buildHosts builds hosts a few at a time (they are independent) and waits
// for their IPv6 link-local addresses.
func buildHosts(hosts []*Host) error {
	errs := make([]error, len(hosts))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i, h := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			errs[i] = h.build(filepath.Base(h.NetNS))
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	for _, h := range hosts {
		if err := h.waitLinkLocal(); err != nil {
			return err
		}
	}
	return nil
}

func (h *Host) build(name string) error {
	steps := [][]string{
		{"ip", "netns", "add", name},
		{"ip", "-n", name, "link", "set", "lo", "up"},
		{"ip", "link", "add", "eth0", "netns", name, "type", "veth", "peer", "name", h.port, "netns", h.swNS},
		{"ip", "-n", h.swNS, "link", "set", h.port, "master", "br0", "up"},
	}
	for _, s := range steps {
		if err := run(s[0], s[1:]...); err != nil {
			return err
		}
	}
	// No duplicate address detection: link-local addresses are usable at once.
	if err := h.Do(func() error {
		return os.WriteFile("/proc/sys/net/ipv6/conf/eth0/accept_dad", []byte("0"), 0)
	}); err != nil {
		return fmt.Errorf("%s: accept_dad: %w", h.Hostname, err)
	}
	steps = [][]string{
		{"ip", "-n", name, "link", "set", "eth0", "address", fmt.Sprintf("02:99:00:00:%02x:%02x", h.Index>>8, h.Index&0xff), "up"},
		{"ip", "-n", name, "addr", "add", h.Addr4.String() + "/24", "dev", "eth0"},
		{"ip", "-n", name, "route", "add", "224.0.0.0/4", "dev", "eth0"},
	}
	if h.Addr6.IsValid() {
		steps = append(steps, []string{"ip", "-n", name, "-6", "addr", "add", h.Addr6.String() + "/64", "dev", "eth0", "nodad"})
	}
	if h.gw4.IsValid() {
		steps = append(steps, []string{"ip", "-n", name, "route", "add", "default", "via", h.gw4.String()})
	}
	if h.gw6.IsValid() {
		steps = append(steps, []string{"ip", "-n", name, "-6", "route", "add", "default", "via", h.gw6.String(), "dev", "eth0"})
	}
	for _, s := range steps {
		if err := run(s[0], s[1:]...); err != nil {
			return err
		}
	}
	for _, f := range []string{h.UTS, h.Mnt} {
		if err := os.WriteFile(f, nil, 0o644); err != nil {
			return err
		}
	}
	// unshare persists the new namespaces by bind-mounting them on the files.
	return run("nsenter", "--net="+h.NetNS, "--",
		"unshare", "--uts="+h.UTS, "--mount="+h.Mnt, "--propagation", "private", "--",
		"sh", "-ec", fmt.Sprintf(`hostname %s
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
mkdir -p /run/diskd /run/lock
umount -l /sys 2>/dev/null || true
mount -t sysfs sysfs /sys`, h.Hostname))
}

func (h *Host) waitLinkLocal() error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		var ok bool
		err := h.Do(func() error {
			ifi, err := net.InterfaceByName("eth0")
			if err != nil {
				return err
			}
			addrs, err := ifi.Addrs()
			for _, a := range addrs {
				if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().IsLinkLocalUnicast() {
					ok = true
				}
			}
			return err
		})
		if err != nil || ok {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: no IPv6 link-local address on eth0", h.Hostname)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Prefix is the command line that runs a program on the host: append the
// program and its arguments.
func (h *Host) Prefix() []string {
	return []string{"nsenter", "--net=" + h.NetNS, "--uts=" + h.UTS, "--mount=" + h.Mnt, "--"}
}

// Command returns a command that runs name inside the host's namespaces.
func (h *Host) Command(name string, args ...string) *exec.Cmd {
	p := h.Prefix()
	cmd := exec.Command(p[0], append(append(p[1:len(p):len(p)], name), args...)...)
	// A test that dies must not leave the program running.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

// Do runs fn on an OS thread that is inside the host's network namespace,
// so sockets fn opens and interfaces it lists are the host's. Goroutines
// fn starts run elsewhere; sockets stay in the namespace they were made in.
func (h *Host) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		// The thread is never unlocked: when this goroutine ends the runtime
		// discards it rather than reuse a thread in a foreign namespace.
		runtime.LockOSThread()
		f, err := os.Open(h.NetNS)
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", h.NetNS, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// SetLink connects (up) or cuts off (down) the host at the switch.
func (h *Host) SetLink(up bool) error {
	state := "down"
	if up {
		state = "up"
	}
	return run("ip", "-n", h.swNS, "link", "set", h.port, state)
}

func run(name string, args ...string) error {
	var out bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out.Bytes()))
	}
	return nil
}

// removeHosts undoes Hosts for the set named base: kills what still runs
// inside (by PID), unmounts the namespace files, deletes the namespaces.
// Safe on a half-built set.
func removeHosts(base, dir string) error {
	var errs []error
	names, _ := filepath.Glob("/run/netns/" + base + "-*")
	var inodes []uint64
	for _, n := range names {
		if ino, err := nsInode(n); err == nil {
			inodes = append(inodes, ino)
		}
	}
	files, _ := filepath.Glob(filepath.Join(dir, "h*.uts"))
	for _, f := range files {
		if ino, err := nsInode(f); err == nil {
			inodes = append(inodes, ino)
		}
	}
	for range 2 {
		pids := pidsInNamespaces(inodes)
		if len(pids) == 0 {
			break
		}
		for _, p := range pids {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
		time.Sleep(100 * time.Millisecond)
	}
	mnts, _ := filepath.Glob(filepath.Join(dir, "h*.*"))
	for _, f := range mnts {
		_ = unix.Unmount(f, unix.MNT_DETACH)
	}
	for _, n := range names {
		if err := run("ip", "netns", "del", filepath.Base(n)); err != nil {
			errs = append(errs, err)
		}
	}
	_ = unix.Unmount(dir, unix.MNT_DETACH)
	if err := os.RemoveAll(dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func nsInode(path string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// pidsInNamespaces lists processes whose network or UTS namespace is one
// of inodes (nsfs inode numbers).
func pidsInNamespaces(inodes []uint64) []int {
	if len(inodes) == 0 {
		return nil
	}
	want := map[uint64]bool{}
	for _, i := range inodes {
		want[i] = true
	}
	self := os.Getpid()
	procs, _ := filepath.Glob("/proc/[0-9]*")
	var out []int
	for _, p := range procs {
		pid, err := strconv.Atoi(filepath.Base(p))
		if err != nil || pid == self {
			continue
		}
		for _, ns := range []string{"net", "uts"} {
			if ino, err := nsInode(filepath.Join(p, "ns", ns)); err == nil && want[ino] {
				out = append(out, pid)
				break
			}
		}
	}
	return out
}

var staleNetns = regexp.MustCompile(`^` + netnsPrefix + `(\d+)-(\d+)-`)

// collectStaleNetns removes host sets left behind by test processes that
// died without cleaning up (SIGKILL, a timeout).
func collectStaleNetns() {
	ents, _ := os.ReadDir("/run/netns")
	done := map[string]bool{}
	for _, e := range ents {
		m := staleNetns.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		pid, _ := strconv.Atoi(m[1])
		if pid == os.Getpid() || syscall.Kill(pid, 0) == nil {
			continue // ours, or a live test process
		}
		base := fmt.Sprintf("%s%s-%s", netnsPrefix, m[1], m[2])
		if !done[base] {
			done[base] = true
			_ = removeHosts(base, filepath.Join(os.TempDir(), "diskd-"+base))
		}
	}
}
