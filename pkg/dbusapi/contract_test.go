package dbusapi

import (
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/godbus/dbus/v5"

	contract "github.com/diskd/diskd/dbus"
)

// TestExportMatchesContract checks, through the bus, that what the daemon
// exports is what dbus/org.diskd.Diskd1.xml says: each object's
// introspection carries the contract's interface verbatim, every property
// has the declared name and type, and every Manager method accepts the
// declared input and replies with the declared output.
func TestExportMatchesContract(t *testing.T) {
	e := startEnv(t, Config{})
	e.fixture()
	c := e.client()
	want := contractInterfaces(t)
	loop3 := uuidPath("1111-2222")
	e.waitPublished(string(loop3))

	objects := map[dbus.ObjectPath][]string{
		contract.ManagerPath:         {contract.ManagerInterface},
		contract.MachinePath(peerID): {contract.MachineInterface},
		loop3:                        {contract.BlockInterface, contract.FilesystemInterface},
	}
	seen := map[string]bool{}
	for p, names := range objects {
		var xml string
		if err := c.Object(contract.BusName, p).Call(contract.IntrospectableIface+".Introspect", 0).Store(&xml); err != nil {
			t.Fatalf("Introspect %s: %v", p, err)
		}
		got, err := contract.ParseInterfaces(xml)
		if err != nil {
			t.Fatalf("Introspect %s: %v\n%s", p, err, xml)
		}
		byName := map[string]contract.Interface{}
		for _, in := range got {
			byName[in.Name] = in
		}
		for _, name := range names {
			seen[name] = true
			in, ok := byName[name]
			if !ok {
				t.Errorf("%s does not introspect %s", p, name)
				continue
			}
			if in.XML != want[name].XML {
				t.Errorf("%s: introspected %s differs from the contract", p, name)
			}
			var props map[string]dbus.Variant
			if err := c.Object(contract.BusName, p).Call(contract.PropertiesInterface+".GetAll", 0, name).Store(&props); err != nil {
				t.Fatalf("GetAll %s %s: %v", p, name, err)
			}
			checkProps(t, want[name], props)
		}
		// Standard interfaces are there too.
		for _, std := range []string{contract.PeerInterface, contract.IntrospectableIface, contract.PropertiesInterface} {
			if _, ok := byName[std]; !ok {
				t.Errorf("%s does not introspect %s", p, std)
			}
		}
	}
	for name := range want {
		if !seen[name] {
			t.Errorf("no object checked for %s", name)
		}
	}

	// Every Manager method, with arguments of the declared types.
	args := map[string][]any{
		"GetMachines":     {map[string]dbus.Variant{}},
		"GetBlockDevices": {map[string]dbus.Variant{}},
		"ResolveDevice":   {map[string]dbus.Variant{"label": dbus.MakeVariant("BACKUP")}, map[string]dbus.Variant{}},
		"Where":           {"BACKUP", map[string]dbus.Variant{}},
		"History":         {"BACKUP", map[string]dbus.Variant{}},
		"Refresh":         {map[string]dbus.Variant{}},
		"Ping":            {map[string]dbus.Variant{}},
		"GetStatus":       {map[string]dbus.Variant{}},
	}
	if got, w := slices.Sorted(maps.Keys(args)), methodNames(want[contract.ManagerInterface]); !slices.Equal(got, w) {
		t.Fatalf("test covers %v, contract has %v", got, w)
	}
	for _, m := range want[contract.ManagerInterface].Methods {
		a := args[m.Name]
		if got := dbus.SignatureOf(a...).String(); got != contract.Signatures(m, "in") {
			t.Fatalf("test passes (%s) to %s, contract says (%s)", got, m.Name, contract.Signatures(m, "in"))
		}
		call := c.Object(contract.BusName, contract.ManagerPath).Call(contract.ManagerInterface+"."+m.Name, 0, a...)
		if call.Err != nil {
			t.Errorf("%s: %v", m.Name, call.Err)
			continue
		}
		// godbus decodes structs as []any, so a reply holding structs is
		// checked by the server before sending (method.Call) and decoded
		// into its Go type in TestQueries, not here.
		if got := dbus.SignatureOf(call.Body...).String(); got != contract.Signatures(m, "out") && !strings.Contains(contract.Signatures(m, "out"), "(") {
			t.Errorf("%s replied (%s), contract says (%s)", m.Name, got, contract.Signatures(m, "out"))
		}
	}
}

func methodNames(in contract.Interface) []string {
	var out []string
	for _, m := range in.Methods {
		out = append(out, m.Name)
	}
	slices.Sort(out)
	return out
}

func checkProps(t *testing.T, in contract.Interface, props map[string]dbus.Variant) {
	t.Helper()
	declared := map[string]string{}
	for _, p := range in.Properties {
		declared[p.Name] = p.Type
	}
	for name, v := range props {
		if typ, ok := declared[name]; !ok {
			t.Errorf("%s.%s is exported but not in the contract", in.Name, name)
		} else if v.Signature().String() != typ {
			t.Errorf("%s.%s is %s, the contract says %s", in.Name, name, v.Signature(), typ)
		}
	}
	for name := range declared {
		if _, ok := props[name]; !ok {
			t.Errorf("%s.%s is in the contract but not exported", in.Name, name)
		}
	}
}

// TestNewChecksContract: the implementation's Manager methods are the
// contract's (New panics otherwise); prove the check bites.
func TestNewChecksContract(t *testing.T) {
	s := New(Config{}, newStore(), &fakeBackend{}, nil)
	in := s.ifaces[contract.ManagerInterface]
	in.Methods = append(slices.Clone(in.Methods), in.Methods[0])
	in.Methods[len(in.Methods)-1].Name = "Frobnicate"
	s.ifaces[contract.ManagerInterface] = in
	if err := s.checkManagerMethods(); err == nil || !strings.Contains(err.Error(), "Frobnicate") {
		t.Errorf("an unimplemented contract method passed the check: %v", err)
	}
}
