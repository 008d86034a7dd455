package dbusapi

import (
	"encoding/binary"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/godbus/dbus/v5"

	contract "github.com/diskd/diskd/dbus"
	"github.com/diskd/diskd/pkg/api"
	"github.com/diskd/diskd/pkg/disk"
)

// The objects diskd publishes, as the object manager remembers them.
// withLive returns the object as published with the fields behind the
// properties the contract marks EmitsChangedSignal="false" (which change
// without a signal) taken from live, the store's current object at the
// same path: that is what the bus is served.
type (
	blockObj   struct{ d disk.Disk }
	machineObj struct{ n disk.Node }
	managerObj struct {
		version string
		local   disk.Node
	}
)

func (o blockObj) ifaces() contract.Ifaces { return contract.BlockInterfaces(&o.d) }
func (o machineObj) ifaces() contract.Ifaces {
	return contract.Ifaces{contract.MachineInterface: contract.MachineProperties(&o.n)}
}
func (o managerObj) ifaces() contract.Ifaces {
	return contract.Ifaces{contract.ManagerInterface: contract.ManagerProperties(o.version, &o.local)}
}

func (o blockObj) withLive(live object) object {
	if l, ok := live.(blockObj); ok {
		o.d.LastSeen = l.d.LastSeen
	}
	return o
}

func (o machineObj) withLive(live object) object {
	if l, ok := live.(machineObj); ok {
		o.n.LastSeen = l.n.LastSeen
	}
	return o
}

func (o managerObj) withLive(object) object { return o }

// liveUsec is the LastSeen property withLive takes from the object when it
// is the live one, for the cached encodings (see entry).
func (o blockObj) liveUsec() (uint64, bool)   { return contract.Usec(o.d.LastSeen), true }
func (o machineObj) liveUsec() (uint64, bool) { return contract.Usec(o.n.LastSeen), true }
func (o managerObj) liveUsec() (uint64, bool) { return 0, false }

// server answers method calls on one bus connection. It is godbus's
// Handler: godbus's own export machinery wants one registration per object
// and interface, while diskd's objects are views of the store that come
// and go by the thousand, so the server resolves paths itself.
type server struct {
	svc   *Service
	conn  *dbus.Conn
	sock  *busSocket // nil when godbus dialled: it writes every message
	om    *objectManager
	ready atomic.Bool // conn and om are set; calls before are refused

	lastReply atomic.Int64 // the size of the last GetManagedObjects body, to size the next
}

// pathKind classifies an object path.
type pathKind int

const (
	kindUnknown pathKind = iota
	kindInner            // a path element on the way to objects: only Introspectable
	kindRoot             // /org/diskd/Diskd1: the ObjectManager
	kindManager
	kindMachine
	kindBlock
)

func classify(p dbus.ObjectPath) pathKind {
	s := string(p)
	switch s {
	case "/", "/org", "/org/diskd", contract.MachinesPath, contract.BlockDevicesPath:
		return kindInner
	case contract.RootPath:
		return kindRoot
	case contract.ManagerPath:
		return kindManager
	}
	if rest, ok := strings.CutPrefix(s, contract.MachinesPath+"/"); ok && rest != "" && !strings.Contains(rest, "/") {
		return kindMachine
	}
	if rest, ok := strings.CutPrefix(s, contract.BlockDevicesPath+"/"); ok && rest != "" && !strings.Contains(rest, "/") {
		return kindBlock
	}
	return kindUnknown
}

// current returns the object at p as the store has it now, falling back to
// what was last published (the store may have just forgotten it). The bus
// is served what was published (see served); current only supplies the
// properties that are not signalled.
func (srv *server) current(p dbus.ObjectPath) (object, bool) {
	st := srv.svc.store
	switch classify(p) {
	case kindManager:
		return managerObj{version: srv.svc.cfg.Version, local: st.LocalNode()}, true
	case kindMachine:
		if id, err := contract.NodeFromMachinePath(p); err == nil {
			if n, ok := st.Node(id); ok {
				return machineObj{n}, true
			}
		}
	case kindBlock:
		if k, ok := srv.blockKey(p); ok {
			if d, ok := st.Disk(k); ok {
				return blockObj{d}, true
			}
		}
	}
	return srv.om.get(p)
}

// blockKey finds the row a block path names: the path is the escaped row
// key (see contract.BlockPath).
func (srv *server) blockKey(p dbus.ObjectPath) (disk.Key, bool) {
	k, err := contract.KeyFromBlockPath(p)
	if err != nil || contract.BlockPath(k) != p {
		return "", false
	}
	return k, true
}

// LookupObject implements dbus.Handler. Every path resolves; calls on
// paths that hold nothing fail with UnknownObject.
func (srv *server) LookupObject(p dbus.ObjectPath) (dbus.ServerObject, bool) {
	if !srv.ready.Load() {
		// A call to our unique name between Hello and setup.
		return notReady{}, true
	}
	return serverObject{srv: srv, path: p}, true
}

type notReady struct{}

func (notReady) LookupInterface(string) (dbus.Interface, bool) {
	return failing{errorf(contract.ErrorFailed, "diskd is starting; try again")}, true
}

type serverObject struct {
	srv  *server
	path dbus.ObjectPath
}

// interfaces returns the method tables of the interfaces at the path, nil
// when nothing is there.
func (o serverObject) interfaces() map[string]methodTable {
	srv := o.srv
	kind := classify(o.path)
	out := map[string]methodTable{
		contract.IntrospectableIface: {"Introspect": {name: "Introspect", in: "", out: "s", fn: srv.introspect}},
	}
	switch kind {
	case kindInner:
		return out
	case kindRoot:
		out[contract.ObjectManagerInterface] = methodTable{
			"GetManagedObjects": {name: "GetManagedObjects", in: "", out: "a{oa{sa{sv}}}", fn: srv.getManagedObjects,
				wire: srv.managedObjectsWire, sock: srv.sock, ordered: srv.om},
		}
		return out
	case kindManager, kindMachine, kindBlock:
		obj, ok := srv.om.get(o.path)
		if !ok {
			if obj, ok = srv.current(o.path); !ok {
				return nil
			}
		}
		out[contract.PropertiesInterface] = methodTable{
			"Get":    {name: "Get", in: "ss", out: "v", fn: srv.propGet, ordered: srv.om},
			"GetAll": {name: "GetAll", in: "s", out: "a{sv}", fn: srv.propGetAll, ordered: srv.om},
			"Set":    {name: "Set", in: "ssv", out: "", fn: srv.propSet},
		}
		for name := range obj.ifaces() {
			out[name] = methodTable{}
		}
		if _, ok := out[contract.FilesystemInterface]; ok {
			out[contract.FilesystemInterface] = srv.svc.filesystemMethods(srv)
		}
		if kind == kindManager {
			out[contract.ManagerInterface] = srv.svc.managerMethods(srv)
		}
		return out
	}
	return nil
}

// LookupInterface implements dbus.ServerObject.
func (o serverObject) LookupInterface(name string) (dbus.Interface, bool) {
	ifs := o.interfaces()
	if ifs == nil {
		return failing{errorf(contract.ErrorUnknownObject, "no object at %s", api.Clip(string(o.path)))}, true
	}
	if name == "" {
		// A call without an interface: the spec lets us pick any method of
		// that name.
		all := methodTable{}
		for _, n := range slices.Sorted(maps.Keys(ifs)) {
			for m, d := range ifs[n] {
				if _, dup := all[m]; !dup {
					all[m] = d
				}
			}
		}
		return all, true
	}
	t, ok := ifs[name]
	if !ok {
		return failing{errorf(contract.ErrorUnknownInterface, "%s does not implement %s", api.Clip(string(o.path)), name)}, true
	}
	return t, true
}

// methodTable is one interface: its methods by name.
type methodTable map[string]*method

// LookupMethod implements dbus.Interface.
func (t methodTable) LookupMethod(name string) (dbus.Method, bool) {
	m, ok := t[name]
	if !ok {
		return nil, false
	}
	return m, true
}

// failing is an interface whose every method fails with err.
type failing struct{ err *dbus.Error }

func (f failing) LookupMethod(string) (dbus.Method, bool) {
	return &method{fail: f.err}, true
}

// method is one D-Bus method: its signatures (from the contract for
// diskd's own interfaces) and its implementation. It decodes arguments
// itself (dbus.ArgumentDecoder) so that a wrong signature gets a readable
// InvalidArgs and the implementation sees the caller and path.
type method struct {
	name    string
	in, out string
	fn      func(c *call) ([]any, error)
	fail    *dbus.Error
	// ordered, for the methods that read published state: the call holds
	// off publishing from reading the state until its reply is written,
	// which it writes itself (see objectManager).
	ordered *objectManager
	// wire, when sock is set, answers in place of fn with the reply's body
	// already encoded (same values, no godbus encoding), written on sock.
	wire func(c *call) (sig string, body []byte, err error)
	sock *busSocket
}

// call is one incoming method call.
type call struct {
	sender string
	path   dbus.ObjectPath
	args   []any
	conn   *dbus.Conn
	msg    *dbus.Message
}

// DecodeArguments implements dbus.ArgumentDecoder.
func (m *method) DecodeArguments(conn *dbus.Conn, sender string, msg *dbus.Message, args []any) ([]any, error) {
	if m.fail != nil {
		return nil, m.fail
	}
	var sig string
	if v, ok := msg.Headers[dbus.FieldSignature]; ok {
		if s, ok := v.Value().(dbus.Signature); ok {
			sig = s.String()
		}
	}
	if sig != m.in {
		return nil, errorf(contract.ErrorStdInvalidArgs, "%s takes (%s), not (%s)", m.name, m.in, sig)
	}
	p, _ := msg.Headers[dbus.FieldPath].Value().(dbus.ObjectPath)
	return []any{&call{sender: sender, path: p, args: args, conn: conn, msg: msg}}, nil
}

// Call implements dbus.Method. godbus runs it on a goroutine of its own,
// where a panic would end the daemon: a bug answers Failed instead.
func (m *method) Call(args ...any) (out []any, err error) {
	c, ok := args[0].(*call)
	if !ok || m.fn == nil {
		return nil, errorf(contract.ErrorFailed, "internal error: bad call to %s", m.name)
	}
	if m.ordered != nil {
		defer m.ordered.reading()()
	}
	defer func() {
		if r := recover(); r != nil {
			out, err = nil, errorf(contract.ErrorFailed, "internal error in %s: %v", m.name, r)
		}
	}()
	if m.wire != nil && m.sock != nil {
		sig, body, err := m.wire(c)
		if err != nil {
			return nil, err
		}
		if sig != m.out {
			return nil, errorf(contract.ErrorFailed, "internal error: %s replied (%s), the contract says (%s)", m.name, sig, m.out)
		}
		return nil, c.replyWire(m.sock, sig, body)
	}
	out, err = m.fn(c)
	if err != nil {
		return nil, err
	}
	// A reply that contradicts the contract is a bug; say so rather than
	// send it.
	if got := dbus.SignatureOf(out...).String(); got != m.out {
		return nil, errorf(contract.ErrorFailed, "internal error: %s replied (%s), the contract says (%s)", m.name, got, m.out)
	}
	if m.ordered != nil {
		c.reply(out)
		return nil, nil
	}
	return out, nil
}

// reply writes the method's reply now, rather than leave it to godbus,
// which writes it after Call returns: too late for an ordered method,
// whose reply must be on the bus before the next signal. godbus is told
// not to answer again through the call's flags, which it reads after Call
// (godbus v5 export.go handleCall).
func (c *call) reply(out []any) {
	if c.conn == nil || c.msg == nil || c.msg.Flags&dbus.FlagNoReplyExpected != 0 {
		return
	}
	c.msg.Flags |= dbus.FlagNoReplyExpected
	msg := &dbus.Message{Type: dbus.TypeMethodReply, Headers: map[dbus.HeaderField]dbus.Variant{
		dbus.FieldReplySerial: dbus.MakeVariant(c.msg.Serial()),
	}, Body: out}
	if sender, ok := c.msg.Headers[dbus.FieldSender]; ok {
		msg.Headers[dbus.FieldDestination] = sender
	}
	if len(out) > 0 {
		msg.Headers[dbus.FieldSignature] = dbus.MakeVariant(dbus.SignatureOf(out...))
	}
	// Send writes before returning; errors (a closed connection) are the
	// caller's loss, as with godbus's own replies.
	c.conn.Send(msg, nil)
}

// replyWire is reply for a body encoded by the adapter, written on sock.
func (c *call) replyWire(sock *busSocket, sig string, body []byte) error {
	if c.msg == nil || c.msg.Flags&dbus.FlagNoReplyExpected != 0 {
		return nil
	}
	h := header{typ: dbus.TypeMethodReply, replySerial: c.msg.Serial()}
	h.destination, _ = c.msg.Headers[dbus.FieldSender].Value().(string)
	hdr := messageHeader(h, sock.GetSerial(), sig, len(body))
	if len(hdr)+len(body) > maxMessage {
		// As godbus answers a reply it cannot send.
		return dbus.MakeFailedError(fmt.Errorf("destination tried to respond with invalid message (%w)", dbus.InvalidMessageError("message is too long")))
	}
	c.msg.Flags |= dbus.FlagNoReplyExpected
	sock.send(hdr, body) // errors are the caller's loss, as in reply
	return nil
}

func (m *method) NumArguments() int     { return 1 }
func (m *method) NumReturns() int       { return 0 }
func (m *method) ArgumentValue(int) any { return (*call)(nil) }
func (m *method) ReturnValue(int) any   { return nil }
func (m *method) String() string        { return m.name }

// errorf builds a D-Bus error with a one-line message.
func errorf(name, format string, args ...any) *dbus.Error {
	return dbus.NewError(name, []any{fmt.Sprintf(format, args...)})
}

// Properties.

func (srv *server) propGet(c *call) ([]any, error) {
	iface, prop := c.args[0].(string), c.args[1].(string)
	props, err := srv.propsOf(c.path, iface)
	if err != nil {
		return nil, err
	}
	v, ok := props[prop]
	if !ok {
		return nil, errorf(contract.ErrorUnknownProperty, "%s has no property %s", api.Quote(iface), api.Quote(prop))
	}
	return []any{v}, nil
}

func (srv *server) propGetAll(c *call) ([]any, error) {
	props, err := srv.propsOf(c.path, c.args[0].(string))
	if err != nil {
		return nil, err
	}
	return []any{props}, nil
}

func (srv *server) propSet(c *call) ([]any, error) {
	iface, prop := c.args[0].(string), c.args[1].(string)
	props, err := srv.propsOf(c.path, iface)
	if err != nil {
		return nil, err
	}
	if _, ok := props[prop]; !ok {
		return nil, errorf(contract.ErrorUnknownProperty, "%s has no property %s", api.Quote(iface), api.Quote(prop))
	}
	return nil, errorf(contract.ErrorPropertyReadOnly, "%s.%s is read-only", iface, prop) // both known
}

func (srv *server) propsOf(p dbus.ObjectPath, iface string) (contract.Props, error) {
	ifs, ok := srv.served(p)
	if !ok {
		return nil, errorf(contract.ErrorUnknownObject, "no object at %s", api.Clip(string(p)))
	}
	props, ok := ifs[iface]
	if !ok {
		return nil, errorf(contract.ErrorUnknownInterface, "%s has no properties on %s", api.Clip(string(p)), api.Quote(iface))
	}
	return props, nil
}

// served returns the interfaces and properties the bus is served for the
// object at p: what was last signalled (see objectManager), except the
// properties that are not signalled, which are read live.
func (srv *server) served(p dbus.ObjectPath) (contract.Ifaces, bool) {
	obj, ok := srv.om.get(p)
	if !ok {
		return nil, false
	}
	if live, ok := srv.current(p); ok {
		obj = obj.withLive(live)
	}
	return obj.ifaces(), true
}

// ObjectManager.

func (srv *server) getManagedObjects(*call) ([]any, error) {
	objs := srv.om.all()
	live := srv.svc.snapshot()
	out := make(map[dbus.ObjectPath]contract.Ifaces, len(objs))
	for p, o := range objs {
		if l, ok := live[p]; ok {
			o = o.withLive(l)
		}
		out[p] = o.ifaces()
	}
	return []any{out}, nil
}

// managedObjectsWire is getManagedObjects's answer encoded: each object's
// cached entry, with the properties read live (LastSeen) written over.
func (srv *server) managedObjectsWire(*call) (string, []byte, error) {
	live := srv.svc.snapshot()
	e := encoder{b: make([]byte, 0, max(srv.lastReply.Load(), 4096)+4096)}
	at, start := e.array(8)
	err := srv.om.each(func(p dbus.ObjectPath, pb *published) error {
		en, err := pb.entry(p)
		if err != nil {
			return err
		}
		e.align(8)
		off := len(e.b)
		e.b = append(e.b, en.b...)
		if l, ok := live[p]; ok && en.lastSeen >= 0 {
			if us, ok := l.liveUsec(); ok {
				binary.LittleEndian.PutUint64(e.b[off+en.lastSeen:], us)
			}
		}
		return nil
	})
	if err != nil {
		// As godbus answers a reply it cannot encode.
		return "", nil, dbus.MakeFailedError(fmt.Errorf("destination tried to respond with invalid message (%w)", err))
	}
	e.end(at, start)
	srv.lastReply.Store(int64(len(e.b)))
	return "a{oa{sa{sv}}}", e.b, nil
}

// Introspection.

const introspectHeader = `<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"
"http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">
`

// The freedesktop interfaces, as their specification writes them.
const (
	peerXML = `  <interface name="org.freedesktop.DBus.Peer">
    <method name="Ping"/>
    <method name="GetMachineId">
      <arg name="machine_uuid" type="s" direction="out"/>
    </method>
  </interface>
`
	introspectableXML = `  <interface name="org.freedesktop.DBus.Introspectable">
    <method name="Introspect">
      <arg name="xml_data" type="s" direction="out"/>
    </method>
  </interface>
`
	propertiesXML = `  <interface name="org.freedesktop.DBus.Properties">
    <method name="Get">
      <arg name="interface_name" type="s" direction="in"/>
      <arg name="property_name" type="s" direction="in"/>
      <arg name="value" type="v" direction="out"/>
    </method>
    <method name="GetAll">
      <arg name="interface_name" type="s" direction="in"/>
      <arg name="props" type="a{sv}" direction="out"/>
    </method>
    <method name="Set">
      <arg name="interface_name" type="s" direction="in"/>
      <arg name="property_name" type="s" direction="in"/>
      <arg name="value" type="v" direction="in"/>
    </method>
    <signal name="PropertiesChanged">
      <arg name="interface_name" type="s"/>
      <arg name="changed_properties" type="a{sv}"/>
      <arg name="invalidated_properties" type="as"/>
    </signal>
  </interface>
`
	objectManagerXML = `  <interface name="org.freedesktop.DBus.ObjectManager">
    <method name="GetManagedObjects">
      <arg name="object_paths_interfaces_and_properties" type="a{oa{sa{sv}}}" direction="out"/>
    </method>
    <signal name="InterfacesAdded">
      <arg name="object_path" type="o"/>
      <arg name="interfaces_and_properties" type="a{sa{sv}}"/>
    </signal>
    <signal name="InterfacesRemoved">
      <arg name="object_path" type="o"/>
      <arg name="interfaces" type="as"/>
    </signal>
  </interface>
`
)

func (srv *server) introspect(c *call) ([]any, error) {
	p := c.path
	var b strings.Builder
	b.WriteString(introspectHeader)
	b.WriteString("<node>\n")
	b.WriteString(peerXML)
	b.WriteString(introspectableXML)
	var children []string
	switch classify(p) {
	case kindInner:
		switch p {
		case "/":
			children = []string{"org"}
		case "/org":
			children = []string{"diskd"}
		case "/org/diskd":
			children = []string{"Diskd1"}
		default:
			children = srv.om.children(p)
		}
	case kindRoot:
		b.WriteString(objectManagerXML)
		children = []string{"Manager", "block_devices", "machines"}
	case kindManager, kindMachine, kindBlock:
		ifs, ok := srv.served(p)
		if !ok {
			return nil, errorf(contract.ErrorUnknownObject, "no object at %s", api.Clip(string(p)))
		}
		b.WriteString(propertiesXML)
		for _, name := range slices.Sorted(maps.Keys(ifs)) {
			b.WriteString("  ")
			b.WriteString(srv.svc.ifaceXML[name])
			b.WriteString("\n")
		}
	default:
		return nil, errorf(contract.ErrorUnknownObject, "no object at %s", api.Clip(string(p)))
	}
	for _, ch := range children {
		fmt.Fprintf(&b, "  <node name=\"%s\"/>\n", ch)
	}
	b.WriteString("</node>\n")
	return []any{b.String()}, nil
}
