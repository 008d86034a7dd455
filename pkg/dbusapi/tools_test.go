package dbusapi

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"

	contract "github.com/diskd/diskd/dbus"
	"github.com/diskd/diskd/pkg/disk"
	"github.com/diskd/diskd/pkg/testutil"
)

// These tests drive the service with the tools people use: busctl, gdbus.

func (e *env) busctl(args ...string) string {
	e.t.Helper()
	return run(e.t, "busctl", append([]string{"--address=" + e.bus.Address}, args...)...)
}

// waitPublished waits until the object manager has told the bus about p.
func (e *env) waitPublished(p string) {
	e.t.Helper()
	waitFor(e.t, p+" to be published", func() bool {
		out, err := runErr("busctl", "--address="+e.bus.Address, "tree", "--list", contract.BusName)
		return err == nil && strings.Contains(out, p+"\n")
	})
}

func TestBusctlAndGdbus(t *testing.T) {
	testutil.RequiresTool(t, "busctl", "gdbus")
	e := startEnv(t, Config{})
	e.fixture()
	loop3 := string(uuidPath("1111-2222"))
	dm0 := string(blockAt(localID, disk.Disk{Name: "dm-0", Size: 1 << 30}))
	sdb1 := string(uuidPath("3333-4444"))
	e.waitPublished(sdb1)

	t.Run("tree", func(t *testing.T) {
		got := e.busctl("tree", "--list", contract.BusName)
		want := []string{"/", "/org", "/org/diskd", "/org/diskd/Diskd1", contract.ManagerPath,
			contract.BlockDevicesPath, loop3, dm0, sdb1, contract.MachinesPath,
			string(contract.MachinePath(localID)), string(contract.MachinePath(peerID))}
		for _, p := range want {
			if !strings.Contains(got, p+"\n") {
				t.Errorf("busctl tree lacks %s:\n%s", p, got)
			}
		}
		if strings.Count(got, "\n") != len(want) {
			t.Errorf("busctl tree lists %d paths, want %d:\n%s", strings.Count(got, "\n"), len(want), got)
		}
	})

	t.Run("introspect", func(t *testing.T) {
		got := e.busctl("introspect", contract.BusName, loop3)
		for _, want := range []string{
			"org.diskd.Diskd1.Block", ".IdLabel", `"BACKUP"`, ".Device", "ay", ".Present", "true",
			"org.diskd.Diskd1.Filesystem", ".MountPoints", "aay", "org.freedesktop.DBus.Properties",
		} {
			if !strings.Contains(got, want) {
				t.Errorf("busctl introspect %s lacks %q:\n%s", loop3, want, got)
			}
		}
		// dm-0 holds no filesystem, so no Filesystem interface.
		if got := e.busctl("introspect", contract.BusName, dm0); strings.Contains(got, "Filesystem") {
			t.Errorf("dm-0 (crypto) has a Filesystem interface:\n%s", got)
		}
		// Argument names come through (gdbus shows them; busctl does not).
		gi := run(t, "gdbus", "introspect", "--address", e.bus.Address, "--dest", contract.BusName, "--object-path", contract.ManagerPath)
		for _, want := range []string{"Where(in  s label_or_uuid,", "out o machine,", "out t last_seen_usec", "ResolveDevice(in  a{sv} devspec,"} {
			if !strings.Contains(gi, want) {
				t.Errorf("gdbus introspect lacks %q:\n%s", want, gi)
			}
		}
	})

	t.Run("get-property", func(t *testing.T) {
		for _, tc := range []struct{ path, iface, prop, want string }{
			{loop3, contract.BlockInterface, "Present", "b true"},
			{loop3, contract.BlockInterface, "IdLabel", `s "BACKUP"`},
			{loop3, contract.BlockInterface, "Size", "t 67108864"},
			{loop3, contract.BlockInterface, "Device", "ay 11 47 100 101 118 47 108 111 111 112 51 0"},
			{loop3, contract.FilesystemInterface, "MountPoints", "aay 1 12 47 109 110 116 47 98 97 99 107 117 112 0"},
			{sdb1, contract.BlockInterface, "Machine", `o "` + string(contract.MachinePath(peerID)) + `"`},
			{string(contract.MachinePath(peerID)), contract.MachineInterface, "Name", `s "beta"`},
			{string(contract.MachinePath(localID)), contract.MachineInterface, "Disks", "u 2"},
			{contract.ManagerPath, contract.ManagerInterface, "NodeId", `s "` + string(localID) + `"`},
		} {
			if got := strings.TrimSpace(e.busctl("get-property", contract.BusName, tc.path, tc.iface, tc.prop)); got != tc.want {
				t.Errorf("get-property %s %s: %s, want %s", tc.path, tc.prop, got, tc.want)
			}
		}
	})

	t.Run("GetManagedObjects", func(t *testing.T) {
		out := e.busctl("--json=short", "call", contract.BusName, contract.RootPath, contract.ObjectManagerInterface, "GetManagedObjects")
		var reply struct {
			Type string
			Data []map[string]map[string]map[string]struct {
				Type string
				Data any
			}
		}
		if err := json.Unmarshal([]byte(out), &reply); err != nil {
			t.Fatalf("busctl --json: %v\n%s", err, out)
		}
		if reply.Type != "a{oa{sa{sv}}}" || len(reply.Data) != 1 {
			t.Fatalf("reply type %s, %d values", reply.Type, len(reply.Data))
		}
		objs := reply.Data[0]
		if len(objs) != 6 { // manager, 2 machines, 3 disks
			t.Errorf("%d objects, want 6", len(objs))
		}
		if v := objs[sdb1][contract.BlockInterface]["IdLabel"]; v.Type != "s" || v.Data != "PHOTOS" {
			t.Errorf("sdb1 IdLabel = %+v", v)
		}
		if _, ok := objs[loop3][contract.FilesystemInterface]; !ok {
			t.Error("loop3 lacks Filesystem")
		}
		if v := objs[contract.ManagerPath][contract.ManagerInterface]["Version"]; v.Data != "test-1" {
			t.Errorf("Manager Version = %+v", v)
		}
	})

	t.Run("gdbus call", func(t *testing.T) {
		got := run(t, "gdbus", "call", "--address", e.bus.Address, "--dest", contract.BusName,
			"--object-path", contract.ManagerPath, "--method", contract.ManagerInterface+".Where", "PHOTOS", "{}")
		want := "(objectpath '" + string(contract.MachinePath(peerID)) + "', objectpath '" + sdb1 + "', true, uint64 "
		if !strings.HasPrefix(got, want) {
			t.Errorf("gdbus call Where PHOTOS = %s, want %s...", got, want)
		}
		got = run(t, "gdbus", "call", "--address", e.bus.Address, "--dest", contract.BusName,
			"--object-path", contract.ManagerPath, "--method", contract.ManagerInterface+".GetBlockDevices", "{'machine': <'beta'>}")
		if strings.TrimSpace(got) != "([objectpath '"+sdb1+"'],)" {
			t.Errorf("GetBlockDevices machine=beta: %s", got)
		}
	})

	t.Run("readable errors", func(t *testing.T) {
		out, err := exec.Command("busctl", "--address="+e.bus.Address, "call", contract.BusName, contract.ManagerPath,
			contract.ManagerInterface, "Where", "sa{sv}", "NOSUCH", "0").CombinedOutput()
		if err == nil || !strings.Contains(string(out), `"NOSUCH": not known on this network`) {
			t.Errorf("Where NOSUCH: %v %s", err, out)
		}
	})
}
