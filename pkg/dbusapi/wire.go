package dbusapi

import (
	"encoding/binary"
	"fmt"
	"maps"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/godbus/dbus/v5"

	contract "github.com/diskd/diskd/dbus"
)

// The D-Bus wire format (little-endian), written here rather than by
// godbus for what the adapter sends in bulk: godbus encodes every value
// through reflection, and its transports encode each message twice (once
// to count file descriptors). The encoder covers the types the contract's
// properties and signals use; anything else is an error, which the tests
// of the contract rule out.
//
// Offsets are relative to the start of the buffer, which the caller puts
// at an 8-aligned offset of the message body; so a dict entry or a struct
// encoded on its own (they are 8-aligned) can be copied into any body at an
// 8-aligned offset as it is. That is what an object's cached entry is.

type encoder struct {
	b   []byte
	err error // the first string that may not go on the wire
}

func (e *encoder) align(n int) {
	for len(e.b)%n != 0 {
		e.b = append(e.b, 0)
	}
}

func (e *encoder) u32(v uint32) {
	e.align(4)
	e.b = binary.LittleEndian.AppendUint32(e.b, v)
}

func (e *encoder) u64(v uint64) {
	e.align(8)
	e.b = binary.LittleEndian.AppendUint64(e.b, v)
}

func (e *encoder) str(s string) {
	// What godbus refuses (and a bus would disconnect us for).
	switch {
	case e.err != nil:
	case !utf8.ValidString(s):
		e.err = dbus.FormatError("input has a not-utf8 char in string")
	case strings.IndexByte(s, 0) >= 0:
		e.err = dbus.FormatError("input has a null char('\\000') in string")
	}
	e.u32(uint32(len(s)))
	e.b = append(e.b, s...)
	e.b = append(e.b, 0)
}

func (e *encoder) sig(s string) {
	e.b = append(e.b, byte(len(s)))
	e.b = append(e.b, s...)
	e.b = append(e.b, 0)
}

func (e *encoder) boolean(v bool) {
	if v {
		e.u32(1)
	} else {
		e.u32(0)
	}
}

// array starts an array whose elements align to elemAlign; end writes its
// length. The padding after the length is written even for an empty array,
// as the specification says.
func (e *encoder) array(elemAlign int) (lenAt, start int) {
	e.align(4)
	lenAt = len(e.b)
	e.b = append(e.b, 0, 0, 0, 0)
	e.align(elemAlign)
	return lenAt, len(e.b)
}

func (e *encoder) end(lenAt, start int) {
	binary.LittleEndian.PutUint32(e.b[lenAt:], uint32(len(e.b)-start))
}

// value writes v, one of the types below, and returns its signature.
func (e *encoder) value(v any) (string, error) {
	switch v := v.(type) {
	case string:
		e.str(v)
		return "s", nil
	case dbus.ObjectPath:
		if !v.IsValid() {
			return "", dbus.FormatError("invalid object path")
		}
		e.str(string(v))
		return "o", nil
	case bool:
		e.boolean(v)
		return "b", nil
	case uint32:
		e.u32(v)
		return "u", nil
	case uint64:
		e.u64(v)
		return "t", nil
	case []byte:
		e.u32(uint32(len(v)))
		e.b = append(e.b, v...)
		return "ay", nil
	case [][]byte:
		at, start := e.array(4)
		for _, b := range v {
			e.u32(uint32(len(b)))
			e.b = append(e.b, b...)
		}
		e.end(at, start)
		return "aay", nil
	case []string:
		at, start := e.array(4)
		for _, s := range v {
			e.str(s)
		}
		e.end(at, start)
		return "as", nil
	case contract.Props:
		return "a{sv}", e.props(v, nil)
	case contract.Ifaces:
		return "a{sa{sv}}", e.ifaces(v, nil)
	}
	return "", fmt.Errorf("no wire encoding for %T", v)
}

// variant writes v as a variant: its signature, then the value.
func (e *encoder) variant(v dbus.Variant) error {
	want := v.Signature().String()
	e.sig(want)
	got, err := e.value(v.Value())
	if err == nil && got != want {
		err = fmt.Errorf("variant says %s, holds %s", want, got)
	}
	return err
}

// props writes an a{sv}, sorted by name. live, when not nil, is told the
// offset of each property's value.
func (e *encoder) props(p contract.Props, live func(name string, at int)) error {
	at, start := e.array(8)
	for _, k := range slices.Sorted(maps.Keys(p)) {
		e.align(8)
		e.str(k)
		v := p[k]
		if live != nil {
			// A variant's value follows its signature, aligned to the
			// value's own alignment: an uint64 to 8.
			sig := v.Signature().String()
			pos := len(e.b) + 1 + len(sig) + 1
			if sig == "t" {
				pos = (pos + 7) &^ 7
			}
			live(k, pos)
		}
		if err := e.variant(v); err != nil {
			return err
		}
	}
	e.end(at, start)
	return nil
}

// ifaces writes an a{sa{sv}}, sorted by interface name; live as for props.
func (e *encoder) ifaces(ifs contract.Ifaces, live func(iface, name string, at int)) error {
	at, start := e.array(8)
	for _, name := range slices.Sorted(maps.Keys(ifs)) {
		e.align(8)
		e.str(name)
		var f func(string, int)
		if live != nil {
			f = func(k string, pos int) { live(name, k, pos) }
		}
		if err := e.props(ifs[name], f); err != nil {
			return err
		}
	}
	e.end(at, start)
	return nil
}

// entry is an object as GetManagedObjects lists it and InterfacesAdded
// carries it: (o, a{sa{sv}}), encoded from an 8-aligned offset. lastSeen
// is the offset of the uint64 value of its LastSeen property (Block or
// Machine), which the bus serves live (see withLive), or -1.
type entry struct {
	b        []byte
	lastSeen int
}

func encodeEntry(p dbus.ObjectPath, ifs contract.Ifaces) (*entry, error) {
	en := &entry{lastSeen: -1}
	e := encoder{b: make([]byte, 0, 1024)}
	if _, err := e.value(p); err != nil {
		return nil, err
	}
	err := e.ifaces(ifs, func(iface, name string, at int) {
		if name == "LastSeen" && (iface == contract.BlockInterface || iface == contract.MachineInterface) {
			en.lastSeen = at
		}
	})
	if err == nil {
		err = e.err
	}
	if err != nil {
		return nil, err
	}
	en.b = e.b
	return en, nil
}

// Message framing.

const (
	fieldPath        = 1
	fieldInterface   = 2
	fieldMember      = 3
	fieldReplySerial = 5
	fieldDestination = 6
	fieldSignature   = 8
)

// header is what a message carries besides its body.
type header struct {
	typ         dbus.Type
	path        dbus.ObjectPath
	iface       string
	member      string
	replySerial uint32
	destination string
}

// appendMessage appends the message with header h, serial serial and body
// body of signature sig to dst. (Messages follow each other unpadded on a
// connection; alignment is counted from each message's start.)
func appendMessage(dst []byte, h header, serial uint32, sig string, body []byte) []byte {
	return append(append(dst, messageHeader(h, serial, sig, len(body))...), body...)
}

// messageHeader is a message's bytes up to its body, which is bodyLen
// bytes of signature sig.
func messageHeader(h header, serial uint32, sig string, bodyLen int) []byte {
	e := encoder{b: make([]byte, 0, 256)}
	e.b = append(e.b, 'l', byte(h.typ), 0, 1)
	e.b = binary.LittleEndian.AppendUint32(e.b, uint32(bodyLen))
	e.b = binary.LittleEndian.AppendUint32(e.b, serial)
	at, start := e.array(8)
	field := func(code byte, sig string) {
		e.align(8)
		e.b = append(e.b, code)
		e.sig(sig)
	}
	if h.path != "" {
		field(fieldPath, "o")
		e.str(string(h.path))
	}
	if h.iface != "" {
		field(fieldInterface, "s")
		e.str(h.iface)
	}
	if h.member != "" {
		field(fieldMember, "s")
		e.str(h.member)
	}
	if h.replySerial != 0 {
		field(fieldReplySerial, "u")
		e.u32(h.replySerial)
	}
	if h.destination != "" {
		field(fieldDestination, "s")
		e.str(h.destination)
	}
	if sig != "" {
		field(fieldSignature, "g")
		e.sig(sig)
	}
	e.end(at, start)
	e.align(8)
	return e.b
}

// maxMessage is the largest message the specification allows (2^27
// bytes); godbus refuses to send larger ones too.
const maxMessage = 1 << 27

// encodeArgs encodes a signal's or reply's arguments as a body.
func encodeArgs(args ...any) (sig string, body []byte, err error) {
	e := encoder{b: make([]byte, 0, 256)}
	for _, a := range args {
		s, err := e.value(a)
		if err != nil {
			return "", nil, err
		}
		sig += s
	}
	if e.err != nil {
		return "", nil, e.err
	}
	return sig, e.b, nil
}
