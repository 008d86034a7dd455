package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// DBus is a private dbus-daemon configured like a system bus: default-deny
// policy (only the bus driver may be called, nobody may own names), an
// <includedir> for policy files (PolicyDir) and a <servicedir> for
// activation files (ServiceDir). Its socket is reachable by every local
// user, so `runuser -u nobody -- busctl --address=...` is a real non-root
// caller.
type DBus struct {
	// Address is the bus address (unix:path=...), for godbus, busctl
	// --address, gdbus --address and dbus-monitor --address.
	Address    string
	Dir        string
	PolicyDir  string
	ServiceDir string
	Socket     string

	t    testing.TB
	conf string
	cmd  *exec.Cmd
	done chan struct{}
}

// StartDBus starts a private bus and stops it (by its PID) at cleanup.
func StartDBus(t testing.TB) *DBus {
	t.Helper()
	// The bus mirrors the system bus's policy, under which only root owns
	// org.diskd.Diskd1 and non-root callers are played with runuser.
	if os.Geteuid() != 0 {
		t.Skip("skipping: the system-like test bus lets only root own org.diskd.Diskd1; CI runs as root")
	}
	RequiresTool(t, "dbus-daemon")
	// Not t.TempDir: that is mode 0700 under a long path; the socket must
	// be reachable by nobody and its path short (108 bytes at most).
	dir, err := os.MkdirTemp("", "diskd-dbus-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	b := &DBus{
		Dir:        dir,
		PolicyDir:  filepath.Join(dir, "system.d"),
		ServiceDir: filepath.Join(dir, "services"),
		Socket:     filepath.Join(dir, "system_bus_socket"),
		conf:       filepath.Join(dir, "bus.conf"),
		t:          t,
	}
	b.Address = "unix:path=" + b.Socket
	for _, d := range []string{b.PolicyDir, b.ServiceDir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	conf := fmt.Sprintf(busConf, b.Socket, b.ServiceDir, b.PolicyDir)
	if err := os.WriteFile(b.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		b.Stop()
		if t.Failed() {
			log, _ := os.ReadFile(filepath.Join(dir, "dbus-daemon.log"))
			t.Logf("dbus-daemon log:\n%s", log)
		}
	})
	b.Start()
	return b
}

// The policy of a Debian system bus, minus what a test does not need.
const busConf = `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=%s</listen>
  <auth>EXTERNAL</auth>
  <servicedir>%s</servicedir>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Peer"/>
    <!-- dbus-monitor needs this, as on a real system bus for root -->
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Monitoring"/>
  </policy>
  <includedir>%s</includedir>
</busconfig>
`

// Start (re)starts the daemon at the same address; StartDBus calls it.
func (b *DBus) Start() {
	t := b.t
	t.Helper()
	if b.cmd != nil {
		select {
		case <-b.done:
		default:
			t.Fatal("dbus-daemon is already running")
		}
	}
	os.Remove(b.Socket)
	// Its output goes to files, not pipes: services it activates inherit
	// its stdout and stderr, and a pipe they hold open would outlive it.
	addrFile := filepath.Join(b.Dir, "address")
	os.Remove(addrFile)
	out, err := os.Create(addrFile)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	logf, err := os.OpenFile(filepath.Join(b.Dir, "dbus-daemon.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command("dbus-daemon", "--config-file="+b.conf, "--nofork", "--print-address=1", "--nopidfile")
	cmd.Env = cleanEnv()
	cmd.Stdout, cmd.Stderr = out, logf
	// No Pdeathsig: it fires when the OS thread that started the child
	// ends, and Go ends threads that a goroutine left locked (as the
	// netns helpers do), which killed the bus in the middle of tests.
	// Cleanup stops it by PID.
	if err := cmd.Start(); err != nil {
		t.Fatalf("start dbus-daemon: %v", err)
	}
	b.cmd, b.done = cmd, make(chan struct{})
	go func() {
		cmd.Wait()
		close(b.done)
	}()
	// It prints its address once it listens.
	deadline := time.Now().Add(10 * time.Second)
	for {
		a, _ := os.ReadFile(addrFile)
		if strings.HasSuffix(string(a), "\n") {
			if !strings.HasPrefix(string(a), "unix:path="+b.Socket) {
				b.Stop()
				t.Fatalf("dbus-daemon printed address %q", a)
			}
			return
		}
		select {
		case <-b.done:
			log, _ := os.ReadFile(filepath.Join(b.Dir, "dbus-daemon.log"))
			t.Fatalf("dbus-daemon exited: %s", log)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			b.Stop()
			t.Fatal("dbus-daemon did not print its address within 10 s")
		}
	}
}

// Stop kills the daemon (by PID) and waits, and stops its descendants (by
// PID): services it is still activating. A service that took its name is
// no longer a descendant (dbus-daemon lets go of it); the test that
// activated it stops it.
func (b *DBus) Stop() {
	if b.cmd == nil {
		return
	}
	select {
	case <-b.done:
		return
	default:
	}
	kids := descendants(b.cmd.Process.Pid)
	b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.done:
	case <-time.After(5 * time.Second):
		b.cmd.Process.Kill()
		<-b.done
	}
	for _, pid := range kids {
		syscall.Kill(pid, syscall.SIGTERM)
	}
	for _, pid := range kids {
		for i := 0; i < 100 && syscall.Kill(pid, 0) == nil; i++ {
			time.Sleep(50 * time.Millisecond)
		}
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

// descendants lists the processes below pid (children, grandchildren...).
func descendants(pid int) []int {
	parent := map[int]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces and parentheses.
		s := string(stat)
		if i := strings.LastIndexByte(s, ')'); i >= 0 {
			f := strings.Fields(s[i+1:])
			if len(f) >= 2 {
				if pp, err := strconv.Atoi(f[1]); err == nil {
					parent[p] = pp
				}
			}
		}
	}
	var out []int
	for p := range parent {
		for q := parent[p]; q > 1; q = parent[q] {
			if q == pid {
				out = append(out, p)
				break
			}
		}
	}
	return out
}

// PID is the dbus-daemon's process ID.
func (b *DBus) PID() int { return b.cmd.Process.Pid }

// InstallPolicy copies a policy file into PolicyDir and reloads.
func (b *DBus) InstallPolicy(src string) {
	b.t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		b.t.Fatal(err)
	}
	b.WritePolicy(filepath.Base(src), string(data))
}

// WritePolicy writes a policy file into PolicyDir and reloads.
func (b *DBus) WritePolicy(name, content string) {
	b.t.Helper()
	if err := os.WriteFile(filepath.Join(b.PolicyDir, name), []byte(content), 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.Reload()
}

// WriteService writes an activation file into ServiceDir and reloads.
func (b *DBus) WriteService(name, content string) {
	b.t.Helper()
	if err := os.WriteFile(filepath.Join(b.ServiceDir, name), []byte(content), 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.Reload()
}

// Reload makes the daemon re-read its configuration (ReloadConfig waits
// until it has).
func (b *DBus) Reload() {
	b.t.Helper()
	RequiresTool(b.t, "dbus-send")
	// --bus registers with Hello; --address/--peer would not, and the
	// bus refuses anything else from an unregistered client.
	out, err := exec.Command("dbus-send", "--bus="+b.Address, "--print-reply", "--dest=org.freedesktop.DBus",
		"/org/freedesktop/DBus", "org.freedesktop.DBus.ReloadConfig").CombinedOutput()
	if err != nil {
		b.t.Fatalf("ReloadConfig: %v: %s", err, out)
	}
}

// cleanEnv is the environment without any bus address, so nothing a bus
// starts talks to the developer's own buses by accident.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DBUS_") {
			env = append(env, kv)
		}
	}
	return env
}
