package dbus

import (
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	godbus "github.com/godbus/dbus/v5"
	"github.com/godbus/dbus/v5/introspect"

	"github.com/diskd/diskd/pkg/disk"
)

func contract(t *testing.T) map[string]Interface {
	t.Helper()
	ifs, err := Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]Interface{}
	for _, in := range ifs {
		m[in.Name] = in
	}
	return m
}

func TestContractInterfaces(t *testing.T) {
	c := contract(t)
	got := slices.Sorted(maps.Keys(c))
	want := []string{BlockInterface, FilesystemInterface, MachineInterface, ManagerInterface}
	if !slices.Equal(got, want) {
		t.Fatalf("contract interfaces = %v, want %v", got, want)
	}
	for _, in := range c {
		if !strings.HasPrefix(in.XML, `<interface name="`+in.Name+`">`) || !strings.HasSuffix(in.XML, "</interface>") {
			t.Errorf("%s: verbatim XML not cut at the element: %.60q...", in.Name, in.XML)
		}
		// The verbatim text must stand alone as introspection data.
		again, err := ParseInterfaces("<node>" + in.XML + "</node>")
		if err != nil || len(again) != 1 || again[0].Name != in.Name {
			t.Errorf("%s: verbatim XML does not reparse: %v", in.Name, err)
		}
	}
}

// TestContractDocumented: every interface, method, argument and property
// has a doc comment, and every argument a name, so busctl introspect and
// gdbus introspect read well.
func TestContractDocumented(t *testing.T) {
	for _, in := range contract(t) {
		comments := strings.Join(regexp.MustCompile(`(?s)<!--(.*?)-->`).FindAllString(in.XML, -1), "\n")
		if !strings.Contains(comments, in.Name+":") {
			t.Errorf("%s has no doc comment inside its element", in.Name)
		}
		for _, m := range in.Methods {
			if !strings.Contains(comments, m.Name+":") {
				t.Errorf("%s.%s is not documented", in.Name, m.Name)
			}
			for _, a := range m.Args {
				if a.Name == "" || a.Direction == "" {
					t.Errorf("%s.%s: argument of type %s lacks a name or direction", in.Name, m.Name, a.Type)
				}
				if a.Direction == "in" && !strings.Contains(comments, "@"+a.Name+":") {
					t.Errorf("%s.%s: argument %s is not documented", in.Name, m.Name, a.Name)
				}
			}
			ins := m.Args
			if len(ins) == 0 || Signatures(m, "in") == "" {
				t.Errorf("%s.%s takes no options", in.Name, m.Name)
				continue
			}
			// UDisks convention: the last input argument is options a{sv}.
			var last introspect.Arg
			for _, a := range ins {
				if a.Direction == "in" {
					last = a
				}
			}
			if last.Name != "options" || last.Type != "a{sv}" {
				t.Errorf("%s.%s: last input argument is %s %s, want options a{sv}", in.Name, m.Name, last.Name, last.Type)
			}
		}
		for _, p := range in.Properties {
			if !strings.Contains(comments, p.Name+":") {
				t.Errorf("%s.%s is not documented", in.Name, p.Name)
			}
			if p.Access != "read" {
				t.Errorf("%s.%s: access %q; every property is read-only", in.Name, p.Name, p.Access)
			}
			if _, err := godbus.ParseSignature(p.Type); err != nil {
				t.Errorf("%s.%s: type %q: %v", in.Name, p.Name, p.Type, err)
			}
			// pkg/dbusapi's TestServedIsWhatWasSignalled holds the daemon
			// to these.
			switch e := in.EmitsChangedSignal(p.Name); e {
			case "true", "const", "false":
			default:
				t.Errorf("%s.%s: EmitsChangedSignal %q; the daemon signals every change with its value (true), or none (const, false)", in.Name, p.Name, e)
			}
		}
		for _, m := range in.Methods {
			for _, dir := range []string{"in", "out"} {
				if _, err := godbus.ParseSignature(Signatures(m, dir)); err != nil {
					t.Errorf("%s.%s %s: %v", in.Name, m.Name, dir, err)
				}
			}
		}
	}
}

// TestPropertiesMatchContract: the mapping produces exactly the properties
// the contract lists, with its types.
func TestPropertiesMatchContract(t *testing.T) {
	c := contract(t)
	d := fixtureDisks()[0]
	n := disk.Node{ID: testNode}
	objs := []Ifaces{
		BlockInterfaces(&d),
		{MachineInterface: MachineProperties(&n)},
		{ManagerInterface: ManagerProperties("v", &n)},
	}
	covered := map[string]bool{}
	for _, ifs := range objs {
		for name, props := range ifs {
			covered[name] = true
			CheckProperties(t, c[name].Interface, props)
		}
	}
	for name := range c {
		if !covered[name] {
			t.Errorf("no mapping produces %s", name)
		}
	}
}

// CheckProperties fails t unless props has exactly in's properties, each
// with its declared type.
func CheckProperties(t *testing.T, in introspect.Interface, props Props) {
	t.Helper()
	want := map[string]string{}
	for _, p := range in.Properties {
		want[p.Name] = p.Type
	}
	for name, v := range props {
		typ, ok := want[name]
		if !ok {
			t.Errorf("%s.%s is exported but not in the contract", in.Name, name)
			continue
		}
		if v.Signature().String() != typ {
			t.Errorf("%s.%s has type %s, the contract says %s", in.Name, name, v.Signature(), typ)
		}
	}
	for name := range want {
		if _, ok := props[name]; !ok {
			t.Errorf("%s.%s is in the contract but not exported", in.Name, name)
		}
	}
}

// TestPolicyAndActivationFiles checks the files packaging installs next to
// the contract say what the issue asks.
func TestPolicyAndActivationFiles(t *testing.T) {
	conf, err := os.ReadFile("org.diskd.Diskd1.conf")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`<policy user="root">`, `<allow own="org.diskd.Diskd1"/>`, `<policy context="default">`,
		`send_interface="org.diskd.Diskd1.Manager"`, `send_interface="org.freedesktop.DBus.ObjectManager"`,
		`send_interface="org.freedesktop.DBus.Properties"`, `send_interface="org.freedesktop.DBus.Introspectable"`,
	} {
		if !strings.Contains(string(conf), want) {
			t.Errorf("org.diskd.Diskd1.conf lacks %s", want)
		}
	}
	if strings.Count(string(conf), "allow own=") != 1 {
		t.Error("only root may own the name")
	}
	svc, err := os.ReadFile("org.diskd.Diskd1.service")
	if err != nil {
		t.Fatal(err)
	}
	fields := map[string]string{}
	for i, line := range strings.Split(string(svc), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if i == 0 || line == "[D-BUS Service]" {
			if line != "[D-BUS Service]" {
				t.Errorf("activation file starts with %q", line)
			}
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Errorf("activation file: bad line %q", line)
		}
		fields[k] = v
	}
	for k, v := range map[string]string{"Name": BusName, "User": "root", "SystemdService": "diskd.service", "Exec": "/usr/bin/diskd"} {
		if fields[k] != v {
			t.Errorf("activation file: %s=%q, want %q", k, fields[k], v)
		}
	}
}
