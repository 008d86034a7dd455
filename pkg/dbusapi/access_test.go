package dbusapi

import (
	"errors"
	"os/exec"
	"strings"
	"testing"

	"github.com/godbus/dbus/v5"

	contract "github.com/diskd/diskd/dbus"
	"github.com/diskd/diskd/pkg/api"
	"github.com/diskd/diskd/pkg/authz"
	"github.com/diskd/diskd/pkg/testutil"
)

// asNobody runs a command as uid 65534 and returns its combined output.
func asNobody(t *testing.T, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command("runuser", append([]string{"-u", "nobody", "--"}, args...)...).CombinedOutput()
	return string(out), err
}

// TestRefreshAndPingAreForAdmins: a non-root caller reads everything but
// is refused Refresh and Ping with NotAuthorized, saying who may; each
// decision is logged by the policy (authz, shared with the socket).
func TestRefreshAndPingAreForAdmins(t *testing.T) {
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
	if err == nil || !strings.Contains(out, "refresh is for root only (you are uid 65534)") {
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
		`msg="refused an admin action" component=authz action=refresh via=D-Bus`,
		`msg="refused an admin action" component=authz action=ping via=D-Bus`,
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
	if !strings.Contains(e.logs.String(), `msg="allowed an admin action" component=authz action=refresh via=D-Bus`) {
		t.Errorf("allowed Refresh not logged:\n%s", e.logs)
	}

	// The bus policy itself: interfaces diskd does not list are refused
	// to non-root callers before they reach the daemon.
	out, err = asNobody(t, "busctl", addr, "call", contract.BusName, contract.ManagerPath, "org.example.Other", "Poke")
	if err == nil || !strings.Contains(strings.ToLower(out), "denied") {
		t.Errorf("policy let nobody call an unlisted interface: %v %s", err, out)
	}
}

// TestAdminGroupMayAct: a member of the admin group (a temporary user,
// in the group as a supplementary one) may call Refresh and Ping over the
// bus; nobody still may not, and the refusal names the group.
func TestAdminGroupMayAct(t *testing.T) {
	testutil.RequiresRoot(t)
	testutil.RequiresTool(t, "runuser", "busctl")
	u := testutil.NewTempUser(t)
	e := startEnv(t, Config{Policy: authz.New(authz.Config{AdminGroup: u.Group})})
	addr := "--address=" + e.bus.Address
	as := func(user string, method string) (string, error) {
		out, err := exec.Command("runuser", "-u", user, "--", "busctl", addr, "call", contract.BusName,
			contract.ManagerPath, contract.ManagerInterface, method, "a{sv}", "0").CombinedOutput()
		return string(out), err
	}
	if out, err := as(u.Name, "Refresh"); err != nil {
		t.Errorf("%s (in %s) calling Refresh: %v %s", u.Name, u.Group, err, out)
	}
	if out, err := as(u.Name, "Ping"); err != nil || strings.TrimSpace(out) != "u 2" {
		t.Errorf("%s (in %s) calling Ping: %v %s", u.Name, u.Group, err, out)
	}
	want := `refresh is for root and the members of group "` + u.Group + `" (you are uid 65534)`
	if out, err := as("nobody", "Refresh"); err == nil || !strings.Contains(out, want) {
		t.Errorf("nobody calling Refresh: %v %s; want %q", err, out, want)
	}
	if e.be.refreshes.Load() != 1 || e.be.pings.Load() != 1 {
		t.Errorf("backend saw %d refreshes, %d pings; want 1 each", e.be.refreshes.Load(), e.be.pings.Load())
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
			contract.ErrorNotFound, `"NOSUCH": not known on this network`},
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
		{"label glob malformed", mgr.Call(contract.ManagerInterface+".GetBlockDevices", 0, map[string]dbus.Variant{"label": dbus.MakeVariant("BACK[UP")}),
			contract.ErrorInvalidArgs, `label glob "BACK[UP" is malformed`},
		{"label glob too long", mgr.Call(contract.ManagerInterface+".GetBlockDevices", 0, map[string]dbus.Variant{"label": dbus.MakeVariant(strings.Repeat("*", 65))}),
			contract.ErrorInvalidArgs, "is longer than 64 bytes"},
		{"label of a wrong type", mgr.Call(contract.ManagerInterface+".GetBlockDevices", 0, map[string]dbus.Variant{"label": dbus.MakeVariant(true)}),
			contract.ErrorInvalidArgs, "option label must be a string (s), not b"},
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
			contract.ErrorUnknownProperty, `"org.diskd.Diskd1.Block" has no property "Colour"`},
		{"read-only property", c.Object(contract.BusName, loop3).Call(contract.PropertiesInterface+".Set", 0, contract.BlockInterface, "IdLabel", dbus.MakeVariant("X")),
			contract.ErrorPropertyReadOnly, "org.diskd.Diskd1.Block.IdLabel is read-only"},
	} {
		name, msg := dbusErr(t, tc.call.Err)
		if name != tc.err || !strings.Contains(msg, tc.msgIn) {
			t.Errorf("%s: got %s %q, want %s containing %q", tc.name, name, msg, tc.err, tc.msgIn)
		}
	}
}

// TestMountAuthorization: root may call Filesystem.Mount and Unmount; a
// user who is not an admin is refused with NotAuthorized when no polkit
// runs to ask (the private bus has none), and the refusal is logged.
func TestMountAuthorization(t *testing.T) {
	testutil.RequiresRoot(t)
	testutil.RequiresTool(t, "runuser", "busctl")
	e := startEnv(t, Config{})
	e.fixture()
	addr := "--address=" + e.bus.Address
	var path string
	for _, d := range e.st.Disks(nil) {
		if d.Label == "PHOTOS" {
			path = string(contract.BlockPath(d.Key()))
		}
	}
	out, err := asNobody(t, "busctl", addr, "call", contract.BusName, path, contract.FilesystemInterface, "Mount", "a{sv}", "0")
	if err == nil || !strings.Contains(out, "mount is for root") || !strings.Contains(out, "(polkit: polkit is not running)") {
		t.Errorf("nobody calling Mount: err=%v out=%s", err, out)
	}
	if e.be.mounts.Load() != 0 {
		t.Error("the backend mounted for nobody")
	}
	if !strings.Contains(e.logs.String(), `msg="refused a D-Bus call: not an admin, and polkit cannot decide"`) {
		t.Errorf("refusal not logged:\n%s", e.logs)
	}
	// Root: the mount path comes back; options as UDisks2 passes them.
	got := e.busctl("call", contract.BusName, path, contract.FilesystemInterface, "Mount", "a{sv}", "2",
		"options", "s", "rw", "auth.no_user_interaction", "b", "true")
	if strings.TrimSpace(got) != `s "/media/diskd/3333-4444"` {
		t.Errorf("root Mount = %q", got)
	}
	e.busctl("call", contract.BusName, path, contract.FilesystemInterface, "Unmount", "a{sv}", "0")
	if e.be.mounts.Load() != 2 {
		t.Errorf("backend saw %d mount calls, want 2", e.be.mounts.Load())
	}
}

// TestUnknownOptionsIgnored: every method accepts options it does not know,
// as UDisks2 does (GNOME passes auth.no_user_interaction to every call),
// and still checks the types of those it knows.
func TestUnknownOptionsIgnored(t *testing.T) {
	e := startEnv(t, Config{})
	e.fixture()
	e.waitPublished(string(uuidPath("3333-4444")))
	mgr := e.client().Object(contract.BusName, contract.ManagerPath)
	gnome := map[string]dbus.Variant{"auth.no_user_interaction": dbus.MakeVariant(true), "colour": dbus.MakeVariant("red")}
	for _, m := range contractInterfaces(t)[contract.ManagerInterface].Methods {
		var args []any
		for _, a := range m.Args {
			switch {
			case a.Direction == "out":
			case a.Name == "options":
				args = append(args, gnome)
			case a.Name == "devspec":
				args = append(args, map[string]dbus.Variant{"label": dbus.MakeVariant("BACKUP")})
			case a.Type == "s":
				args = append(args, "BACKUP")
			default:
				t.Fatalf("%s: no test value for argument %s %s", m.Name, a.Name, a.Type)
			}
		}
		if call := mgr.Call(contract.ManagerInterface+"."+m.Name, 0, args...); call.Err != nil {
			t.Errorf("%s with unknown options: %v", m.Name, call.Err)
		}
	}
	// A known option of the wrong type is still refused, unknown ones or not.
	call := mgr.Call(contract.ManagerInterface+".GetBlockDevices", 0,
		map[string]dbus.Variant{"auth.no_user_interaction": dbus.MakeVariant(true), "present": dbus.MakeVariant("yes")})
	if name, _ := dbusErr(t, call.Err); name != contract.ErrorInvalidArgs {
		t.Errorf("present of a wrong type among unknown options: %v", call.Err)
	}
}

// TestHugeInputGivesShortErrors: a megabyte in any argument an error
// quotes comes back cut to api.MaxQuoted bytes, with its length said; a
// megabyte option key is ignored.
func TestHugeInputGivesShortErrors(t *testing.T) {
	e := startEnv(t, Config{})
	e.fixture()
	loop3 := uuidPath("1111-2222")
	e.waitPublished(string(loop3))
	c := e.client()
	mgr := c.Object(contract.BusName, contract.ManagerPath)
	none := map[string]dbus.Variant{}
	huge := strings.Repeat("\x01x", 1<<19) // 1 MiB; every other byte escapes to four
	for _, tc := range []struct {
		name string
		call *dbus.Call
	}{
		{"Where", mgr.Call(contract.ManagerInterface+".Where", 0, huge, none)},
		{"machine option", mgr.Call(contract.ManagerInterface+".GetBlockDevices", 0, map[string]dbus.Variant{"machine": dbus.MakeVariant(huge)})},
		{"label glob", mgr.Call(contract.ManagerInterface+".GetBlockDevices", 0, map[string]dbus.Variant{"label": dbus.MakeVariant(huge)})},
		{"machine path", mgr.Call(contract.ManagerInterface+".GetBlockDevices", 0,
			map[string]dbus.Variant{"machine": dbus.MakeVariant(dbus.ObjectPath(contract.MachinesPath + "/" + strings.Repeat("a", 1<<20)))})},
		{"devspec key", mgr.Call(contract.ManagerInterface+".ResolveDevice", 0, map[string]dbus.Variant{huge: dbus.MakeVariant("x")}, none)},
		{"property name", c.Object(contract.BusName, loop3).Call(contract.PropertiesInterface+".Get", 0, contract.BlockInterface, huge)},
		{"interface name", c.Object(contract.BusName, loop3).Call(contract.PropertiesInterface+".GetAll", 0, huge)},
		{"object path", c.Object(contract.BusName, dbus.ObjectPath(contract.BlockDevicesPath+"/"+strings.Repeat("b", 1<<20))).Call(
			contract.PropertiesInterface+".GetAll", 0, contract.BlockInterface)},
	} {
		name, msg := dbusErr(t, tc.call.Err)
		if name == "" || len(msg) > 4*api.MaxQuoted+200 || !strings.Contains(msg, "(1048") {
			t.Errorf("%s: %s, %d bytes: %.300q", tc.name, name, len(msg), msg)
		}
	}
	call := mgr.Call(contract.ManagerInterface+".GetMachines", 0, map[string]dbus.Variant{strings.Repeat("k", 1<<20): dbus.MakeVariant(true)})
	if call.Err != nil {
		t.Errorf("a 1 MiB option key: %.300v", call.Err)
	}
}
