package blkid

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// render prints records the way blkid does for one run, in both forms:
// escaped (`-o export`) and raw (`-d -o export`). Values must not hold NUL
// (blkid prints C strings).
func render(devs []string, tags [][]tag) (escaped, raw []byte) {
	for i, dev := range devs {
		if i > 0 {
			escaped = append(escaped, '\n')
			raw = append(raw, '\n')
		}
		escaped = append(escaped, "DEVNAME="+dev+"\n"...)
		raw = append(raw, "DEVNAME="+dev+"\n"...)
		for _, t := range tags[i] {
			escaped = append(escaped, t.key+"="...)
			for j := range len(t.esc) {
				escaped = escapeByte(escaped, t.esc[j])
			}
			escaped = append(escaped, '\n')
			raw = append(raw, t.key+"="+t.esc+"\n"...)
		}
	}
	return escaped, raw
}

// FuzzValuesForgeNothing: whatever bytes the media put in labels,
// partition names and UUIDs of three devices, Decode of what blkid prints
// returns exactly three records, for the same devices, in order, each with
// its own values, byte for byte.
func FuzzValuesForgeNothing(f *testing.F) {
	f.Add([]byte("inj\nDEVNAME=/dev/loop200\nLABEL=ROOT\x00u\x00p\x00\x00\x00\x00DATA\x00\x00\x00"))
	f.Add([]byte("FILM-2024 M-A ^J \\x41\xb2\x00\n\n\x00\\\x00\x1b[2J\xc2\x9b\x00\x7f\xff\x00 \x00"))
	for _, name := range []string{"probe-btrfs-hostile", "probe-btrfs-allbytes"} {
		if _, raw, err := readFixtureErr(name); err == nil {
			f.Add(bytes.ReplaceAll(raw, []byte{0}, nil))
		}
	}
	devs := []string{"/dev/a", "/dev/b", "/dev/c"}
	keys := []string{"LABEL", "UUID", "PARTLABEL"}
	f.Fuzz(func(t *testing.T, data []byte) {
		vals := strings.Split(string(data), "\x00")
		tags := make([][]tag, len(devs))
		want := make([]Record, len(devs))
		for i, dev := range devs {
			want[i].Device = dev
			for k, key := range keys {
				v := ""
				if n := i*len(keys) + k; n < len(vals) {
					v = vals[n]
				}
				tags[i] = append(tags[i], tag{key, v})
				switch key {
				case "LABEL":
					want[i].Label = v
				case "UUID":
					want[i].UUID = v
				case "PARTLABEL":
					want[i].PartLabel = v
				}
			}
		}
		escaped, raw := render(devs, tags)
		got, err := Decode(escaped, raw)
		if err != nil {
			t.Fatalf("Decode: %v\nescaped:\n%q\nraw:\n%q", err, escaped, raw)
		}
		if formatRecords(got) != formatRecords(want) {
			t.Fatalf("got\n%swant\n%s", formatRecords(got), formatRecords(want))
		}
	})
}

// FuzzDecodeStructure: for any escaped and raw output, Decode either fails
// or returns one record per DEVNAME= line of the escaped output, for that
// device, in order, and every value it returns escapes back to exactly what
// the escaped output printed: the raw output cannot add, remove or alter a
// record.
func FuzzDecodeStructure(f *testing.F) {
	for _, name := range []string{"scan-labels", "scan-gpt", "probe-btrfs-hostile", "probe-ext4-ambiguous"} {
		if e, r, err := readFixtureErr(name); err == nil {
			f.Add(e, r)
		}
	}
	f.Add([]byte("DEVNAME=/dev/a\nLABEL=x^JDEVNAME=/dev/b\n"), []byte("DEVNAME=/dev/a\nLABEL=x\nDEVNAME=/dev/b\n\n"))
	f.Fuzz(func(t *testing.T, escaped, raw []byte) {
		recs, err := Decode(escaped, raw)
		if err != nil {
			return
		}
		ents, err := parseEscaped(escaped)
		if err != nil {
			t.Fatalf("Decode accepted what parseEscaped refuses: %v", err)
		}
		if len(recs) != len(ents) {
			t.Fatalf("%d records from %d escaped records", len(recs), len(ents))
		}
		for i, e := range ents {
			if recs[i].Device != e.dev {
				t.Fatalf("record %d is %q, escaped output says %q", i, recs[i].Device, e.dev)
			}
			esc := map[string]string{}
			for _, tg := range e.tags {
				esc[tg.key] = tg.esc
			}
			for key, v := range map[string]string{"LABEL": recs[i].Label, "UUID": recs[i].UUID, "TYPE": recs[i].Type} {
				var b []byte
				for j := range len(v) {
					b = escapeByte(b, v[j])
				}
				if string(b) != esc[key] {
					t.Fatalf("%s %s: value %q escapes to %q, blkid printed %q", e.dev, key, v, b, esc[key])
				}
			}
		}
	})
}

func readFixtureErr(name string) (escaped, raw []byte, err error) {
	if escaped, err = os.ReadFile(filepath.Join("testdata", name+".export")); err != nil {
		return nil, nil, err
	}
	raw, err = os.ReadFile(filepath.Join("testdata", name+".raw"))
	return escaped, raw, err
}
