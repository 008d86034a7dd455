// Package blkid owns running util-linux blkid(8) and parsing what it prints:
// filesystem and partition identity (UUID, label, type) of block devices.
//
// # Reading values exactly, without letting them forge records
//
// A label, a partition name and most other values are chosen by whoever
// made the medium. blkid offers no output form that is both unambiguous and
// exact:
//
//   - `blkid -d -o export` prints values raw. A label holding a newline
//     followed by "DEVNAME=/dev/loop200" would start a record of its own,
//     so its records cannot be told apart safely.
//   - `blkid -o export` (no -d) escapes every byte that could break the
//     structure: a byte >= 0x80 prints as "M-" and the byte minus 0x80, a
//     control byte c as "^" and c^0x40, and one of ` \"'$<>` and the
//     backquote behind a backslash. No value can hold a newline, so each
//     line is one KEY=value and each DEVNAME= line starts a device. But the
//     encoding cannot be undone: a label "FILM-2024" and one holding the
//     byte 0xB2 both print "M-2".
//   - `-o udev` escapes as \xNN, but prints PART_ENTRY_* raw, truncates
//     long values and has no DEVNAME.
//
// So the Runner reads the structure from the escaped form and the bytes
// from the raw one. It runs `blkid -o export`; a value without "M-" or "^"
// decodes exactly (only backslash escapes are left). Only the devices
// with a value that does not (non-ASCII or control bytes) are asked again
// with -d, and each of their raw values is accepted only if escaping it
// byte by byte gives exactly the escaped value of the same key of the same
// device, in the same order: the raw output is walked with the escaped
// records as the grammar, so no byte in a value can start, end or change a
// record. A device whose two outputs disagree (it changed between the two
// runs, or lies) is asked once more, then left out of that scan.
package blkid

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/diskd/diskd/pkg/disk"
)

// Record is what blkid knows about one device. Values are byte strings,
// exactly as stored on disk: a label need not be valid UTF-8 and may hold
// control characters (printing it is the printer's problem, see
// api.Escape).
type Record struct {
	Device    string // DEVNAME, the /dev path
	UUID      string
	PartUUID  string // PARTUUID, or PART_ENTRY_UUID from low-level probing
	Label     string
	PartLabel string // PARTLABEL, or PART_ENTRY_NAME from low-level probing
	Type      string // TYPE: ext4, vfat, xfs, crypto_LUKS, swap, ...
	Usage     string // USAGE: filesystem, raid, crypto, other; see disk.UsageForType
}

// exportEscaped are the characters `blkid -o export` prints behind a
// backslash (util-linux misc-utils/blkid.c, print_value).
const exportEscaped = " \\\"'$`<>"

// escapeByte appends what `blkid -o export` (without -d) prints for byte c
// of a value (util-linux misc-utils/blkid.c, safe_print; checked against
// every byte in testdata/allbytes.*).
func escapeByte(dst []byte, c byte) []byte {
	if c >= 0x80 {
		dst = append(dst, 'M', '-')
		c -= 0x80
	}
	if c < 0x20 || c == 0x7f {
		dst = append(dst, '^')
		c ^= 0x40
	} else if strings.IndexByte(exportEscaped, c) >= 0 {
		dst = append(dst, '\\')
	}
	return append(dst, c)
}

// tag is one KEY=value of an escaped record, the value as blkid printed it.
type tag struct {
	key, esc string
}

// entry is one device's record in `blkid -o export` output.
type entry struct {
	dev  string
	tags []tag
}

// parseEscaped parses `blkid -o export` output (without -d): KEY=value
// lines, one device after another, each starting with DEVNAME=, devices
// separated by blank lines (which are not needed to split them). Values
// are kept escaped. Empty output is no devices. Every value byte must be
// printable ASCII, as blkid's escaping makes it; anything else is not
// blkid's escaped output and fails the whole parse, as does a repeated key.
// DEVNAME is printed raw by blkid, but it is the kernel's (or root's) name
// for the device, not the medium's.
func parseEscaped(out []byte) ([]entry, error) {
	var (
		ents []entry
		seen map[string]bool
	)
	lines := bytes.Split(out, []byte("\n"))
	if len(lines) > 0 && len(lines[len(lines)-1]) == 0 {
		lines = lines[:len(lines)-1] // the final newline ends the last line
	}
	for i, line := range lines {
		if len(line) == 0 {
			continue
		}
		key, val, ok := splitTag(line)
		switch {
		case !ok:
			return nil, fmt.Errorf("blkid export line %d: not KEY=value: %q", i+1, line)
		case key == "DEVNAME":
			// A path, never an option: it goes back on blkid's command
			// line for the raw pass.
			if !strings.HasPrefix(val, "/") {
				return nil, fmt.Errorf("blkid export line %d: DEVNAME %q is not a path", i+1, val)
			}
			ents = append(ents, entry{dev: val})
			seen = map[string]bool{}
			continue
		case len(ents) == 0:
			return nil, fmt.Errorf("blkid export line %d: %s= before any DEVNAME=", i+1, key)
		case seen[key]:
			return nil, fmt.Errorf("blkid export line %d: %s= twice for %s", i+1, key, ents[len(ents)-1].dev)
		}
		for j := 0; j < len(val); j++ {
			if c := val[j]; c < 0x20 || c >= 0x7f {
				return nil, fmt.Errorf("blkid export line %d: byte 0x%02x in %s: not blkid's escaped output", i+1, c, key)
			}
		}
		seen[key] = true
		e := &ents[len(ents)-1]
		e.tags = append(e.tags, tag{key, val})
	}
	return ents, nil
}

// unescapePlain decodes an escaped value that holds no "M-" and no "^":
// then every character is literal but a backslash, which quotes the next.
// ok is false for any other value, whose bytes only the raw output can say.
func unescapePlain(esc string) (string, bool) {
	if strings.Contains(esc, "M-") || strings.IndexByte(esc, '^') >= 0 {
		return "", false
	}
	if !strings.ContainsAny(esc, exportEscaped) {
		return esc, true
	}
	b := make([]byte, 0, len(esc))
	for i := 0; i < len(esc); i++ {
		c := esc[i]
		if c == '\\' {
			if i+1 == len(esc) || strings.IndexByte(exportEscaped, esc[i+1]) < 0 {
				return "", false
			}
			i++
			c = esc[i]
		} else if strings.IndexByte(exportEscaped, c) >= 0 {
			return "", false // blkid would have quoted it
		}
		b = append(b, c)
	}
	return string(b), true
}

// plainRecord decodes e without raw output; ok is false when a value is
// ambiguous.
func (e *entry) plainRecord() (Record, bool) {
	vals := make(map[string]string, len(e.tags)+1)
	vals["DEVNAME"] = e.dev
	for _, t := range e.tags {
		v, ok := unescapePlain(t.esc)
		if !ok {
			return Record{}, false
		}
		vals[t.key] = v
	}
	return recordFromTags(vals), true
}

// matchRaw reads `blkid -d -o export` output for the devices of ents, in
// the same order, using ents as its grammar: each record must be
// DEVNAME=dev, then each key of the escaped record in order with a raw
// value whose escaping is exactly the escaped value, each line ending in
// a newline; blank lines may separate records. It returns the records of
// the first n entries that matched; err says why entry n did not. Output
// after the last entry is ignored.
func matchRaw(ents []entry, raw []byte) (recs []Record, n int, err error) {
	p := raw
	for i := range ents {
		e := &ents[i]
		for len(p) > 0 && p[0] == '\n' {
			p = p[1:]
		}
		head := "DEVNAME=" + e.dev + "\n"
		if !bytes.HasPrefix(p, []byte(head)) {
			return recs, i, fmt.Errorf("raw output for %s does not start with %q", e.dev, head)
		}
		p = p[len(head):]
		vals := make(map[string]string, len(e.tags)+1)
		vals["DEVNAME"] = e.dev
		for _, t := range e.tags {
			if !bytes.HasPrefix(p, []byte(t.key+"=")) {
				return recs, i, fmt.Errorf("raw output for %s: expected %s=", e.dev, t.key)
			}
			p = p[len(t.key)+1:]
			v, rest, ok := matchValue(p, t.esc)
			if !ok {
				return recs, i, fmt.Errorf("raw output for %s: %s differs from its escaped form", e.dev, t.key)
			}
			vals[t.key] = string(v)
			p = rest
		}
		recs = append(recs, recordFromTags(vals))
	}
	return recs, len(ents), nil
}

// matchValue takes the raw bytes at the start of raw whose escaping is esc,
// and the newline after them.
func matchValue(raw []byte, esc string) (val, rest []byte, ok bool) {
	var buf [5]byte
	i := 0
	for len(esc) > 0 {
		if i == len(raw) {
			return nil, nil, false
		}
		e := escapeByte(buf[:0], raw[i])
		if !strings.HasPrefix(esc, string(e)) {
			return nil, nil, false
		}
		esc = esc[len(e):]
		i++
	}
	if i == len(raw) || raw[i] != '\n' {
		return nil, nil, false
	}
	return raw[:i], raw[i+1:], true
}

// Decode turns the two forms of one blkid run over the same devices into
// records: escaped is `blkid -o export` output, raw the `-d` output of the
// same command. Every record is taken from raw under the grammar of
// escaped (see the package comment); a value that decodes without raw must
// agree with it. It is the pure core of Runner.ScanAll and Runner.Probe,
// for fixtures.
func Decode(escaped, raw []byte) ([]Record, error) {
	ents, err := parseEscaped(escaped)
	if err != nil {
		return nil, err
	}
	recs, n, err := matchRaw(ents, raw)
	if err != nil {
		return nil, fmt.Errorf("record %d: %w", n+1, err)
	}
	for i := range ents {
		if plain, ok := ents[i].plainRecord(); ok && plain != recs[i] {
			return nil, fmt.Errorf("%s: escaped form decodes to %+q, raw form to %+q", ents[i].dev, plain, recs[i])
		}
	}
	return recs, nil
}

// splitTag splits "KEY=value" where KEY is blkid's tag name syntax
// (upper-case letters, digits, underscores).
func splitTag(line []byte) (key, val string, ok bool) {
	eq := bytes.IndexByte(line, '=')
	if eq <= 0 {
		return "", "", false
	}
	for j, c := range line[:eq] {
		if !(c >= 'A' && c <= 'Z' || c == '_' || j > 0 && c >= '0' && c <= '9') {
			return "", "", false
		}
	}
	return string(line[:eq]), string(line[eq+1:]), true
}

func recordFromTags(tags map[string]string) Record {
	r := Record{
		Device:    tags["DEVNAME"],
		UUID:      tags["UUID"],
		PartUUID:  firstOf(tags["PARTUUID"], tags["PART_ENTRY_UUID"]),
		Label:     tags["LABEL"],
		PartLabel: firstOf(tags["PARTLABEL"], tags["PART_ENTRY_NAME"]),
		Type:      tags["TYPE"],
		Usage:     tags["USAGE"],
	}
	if r.Usage == "" {
		r.Usage = disk.UsageForType(r.Type)
	}
	return r
}

func firstOf(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
