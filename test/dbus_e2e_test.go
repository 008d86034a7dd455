package test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	contract "github.com/diskd/diskd/dbus"
	"github.com/diskd/diskd/pkg/api"
	"github.com/diskd/diskd/pkg/testutil"
)

// TestDBusEndToEnd drives the real diskd on a private system-like bus with
// the tools people use, and diskctl --bus against diskctl on the socket.
func TestDBusEndToEnd(t *testing.T) {
	testutil.RequiresRoot(t)
	testutil.RequiresTool(t, "losetup", "mkfs.ext4", "blkid", "runuser")
	bus := startPolicyBus(t)
	img1 := testutil.LoopImage(t, 32, "mkfs.ext4", "-q", "-L", "DBUSE2E1")
	loop1 := testutil.AttachLoop(t, img1)
	img2 := testutil.LoopImage(t, 32, "mkfs.ext4", "-q", "-L", "DBUSE2E2")
	loop2 := newLoopDev(t) // where img2 will be attached, so --devices can allow it now

	d := testutil.StartDaemon(t, testutil.DaemonOptions{Args: []string{
		"--dbus", bus.Address, "--devices", loop1, "--devices", loop2}})
	waitBusName(t, bus)
	var lh api.Localhost
	if err := json.Unmarshal([]byte(d.MustCtl("localhost", "--json")), &lh); err != nil {
		t.Fatal(err)
	}
	p1 := string(imagePath(t, img1))
	p2 := string(imagePath(t, img2))
	machine := string(contract.MachinePath(lh.NodeID))
	testutil.Eventually(t, 20*time.Second, loop1+" on the bus", func() bool {
		out, err := busctlErr(bus, "tree", "--list", contract.BusName)
		return err == nil && strings.Contains(out, p1+"\n")
	})

	// busctl tree, introspect, get-property, GetManagedObjects; gdbus call.
	tree := busctl(t, bus, "tree", "--list", contract.BusName)
	for _, p := range []string{contract.RootPath, contract.ManagerPath, machine, p1} {
		if !strings.Contains(tree, p+"\n") {
			t.Errorf("busctl tree lacks %s:\n%s", p, tree)
		}
	}
	intro := busctl(t, bus, "introspect", contract.BusName, p1)
	for _, want := range []string{contract.BlockInterface, `"DBUSE2E1"`, `"ext4"`, contract.FilesystemInterface, ".MountPoints"} {
		if !strings.Contains(intro, want) {
			t.Errorf("busctl introspect %s lacks %s:\n%s", p1, want, intro)
		}
	}
	if got := strings.TrimSpace(busctl(t, bus, "get-property", contract.BusName, p1, contract.BlockInterface, "Present")); got != "b true" {
		t.Errorf("Present = %s", got)
	}
	if got := strings.TrimSpace(busctl(t, bus, "get-property", contract.BusName, p1, contract.BlockInterface, "Machine")); got != `o "`+machine+`"` {
		t.Errorf("Machine = %s", got)
	}
	gmo := busctl(t, bus, "--json=short", "call", contract.BusName, contract.RootPath, contract.ObjectManagerInterface, "GetManagedObjects")
	var reply struct {
		Data []map[string]map[string]map[string]struct{ Data any }
	}
	if err := json.Unmarshal([]byte(gmo), &reply); err != nil || len(reply.Data) != 1 {
		t.Fatalf("GetManagedObjects: %v %.300s", err, gmo)
	}
	if got := reply.Data[0][p1][contract.BlockInterface]["IdLabel"].Data; got != "DBUSE2E1" {
		t.Errorf("GetManagedObjects: %s IdLabel = %v", p1, got)
	}
	out, err := exec.Command("gdbus", "call", "--address", bus.Address, "--dest", contract.BusName, "--object-path",
		contract.ManagerPath, "--method", contract.ManagerInterface+".Where", "DBUSE2E1", "{}").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "(objectpath '"+machine+"', objectpath '"+p1+"', true, uint64 ") {
		t.Errorf("gdbus call Where: %v %s", err, out)
	}

	// dbus-monitor sees the attach as InterfacesAdded and the detach as
	// PropertiesChanged of Present.
	m := monitorBus(t, bus)
	// ... and so does `diskctl --bus watch`, the real binary.
	watch := startBusWatch(t, bus)
	if out, err := exec.Command("losetup", loop2, img2).CombinedOutput(); err != nil {
		t.Fatalf("losetup %s %s: %v %s (another test took the device?)", loop2, img2, err, out)
	}
	t.Cleanup(func() { testutil.DetachLoop(t, img2) })
	m.Wait(t, "InterfacesAdded for "+loop2, "path=/org/diskd/Diskd1; interface=org.freedesktop.DBus.ObjectManager; member=InterfacesAdded",
		`object path "`+p2+`"`, `string "DBUSE2E2"`)
	testutil.DetachLoop(t, img2)
	m.Wait(t, "PropertiesChanged Present=false for "+loop2, "path="+p2+"; interface=org.freedesktop.DBus.Properties; member=PropertiesChanged",
		`string "Present"`, "boolean false")
	// The detach comes well after the watch subscribed (it was seen on the
	// bus first), so its event must be there.
	testutil.Eventually(t, 10*time.Second, "diskctl --bus watch shows DBUSE2E2 gone", func() bool {
		for _, ev := range watch.events() {
			if ev.Disk != nil && ev.Disk.Label == "DBUSE2E2" && !ev.Disk.Present && ev.Kind == "changed" {
				return true
			}
		}
		return false
	})

	// Refresh is refused to a non-root caller, with a readable reason.
	ref, err := exec.Command("runuser", "-u", "nobody", "--", "busctl", "--address="+bus.Address, "call",
		contract.BusName, contract.ManagerPath, contract.ManagerInterface, "Refresh", "a{sv}", "0").CombinedOutput()
	if err == nil || !strings.Contains(string(ref), `refresh is for root and the members of group "diskd" (you are uid 65534)`) {
		t.Errorf("nobody's Refresh: %v %s", err, ref)
	}
	if !regexp.MustCompile(`msg="refused an admin action" .*component=authz action=refresh via=D-Bus .*uid=65534`).MatchString(d.Log()) {
		t.Errorf("the refusal is not logged")
	}
	// Root's goes through.
	busctl(t, bus, "call", contract.BusName, contract.ManagerPath, contract.ManagerInterface, "Refresh", "a{sv}", "0")
	// The bus serves the state it has signalled, a batch (10 ms) behind the
	// store: let it catch up with what the scan changed.
	testutil.Eventually(t, 10*time.Second, "the bus to agree with the socket", func() bool {
		so, _, _ := d.Ctl("list", "--json")
		bo, _, _ := d.Ctl("--bus", "--bus-address", bus.Address, "list", "--json")
		return so == bo
	})

	// diskctl --bus prints exactly what diskctl prints over the socket: the
	// same output, errors and exit codes, byte for byte (the store keeps
	// times to the microsecond, D-Bus's precision).
	viaBus := func(args ...string) string {
		return d.MustCtl(append([]string{"--bus", "--bus-address", bus.Address}, args...)...)
	}
	for _, args := range [][]string{
		{"list"}, {"list", "--json"}, {"where", "DBUSE2E2"}, {"where", "DBUSE2E2", "--json"}, {"where", "DBUSE2E1"},
		{"where", "NOSUCH"}, {"list", "nosuchhost"}, {"peers"}, {"peers", "--json"}, {"localhost"}, {"localhost", "--json"},
	} {
		so, se, sc := d.Ctl(args...)
		bo, be, bc := d.Ctl(append([]string{"--bus", "--bus-address", bus.Address}, args...)...)
		if so != bo || se != be || sc != bc {
			t.Errorf("diskctl %s differs:\nsocket (exit %d):\n%s%s\n--bus (exit %d):\n%s%s", strings.Join(args, " "), sc, so, se, bc, bo, be)
		}
	}
	// status: the same report, but uptime and the network counters move
	// between the two calls.
	upt := regexp.MustCompile(`up [0-9hms.]+|"uptime_sec":[0-9.e+-]+|(?m)^network counters: .*$|"counters":\{[^}]*\}`)
	for _, args := range [][]string{{"status"}, {"status", "--json"}} {
		s, b := upt.ReplaceAllString(d.MustCtl(args...), "UP"), upt.ReplaceAllString(viaBus(args...), "UP")
		if s != b {
			t.Errorf("diskctl %s differs:\nsocket:\n%s\n--bus:\n%s", strings.Join(args, " "), s, b)
		}
	}
	// With the socket unreachable, diskctl says so and uses the bus.
	_, diskctl := testutil.Binaries(t)
	cmd := exec.Command(diskctl, "--socket", "/nonexistent/diskd.sock", "--bus-address", bus.Address, "list")
	var fo, fe strings.Builder
	cmd.Stdout, cmd.Stderr = &fo, &fe
	if err := cmd.Run(); err != nil || fo.String() != d.MustCtl("list") || !strings.Contains(fe.String(), "unreachable; using D-Bus") {
		t.Errorf("fallback to the bus: %v\nstdout:\n%s\nstderr:\n%s", err, fo.String(), fe.String())
	}
	if st := status(t, d); !strings.HasPrefix(st.DBus, "connected to bus unix:path="+bus.Socket) {
		t.Errorf("status says dbus: %q", st.DBus)
	}
}

// TestDBusAbsentBus: with no bus at the configured address the daemon
// serves the socket, says so once, reports it in status, and takes the
// bus when it appears.
func TestDBusAbsentBus(t *testing.T) {
	testutil.RequiresRoot(t)
	bus := startPolicyBus(t)
	bus.Stop()
	d := testutil.StartDaemon(t, testutil.DaemonOptions{Args: []string{"--dbus", bus.Address, "--devices", "/dev/nonexistent"}})
	testutil.Eventually(t, 10*time.Second, "status to report no bus", func() bool {
		return strings.HasPrefix(status(t, d).DBus, "no bus unix:path="+bus.Socket)
	})
	d.MustCtl("list")
	time.Sleep(1500 * time.Millisecond) // past the first retry (after 1 s)
	if n := strings.Count(d.Log(), "no bus unix:path="); n != 1 {
		t.Errorf("no bus logged %d times, want once:\n%s", n, d.Log())
	}
	bus.Start()
	waitBusName(t, bus)
	if st := status(t, d); !strings.HasPrefix(st.DBus, "connected to bus") {
		t.Errorf("status after the bus came: %q", st.DBus)
	}
}

// busWatch is a running `diskctl --bus watch --json`.
type busWatch struct {
	mu    sync.Mutex
	lines []api.WatchEvent
}

func startBusWatch(t *testing.T, bus *testutil.DBus) *busWatch {
	t.Helper()
	_, diskctl := testutil.Binaries(t)
	cmd := exec.Command(diskctl, "--bus", "--bus-address", bus.Address, "watch", "--json")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w := &busWatch{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var ev api.WatchEvent
			if json.Unmarshal(sc.Bytes(), &ev) == nil {
				w.mu.Lock()
				w.lines = append(w.lines, ev)
				w.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait(); <-done })
	// Connected (and, a call later, subscribed) once the bus lists it.
	pid := fmt.Sprint(cmd.Process.Pid)
	testutil.Eventually(t, 10*time.Second, "diskctl watch on the bus", func() bool {
		out, err := busctlErr(bus, "list", "--no-legend")
		return err == nil && strings.Contains(" "+strings.Join(strings.Fields(out), " ")+" ", " "+pid+" ")
	})
	return w
}

func (w *busWatch) events() []api.WatchEvent {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.lines)
}
