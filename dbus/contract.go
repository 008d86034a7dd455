// Package dbus is diskd's D-Bus contract: the interface XML that documents
// org.diskd.Diskd1 (served verbatim as introspection data), the names of
// the bus, objects, interfaces and errors, the escaping of object paths,
// and the mapping between the domain types of package disk and property
// values in both directions. The daemon's adapter (pkg/dbusapi) and the
// client (pkg/dbusclient) both build on it, so they cannot disagree.
//
// The directory also holds the bus policy (org.diskd.Diskd1.conf) and the
// activation file (org.diskd.Diskd1.service) that packaging installs.
//
// Import it under another name (contract) next to github.com/godbus/dbus/v5.
package dbus

import (
	_ "embed"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/godbus/dbus/v5/introspect"
)

// Names on the bus.
const (
	BusName = "org.diskd.Diskd1"

	RootPath         = "/org/diskd/Diskd1"
	ManagerPath      = RootPath + "/Manager"
	MachinesPath     = RootPath + "/machines"
	BlockDevicesPath = RootPath + "/block_devices"

	ManagerInterface    = "org.diskd.Diskd1.Manager"
	MachineInterface    = "org.diskd.Diskd1.Machine"
	BlockInterface      = "org.diskd.Diskd1.Block"
	FilesystemInterface = "org.diskd.Diskd1.Filesystem"

	ErrorFailed        = "org.diskd.Diskd1.Error.Failed"
	ErrorNotFound      = "org.diskd.Diskd1.Error.NotFound"
	ErrorNotAuthorized = "org.diskd.Diskd1.Error.NotAuthorized"
	ErrorInvalidArgs   = "org.diskd.Diskd1.Error.InvalidArgs"

	// PolkitMountAction is what a user who is not an admin needs for
	// Filesystem.Mount and Unmount (org.diskd.Diskd1.policy).
	PolkitMountAction = "org.diskd.Diskd1.mount"
)

// The freedesktop interfaces diskd implements, and their errors.
const (
	ObjectManagerInterface = "org.freedesktop.DBus.ObjectManager"
	PropertiesInterface    = "org.freedesktop.DBus.Properties"
	IntrospectableIface    = "org.freedesktop.DBus.Introspectable"
	PeerInterface          = "org.freedesktop.DBus.Peer"

	ErrorUnknownObject    = "org.freedesktop.DBus.Error.UnknownObject"
	ErrorUnknownInterface = "org.freedesktop.DBus.Error.UnknownInterface"
	ErrorUnknownMethod    = "org.freedesktop.DBus.Error.UnknownMethod"
	ErrorUnknownProperty  = "org.freedesktop.DBus.Error.UnknownProperty"
	ErrorPropertyReadOnly = "org.freedesktop.DBus.Error.PropertyReadOnly"
	ErrorStdInvalidArgs   = "org.freedesktop.DBus.Error.InvalidArgs"
)

//go:embed org.diskd.Diskd1.xml
var interfaceXML string

// InterfaceXML returns the contract, org.diskd.Diskd1.xml.
func InterfaceXML() string { return interfaceXML }

// Interface is one interface of the contract.
type Interface struct {
	introspect.Interface
	// XML is the <interface> element exactly as written in the contract,
	// doc comments included: what the daemon serves for introspection.
	XML string
}

// Interfaces parses the contract, in file order.
func Interfaces() ([]Interface, error) { return ParseInterfaces(interfaceXML) }

// ParseInterfaces parses the top-level <interface> elements of an
// introspection document, keeping each one's text.
func ParseInterfaces(doc string) ([]Interface, error) {
	dec := xml.NewDecoder(strings.NewReader(doc))
	dec.Strict = true
	var out []Interface
	depth := 0
	for {
		start := dec.InputOffset()
		tok, err := dec.Token()
		if err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return nil, fmt.Errorf("interface XML: %w", err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if depth == 1 && t.Name.Local == "interface" {
				var in introspect.Interface
				if err := dec.DecodeElement(&in, &t); err != nil {
					return nil, fmt.Errorf("interface XML: %w", err)
				}
				out = append(out, Interface{Interface: in, XML: doc[start:dec.InputOffset()]})
				continue
			}
			depth++
		case xml.EndElement:
			depth--
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("interface XML: no <interface> elements")
	}
	return out, nil
}

// EmitsChangedSignal returns the org.freedesktop.DBus.Property.EmitsChangedSignal
// annotation of the property named prop: "true" (the default when there is
// none: PropertiesChanged carries every change), "invalidates", "const"
// (it never changes) or "false" (it changes without a signal; read it with
// Get). It returns "" when the interface has no such property.
func (in Interface) EmitsChangedSignal(prop string) string {
	for _, p := range in.Properties {
		if p.Name != prop {
			continue
		}
		for _, a := range p.Annotations {
			if a.Name == "org.freedesktop.DBus.Property.EmitsChangedSignal" {
				return a.Value
			}
		}
		return "true"
	}
	return ""
}

// Signatures returns the concatenated types of m's arguments in direction
// dir ("in" or "out"). An argument without direction is "in", as the
// introspection format says for methods.
func Signatures(m introspect.Method, dir string) string {
	var b strings.Builder
	for _, a := range m.Args {
		d := a.Direction
		if d == "" {
			d = "in"
		}
		if d == dir {
			b.WriteString(a.Type)
		}
	}
	return b.String()
}
