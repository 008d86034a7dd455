package dbusapi

import (
	"errors"
	"os/exec"
	"strings"
	"testing"

	"github.com/godbus/dbus/v5"

	contract "github.com/diskd/diskd/dbus"
	"github.com/diskd/diskd/pkg/testutil"
)

// asNobody runs a command as uid 65534 and returns its combined output.
func asNobody(t *testing.T, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command("runuser", append([]string{"-u", "nobody", "--"}, args...)...).CombinedOutput()
	return string(out), err
}

// TestRefreshAndPingAreForRoot: a non-root caller reads everything but is
// refused Refresh and Ping with NotAuthorized, and each decision is logged.
func TestRefreshAndPingAreForRoot(t *testing.T) {
	testutil.RequiresRoot(t)
	testutil.RequiresTool(t, "runuser", "busctl", "gdbus")
	e := startEnv(t, Config{})
	e.fixture()
	addr := "--address=" + e.bus.Address

	// Reads are open.
	out, err := asNobody(t, "busctl", addr, "get-property", contract.BusName, contract.ManagerPath, contract.ManagerInterface, "NodeName")
	if err != nil || strings.TrimSpace(out) != `s "alpha"` {
		t.Fatalf("nobody reading NodeName: %v %s", err, out)
	}
	out, err = asNobody(t, "busctl", addr, "call", contract.BusName, contract.RootPath, contract.ObjectManagerInterface, "GetManagedObjects")
	if err != nil || !strings.Contains(out, "BACKUP") {
		t.Fatalf("nobody calling GetManagedObjects: %v %.200s", err, out)
	}

	// The command, refused.
	out, err = asNobody(t, "busctl", addr, "call", contract.BusName, contract.ManagerPath, contract.ManagerInterface, "Refresh", "a{sv}", "0")
	if err == nil || !strings.Contains(out, "Refresh is for root only (caller uid 65534)") {
		t.Errorf("nobody calling Refresh: err=%v out=%s", err, out)
	}
	// gdbus shows the error name.
	out, err = asNobody(t, "gdbus", "call", "--address", e.bus.Address, "--dest", contract.BusName,
		"--object-path", contract.ManagerPath, "--method", contract.ManagerInterface+".Ping", "{}")
	if err == nil || !strings.Contains(out, contract.ErrorNotAuthorized) {
		t.Errorf("nobody calling Ping: err=%v out=%s", err, out)
	}
	if n := e.be.refreshes.Load() + e.be.pings.Load(); n != 0 {
		t.Errorf("the backend ran %d actions for nobody", n)
	}
	for _, want := range []string{
		`msg="refused a D-Bus call: caller is not root" component=dbus method=Refresh`,
		`msg="refused a D-Bus call: caller is not root" component=dbus method=Ping`,
		"uid=65534",
	} {
		if !strings.Contains(e.logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, e.logs)
		}
	}

	// Root may.
	if got := strings.TrimSpace(e.busctl("call", contract.BusName, contract.ManagerPath, contract.ManagerInterface, "Ping", "a{sv}", "0")); got != "u 2" {
		t.Errorf("root Ping = %q, want u 2", got)
	}
	e.busctl("call", contract.BusName, contract.ManagerPath, contract.ManagerInterface, "Refresh", "a{sv}", "0")
	if e.be.refreshes.Load() != 1 || e.be.pings.Load() != 1 {
		t.Errorf("backend saw %d refreshes, %d pings; want 1 each", e.be.refreshes.Load(), e.be.pings.Load())
	}
	if !strings.Contains(e.logs.String(), `msg="allowed a D-Bus call" component=dbus method=Refresh`) {
		t.Errorf("allowed Refresh not logged:\n%s", e.logs)
	}

	// The bus policy itself: interfaces diskd does not list are refused
	// to non-root callers before they reach the daemon.
	out, err = asNobody(t, "busctl", addr, "call", contract.BusName, contract.ManagerPath, "org.example.Other", "Poke")
	if err == nil || !strings.Contains(strings.ToLower(out), "denied") {
		t.Errorf("policy let nobody call an unlisted interface: %v %s", err, out)
	}
}

func dbusErr(t *testing.T, err error) (name, msg string) {
	t.Helper()
	var de dbus.Error
	if errors.As(err, &de) {
		return de.Name, de.Error()
	}
	var pde *dbus.Error
	if errors.As(err, &pde) {
		return pde.Name, pde.Error()
	}
	if err == nil {
		return "", ""
	}
	t.Fatalf("not a D-Bus error: %T %v", err, err)
	return "", ""
}

// TestErrors: every failure has the documented name and a readable message.
func TestErrors(t *testing.T) {
	e := startEnv(t, Config{})
	e.fixture()
	e.waitPublished(string(uuidPath("3333-4444")))
	c := e.client()
	mgr := c.Object(contract.BusName, contract.ManagerPath)
	none := map[string]dbus.Variant{}
	loop3 := uuidPath("1111-2222")
	for _, tc := range []struct {
		name       string
		call       *dbus.Call
		err, msgIn string
	}{
		{"Where nothing", mgr.Call(contract.ManagerInterface+".Where", 0, "NOSUCH", none),
			contract.ErrorNotFound, "NOSUCH: not known on this network"},
		{"Where empty", mgr.Call(contract.ManagerInterface+".Where", 0, "", none),
			contract.ErrorInvalidArgs, "label_or_uuid is empty"},
		{"unknown machine name", mgr.Call(contract.ManagerInterface+".GetBlockDevices", 0, map[string]dbus.Variant{"machine": dbus.MakeVariant("nope")}),
			contract.ErrorNotFound, `no host named "nope"`},
		{"unknown machine path", mgr.Call(contract.ManagerInterface+".GetBlockDevices", 0, map[string]dbus.Variant{"machine": dbus.MakeVariant(contract.MachinePath("ffffffffffffffffffffffffffffffff"))}),
			contract.ErrorNotFound, "no machine at"},
		{"machine of a wrong type", mgr.Call(contract.ManagerInterface+".GetBlockDevices", 0, map[string]dbus.Variant{"machine": dbus.MakeVariant(uint32(3))}),
			contract.ErrorInvalidArgs, "option machine must be an object path (o) or a node ID or name (s), not u"},
		{"present of a wrong type", mgr.Call(contract.ManagerInterface+".GetBlockDevices", 0, map[string]dbus.Variant{"present": dbus.MakeVariant("yes")}),
			contract.ErrorInvalidArgs, "option present must be a boolean (b), not s"},
		{"unknown option", mgr.Call(contract.ManagerInterface+".GetMachines", 0, map[string]dbus.Variant{"colour": dbus.MakeVariant("red")}),
			contract.ErrorInvalidArgs, `unknown option "colour": this method takes none`},
		{"typo in option", mgr.Call(contract.ManagerInterface+".GetBlockDevices", 0, map[string]dbus.Variant{"presnt": dbus.MakeVariant(true)}),
			contract.ErrorInvalidArgs, `unknown option "presnt" (known: machine, present)`},
		{"empty devspec", mgr.Call(contract.ManagerInterface+".ResolveDevice", 0, none, none),
			contract.ErrorInvalidArgs, "devspec is empty"},
		{"unknown devspec key", mgr.Call(contract.ManagerInterface+".ResolveDevice", 0, map[string]dbus.Variant{"colour": dbus.MakeVariant("x")}, none),
			contract.ErrorInvalidArgs, `unknown devspec key "colour"`},
		{"wrong signature", mgr.Call(contract.ManagerInterface+".Where", 0, "BACKUP"),
			contract.ErrorStdInvalidArgs, "org.diskd.Diskd1.Manager.Where takes (sa{sv}), not (s)"},
		{"backend fails", func() *dbus.Call {
			err := errors.New("rate limit: try again in 4s")
			e.be.refreshErr.Store(&err)
			return mgr.Call(contract.ManagerInterface+".Refresh", 0, none)
		}(), contract.ErrorFailed, "refresh: rate limit: try again in 4s"},
		{"unknown method", mgr.Call(contract.ManagerInterface+".Frobnicate", 0),
			contract.ErrorUnknownMethod, ""},
		{"no such object", c.Object(contract.BusName, contract.BlockDevicesPath+"/nope").Call(contract.PropertiesInterface+".GetAll", 0, contract.BlockInterface),
			contract.ErrorUnknownObject, "no object at " + contract.BlockDevicesPath + "/nope"},
		{"not under the root", c.Object(contract.BusName, "/org/other").Call(contract.PropertiesInterface+".GetAll", 0, contract.BlockInterface),
			contract.ErrorUnknownObject, "no object at /org/other"},
		{"interface it lacks", c.Object(contract.BusName, loop3).Call(contract.PropertiesInterface+".GetAll", 0, contract.MachineInterface),
			contract.ErrorUnknownInterface, ""},
		{"method of an interface it lacks", c.Object(contract.BusName, loop3).Call(contract.ManagerInterface+".GetMachines", 0, none),
			contract.ErrorUnknownInterface, ""},
		{"unknown property", c.Object(contract.BusName, loop3).Call(contract.PropertiesInterface+".Get", 0, contract.BlockInterface, "Colour"),
			contract.ErrorUnknownProperty, "org.diskd.Diskd1.Block has no property Colour"},
		{"read-only property", c.Object(contract.BusName, loop3).Call(contract.PropertiesInterface+".Set", 0, contract.BlockInterface, "IdLabel", dbus.MakeVariant("X")),
			contract.ErrorPropertyReadOnly, "org.diskd.Diskd1.Block.IdLabel is read-only"},
	} {
		name, msg := dbusErr(t, tc.call.Err)
		if name != tc.err || !strings.Contains(msg, tc.msgIn) {
			t.Errorf("%s: got %s %q, want %s containing %q", tc.name, name, msg, tc.err, tc.msgIn)
		}
	}
}
