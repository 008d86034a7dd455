// Package blkid owns running util-linux blkid(8) and parsing what it prints:
// filesystem and partition identity (UUID, label, type) of block devices.
//
// The Runner always passes -d (--no-encoding), so values come out as the
// raw bytes on disk. Without -d, `-o export` escapes shell metacharacters
// with a backslash and prints bytes >= 0x80 as "M-x" and control bytes as
// "^x", which cannot be undone: a label "M-A" and a label made of the byte
// 0xC1 print the same. ParseExport therefore reads the -d form.
package blkid

import (
	"bytes"
	"fmt"
)

// Record is what blkid knows about one device. Values are byte strings,
// exactly as stored on disk: a label need not be valid UTF-8.
type Record struct {
	Device    string // DEVNAME, the /dev path
	UUID      string
	PartUUID  string // PARTUUID, or PART_ENTRY_UUID from low-level probing
	Label     string
	PartLabel string // PARTLABEL, or PART_ENTRY_NAME from low-level probing
	Type      string // TYPE: ext4, vfat, xfs, crypto_LUKS, swap, ...
	Usage     string // USAGE: filesystem, raid, crypto, other; see UsageForType
}

// ParseExport parses the output of `blkid -d -o export`: KEY=value lines,
// one device after another, each starting with DEVNAME= (devices are also
// separated by blank lines, which are not needed to split them). Empty
// output is no devices.
//
// With -d a value is printed raw, so a newline inside a label breaks it
// over several lines; a line that is not KEY=value continues the value
// before it, with the newlines (and blank lines) between restored. A
// trailing newline in a value cannot be told from the device separator
// and is lost. A line before the first DEVNAME= is an error.
func ParseExport(out []byte) ([]Record, error) {
	var (
		recs    []Record
		tags    map[string]string // current device's tags; nil before the first DEVNAME
		lastKey string
		blanks  int // blank lines since the last non-blank one
	)
	flush := func() {
		if tags != nil {
			recs = append(recs, recordFromTags(tags))
		}
	}
	lines := bytes.Split(out, []byte("\n"))
	if len(lines) > 0 && len(lines[len(lines)-1]) == 0 {
		lines = lines[:len(lines)-1] // the final newline ends the last line
	}
	for i, line := range lines {
		if len(line) == 0 {
			blanks++
			continue
		}
		key, val, ok := splitTag(line)
		switch {
		case ok && key == "DEVNAME":
			flush()
			tags = map[string]string{key: val}
			lastKey = key
		case ok && tags != nil:
			tags[key] = val
			lastKey = key
		case ok:
			return nil, fmt.Errorf("blkid export line %d: %s= before any DEVNAME=", i+1, key)
		case tags != nil:
			// A raw newline (and maybe blank lines) inside the previous value.
			tags[lastKey] += string(bytes.Repeat([]byte("\n"), blanks+1)) + string(line)
		default:
			return nil, fmt.Errorf("blkid export line %d: not KEY=value: %q", i+1, line)
		}
		blanks = 0
	}
	flush()
	return recs, nil
}

// splitTag splits "KEY=value" where KEY is blkid's tag name syntax
// (upper-case letters, digits, underscores), so that a label line holding
// an '=' is not taken for a tag.
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
		r.Usage = UsageForType(r.Type)
	}
	return r
}

func firstOf(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// UsageForType returns the USAGE that libblkid's low-level probe reports
// for a TYPE. The cached scan (`blkid -c /dev/null`) prints no USAGE, so
// the parser derives it here: RAID and volume-manager members are "raid",
// encrypted containers "crypto", swap and other non-mountable signatures
// "other", and everything else (the filesystems) "filesystem". An empty
// type (a bare partition) has no usage.
func UsageForType(typ string) string {
	switch {
	case typ == "":
		return ""
	case len(typ) > len("_raid_member") && typ[len(typ)-len("_raid_member"):] == "_raid_member":
		// linux_raid_member, isw_raid_member, ddf_raid_member, ...
		return "raid"
	}
	switch typ {
	case "LVM1_member", "LVM2_member", "drbd", "mpath_member", "stratis",
		"VMFS_volume_member":
		return "raid"
	case "crypto_LUKS", "BitLocker", "DM_integrity", "DM_verity_hash":
		return "crypto"
	case "swap", "swsuspend", "bcache", "ceph_bluestore", "vdo", "DM_snapshot_cow":
		return "other"
	}
	return "filesystem"
}
