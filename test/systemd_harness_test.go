// Package test holds diskd's root integration tests: the installed product
// (units, packages) under a real systemd. They drive real tools and clean up
// everything they create, also on failure.
package test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/diskd/diskd/pkg/testutil"
)

// run executes a command, fails the test when it fails, and returns its
// combined output.
func run(t testing.TB, args ...string) string {
	t.Helper()
	out, err := runCtx(context.Background(), args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// runCtx executes a command and returns its combined output; the error
// quotes the command and its output.
func runCtx(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	var buf bytes.Buffer
	cmd.Stdout = &buf
	cmd.Stderr = &buf
	if err := cmd.Run(); err != nil {
		return buf.String(), fmt.Errorf("%s: %w\n%s", strings.Join(args, " "), err, buf.String())
	}
	return buf.String(), nil
}

// attachLoop makes an ext4 image labelled label in dir, attaches it as a
// loop device and returns the device path. Cleanup detaches only devices
// backed by this image (never losetup -D).
func attachLoop(t testing.TB, dir, label string, size int64) string {
	t.Helper()
	img := filepath.Join(dir, label+".img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	run(t, "mkfs.ext4", "-q", "-L", label, img)
	dev := strings.TrimSpace(run(t, "losetup", "-f", "--show", img))
	t.Cleanup(func() { detachLoops(t, img) })
	return dev
}

// detachLoops detaches every loop device whose backing file is img.
func detachLoops(t testing.TB, img string) {
	out, err := runCtx(context.Background(), "losetup", "-n", "-O", "NAME", "-j", img)
	if err != nil {
		t.Errorf("list loop devices of %s: %v", img, err)
		return
	}
	for _, dev := range strings.Fields(out) {
		if _, err := runCtx(context.Background(), "losetup", "-d", dev); err != nil {
			t.Errorf("detach %s: %v", dev, err)
		}
	}
}

// ---- Debian root tree for containers, cached between runs ----

// rootSpec is everything that goes into the cached root tree; its hash
// names the cache directory, so changing it builds a new tree.
var rootSpec = struct {
	Suite, Variant string
	Include        []string
	Fixups         string
}{
	Suite:   "bookworm",
	Variant: "minbase",
	Include: []string{"dbus", "iproute2", "systemd", "systemd-sysv"},
	// The hostname then follows nspawn --machine=NAME.
	Fixups: "rm -f /etc/hostname",
}

// rootCacheDir holds the trees; override with DISKD_TEST_CACHE.
func rootCacheDir() string {
	if d := os.Getenv("DISKD_TEST_CACHE"); d != "" {
		return d
	}
	return "/var/cache/diskd-test"
}

func rootKey() string {
	h := sha256.New()
	fmt.Fprintf(h, "suite=%s\nvariant=%s\ninclude=%s\nfixups=%s\n",
		rootSpec.Suite, rootSpec.Variant, strings.Join(rootSpec.Include, ","), rootSpec.Fixups)
	return hex.EncodeToString(h.Sum(nil))[:12]
}

// rootfs returns a Debian root tree with systemd and D-Bus for nspawn,
// building it with debootstrap on first use (about a minute; 250 MB) and
// reusing it afterwards. Containers only ever see it through an overlay,
// so it stays pristine. A file lock serialises concurrent builders.
func rootfs(t testing.TB) string {
	t.Helper()
	base := rootCacheDir()
	dir := filepath.Join(base, rootSpec.Suite+"-"+rootKey())
	done := filepath.Join(dir, ".diskd-test-complete")
	if _, err := os.Stat(done); err == nil {
		return dir
	}
	testutil.RequiresTool(t, "debootstrap")
	if err := os.MkdirAll(base, 0o755); err != nil {
		t.Fatal(err)
	}
	lock, err := os.OpenFile(dir+".lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if _, err := os.Stat(done); err == nil {
		return dir // another test process built it while we waited
	}
	mirror := debianMirror(t)
	tmp := dir + ".tmp"
	os.RemoveAll(tmp)
	os.RemoveAll(dir)
	t.Logf("building the container root tree %s with debootstrap from %s (once; about a minute)", dir, mirror)
	run(t, "debootstrap", "--variant="+rootSpec.Variant, "--include="+strings.Join(rootSpec.Include, ","),
		rootSpec.Suite, tmp, mirror)
	run(t, "chroot", tmp, "sh", "-ec", rootSpec.Fixups)
	if err := os.WriteFile(filepath.Join(tmp, ".diskd-test-complete"), []byte(rootKey()+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

// debianMirror is the Debian mirror this machine's apt already uses.
func debianMirror(t testing.TB) string {
	t.Helper()
	files, _ := filepath.Glob("/etc/apt/sources.list.d/*")
	files = append([]string{"/etc/apt/sources.list"}, files...)
	re := regexp.MustCompile(`(?m)^\s*(?:deb|URIs:)\s+(?:\[[^\]]*\]\s+)?(\S+/debian)/?\s`)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if m := re.FindSubmatch(b); m != nil {
			return string(m[1])
		}
	}
	return "http://deb.debian.org/debian"
}

// ---- hosts: network namespaces joined by a bridge ----

// network is n hosts (network namespaces PREFIX-h1..n, eth0 10.99.0.i/24,
// IPv6 link-local, 224.0.0.0/4 routed on eth0) on a bridge that lives in
// its own namespace PREFIX-sw. Nothing is added to the machine's own
// network namespace, so multicast never leaves the test's namespaces.
type network struct {
	prefix string
	n      int
}

func newNetwork(t testing.TB, prefix string, n int) *network {
	t.Helper()
	nw := &network{prefix: prefix, n: n}
	sw := prefix + "-sw"
	t.Cleanup(func() {
		for i := 1; i <= n; i++ {
			runCtx(context.Background(), "ip", "netns", "del", nw.ns(i))
		}
		runCtx(context.Background(), "ip", "netns", "del", sw)
	})
	run(t, "ip", "netns", "add", sw)
	run(t, "ip", "-n", sw, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0", "stp_state", "0", "forward_delay", "0")
	run(t, "ip", "-n", sw, "link", "set", "br0", "up")
	for i := 1; i <= n; i++ {
		h, p := nw.ns(i), fmt.Sprintf("p%d", i)
		run(t, "ip", "netns", "add", h)
		run(t, "ip", "-n", h, "link", "set", "lo", "up")
		run(t, "ip", "link", "add", "eth0", "netns", h, "type", "veth", "peer", "name", p, "netns", sw)
		run(t, "ip", "-n", sw, "link", "set", p, "master", "br0", "up")
		run(t, "ip", "netns", "exec", h, "sysctl", "-qw", "net.ipv6.conf.eth0.accept_dad=0")
		run(t, "ip", "-n", h, "link", "set", "eth0", "up")
		run(t, "ip", "-n", h, "addr", "add", fmt.Sprintf("10.99.0.%d/24", i), "dev", "eth0")
		run(t, "ip", "-n", h, "route", "add", "224.0.0.0/4", "dev", "eth0")
	}
	return nw
}

func (nw *network) ns(i int) string { return fmt.Sprintf("%s-h%d", nw.prefix, i) }

// ---- containers: systemd as PID 1 under systemd-nspawn ----

// container is one booted systemd-nspawn container. Its root is an overlay
// of the cached tree with a writable layer on disk (not --volatile's
// tmpfs), so what the test installs survives a reboot of the container.
type container struct {
	t       testing.TB // for cleanup's reports only; methods that fail take their own
	name    string
	dir     string   // overlay upper, work and merged root
	args    []string // systemd-nspawn arguments, reused on reboot
	cgroups []string // our own cgroup per hierarchy
	cmd     *exec.Cmd
	exited  chan struct{} // closed when systemd-nspawn exits
	exitErr error
	log     *syncBuffer
	leader  int // PID of the container's systemd, in our namespace
}

// cgroupRoots returns the mount points of the cgroup2 and name=systemd
// hierarchies. Without systemd on the host, nspawn --keep-unit would put
// every container in the caller's cgroup; each gets its own instead.
func cgroupRoots(t testing.TB) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var roots []string
	for _, line := range strings.Split(string(b), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		f, p := strings.Fields(pre), strings.Fields(post)
		if len(f) < 5 || len(p) < 3 {
			continue
		}
		if p[0] == "cgroup2" || (p[0] == "cgroup" && strings.Contains(p[2], "name=systemd")) {
			roots = append(roots, f[4])
		}
	}
	return roots
}

// bootContainer starts a container named name on root with extra nspawn
// arguments and waits until its systemd reports the system running.
// Cleanup powers it off (or kills systemd-nspawn by PID), unmounts the
// overlay and removes its cgroups and files, also when the test fails.
func bootContainer(t testing.TB, name, root string, extra ...string) *container {
	t.Helper()
	c := &container{t: t, name: name, dir: t.TempDir()}
	for _, d := range []string{"upper", "work", "merged"} {
		if err := os.Mkdir(filepath.Join(c.dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	merged := filepath.Join(c.dir, "merged")
	run(t, "mount", "-t", "overlay", "overlay", "-o",
		fmt.Sprintf("lowerdir=%s,upperdir=%s/upper,workdir=%s/work", root, c.dir, c.dir), merged)
	for _, r := range cgroupRoots(t) {
		cg := filepath.Join(r, "diskd-test-"+name)
		if err := os.MkdirAll(cg, 0o755); err != nil {
			t.Fatal(err)
		}
		c.cgroups = append(c.cgroups, cg)
	}
	t.Cleanup(c.destroy)
	c.args = append([]string{"--quiet", "--boot", "--register=no", "--keep-unit", "--console=pipe",
		"--machine=" + name, "--directory=" + merged}, extra...)
	c.start(t)
	return c
}

// start runs systemd-nspawn (in the container's own cgroups) and waits
// for the boot to finish.
func (c *container) start(t testing.TB) {
	t.Helper()
	// The shell moves itself into the cgroups, then becomes systemd-nspawn.
	script := `for cg in $CGROUPS; do echo $$ > "$cg/cgroup.procs" || exit 1; done; exec systemd-nspawn "$@"`
	c.cmd = exec.Command("sh", append([]string{"-c", script, "sh"}, c.args...)...)
	c.cmd.Env = append(os.Environ(), "CGROUPS="+strings.Join(c.cgroups, " "))
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	c.log = &syncBuffer{}
	c.cmd.Stdout, c.cmd.Stderr = c.log, c.log
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c.exited = make(chan struct{})
	go func() { c.exitErr = c.cmd.Wait(); close(c.exited) }()

	deadline := time.Now().Add(60 * time.Second)
	state := ""
	for time.Now().Before(deadline) {
		select {
		case <-c.exited:
			t.Fatalf("container %s: systemd-nspawn exited (%v):\n%s", c.name, c.exitErr, c.log)
		default:
		}
		if c.leader == 0 {
			c.leader = childOf(c.cmd.Process.Pid)
		}
		if c.leader != 0 {
			state, _ = c.exec("systemctl", "is-system-running")
			state = strings.TrimSpace(state)
			if state == "running" || state == "degraded" {
				break
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if state != "running" {
		failed, _ := c.exec("systemctl", "--failed", "--no-pager")
		t.Fatalf("container %s did not boot (state %q):\n%s\n%s", c.name, state, failed, c.log)
	}
}

// syncBuffer is a bytes.Buffer safe to read while exec copies into it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// childOf returns the PID of a child of pid (nspawn's only child is the
// container's init), or 0.
func childOf(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return 0
	}
	// systemd-nspawn's first child is a short-lived helper that forks the
	// container's init and exits; the leader is the child that is PID 1 in
	// its own PID namespace (under load the helper was taken for it).
	for _, f := range strings.Fields(string(b)) {
		n, _ := strconv.Atoi(f)
		if isNamespaceInit(n) {
			return n
		}
		if c := childOf(n); c != 0 {
			return c
		}
	}
	return 0
}

// isNamespaceInit reports whether pid is PID 1 of its PID namespace.
func isNamespaceInit(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 3 && f[0] == "NSpid:" {
			return f[len(f)-1] == "1"
		}
	}
	return false
}

// exec runs a command inside the container (all its namespaces) with a
// clean environment and returns its combined output.
func (c *container) exec(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"-t", strconv.Itoa(c.leader), "-a", "--"}, args...)...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C.UTF-8", "TERM=dumb",
		"SYSTEMD_PAGER=", "SYSTEMD_COLORS=0"}
	// Its own process group: a stray `kill 0` in the container must not
	// reach the test binary.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %s: %w\n%s", c.name, strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// must is exec that fails the test on error.
func (c *container) must(t testing.TB, args ...string) string {
	t.Helper()
	out, err := c.exec(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// reboot reboots the container: its systemd asks systemd-nspawn to
// restart it (exit status 133, what systemd-nspawn@.service restarts on),
// and the test starts it again on the same root.
func (c *container) reboot(t testing.TB) {
	t.Helper()
	c.exec("systemctl", "reboot") // the connection may drop: judged by the exit below
	select {
	case <-c.exited:
	case <-time.After(60 * time.Second):
		t.Fatalf("container %s did not go down for reboot:\n%s", c.name, c.log)
	}
	var ee *exec.ExitError
	if !errors.As(c.exitErr, &ee) || ee.ExitCode() != 133 {
		t.Fatalf("container %s: systemd-nspawn exited %v on reboot, want status 133:\n%s", c.name, c.exitErr, c.log)
	}
	os.RemoveAll("/run/systemd/nspawn/propagate/" + c.name)
	c.leader = 0
	c.start(t)
}

// destroy powers the container off (killing systemd-nspawn by PID if it
// does not stop) and removes everything made for it.
func (c *container) destroy() {
	if c.cmd != nil && c.cmd.Process != nil {
		select {
		case <-c.exited:
		default:
			if c.leader != 0 {
				c.exec("systemctl", "poweroff", "--no-block")
			}
			select {
			case <-c.exited:
			case <-time.After(15 * time.Second):
				c.t.Logf("container %s did not power off; killing systemd-nspawn (pid %d)", c.name, c.cmd.Process.Pid)
				c.cmd.Process.Kill()
				<-c.exited
			}
		}
	}
	os.RemoveAll("/run/systemd/nspawn/propagate/" + c.name)
	merged := filepath.Join(c.dir, "merged")
	if _, err := runCtx(context.Background(), "umount", merged); err != nil {
		if _, err := runCtx(context.Background(), "umount", "--lazy", merged); err != nil {
			c.t.Errorf("unmount %s: %v", merged, err)
		}
	}
	// Killing systemd-nspawn leaves the container's init and its services
	// running: end whatever is still in the container's cgroups.
	for _, cg := range c.cgroups {
		if n := killCgroup(cg); n > 0 {
			c.t.Logf("container %s: killed %d processes left in %s", c.name, n, cg)
		}
		removeCgroup(cg)
	}
}

// killCgroup SIGKILLs every process in a cgroup tree (by PID, from
// cgroup.procs) until none is left, and says how many it killed.
func killCgroup(cg string) int {
	seen := make(map[int]bool)
	for try := 0; try < 50; try++ {
		var pids []int
		filepath.WalkDir(cg, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				b, _ := os.ReadFile(filepath.Join(p, "cgroup.procs"))
				for _, f := range strings.Fields(string(b)) {
					if n, err := strconv.Atoi(f); err == nil {
						pids = append(pids, n)
					}
				}
			}
			return nil
		})
		if len(pids) == 0 {
			break
		}
		for _, pid := range pids {
			if syscall.Kill(pid, syscall.SIGKILL) == nil {
				seen[pid] = true
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return len(seen)
}

// removeCgroup removes a cgroup and its children, deepest first.
func removeCgroup(cg string) {
	var dirs []string
	filepath.WalkDir(cg, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		os.Remove(dirs[i])
	}
}

// buildDeb runs `make package` into a directory of the test's and returns
// the .deb.
func buildDeb(t testing.TB) string {
	t.Helper()
	testutil.RequiresTool(t, "make")
	dir := t.TempDir()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("make", "--no-print-directory", "package",
		"BIN="+filepath.Join(dir, "bin"), "PKG_DIST="+filepath.Join(dir, "dist"))
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make package: %v\n%s", err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(dir, "dist", "diskd_*.deb"))
	if len(debs) != 1 {
		t.Fatalf("make package made %q", debs)
	}
	return debs[0]
}
