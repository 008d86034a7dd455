package api_test

import (
	"bytes"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/diskd/diskd/pkg/api"
	"github.com/diskd/diskd/pkg/disk"
	"github.com/diskd/diskd/pkg/testutil"
)

func TestEscape(t *testing.T) {
	for in, want := range map[string]string{
		"":                     "",
		"BACKUP 2024":          "BACKUP 2024",
		"café ü 日本 🙂":          "café ü 日本 🙂",
		`a\b`:                  `a\\b`,
		`\x1b`:                 `\\x1b`, // the text, not the byte
		"\x1b[31mred\x1b[0m":   `\x1b[31mred\x1b[0m`,
		"a\nb\tc\rd\x00e\x7f":  `a\x0ab\x09c\x0dd\x00e\x7f`,
		"csi\u009b31m":         `csi\u009b31m`,
		"nel\u0085":            `nel\u0085`,
		"raw\x9b31m \xff\xc3":  `raw\x9b31m \xff\xc3`,
		"rlo\u202eevil":        `rlo\u202eevil`,
		"BACK\u200bUP":         `BACK\u200bUP`,
		"iso\u2066x\u2069":     `iso\u2066x\u2069`,
		"bom\ufeff ls\u2028":   `bom\ufeff ls\u2028`,
		"\u00a0nbsp \ufffd ok": "\u00a0nbsp \ufffd ok",
	} {
		if got := api.Escape(in); got != want {
			t.Errorf("api.Escape(%q) = %q, want %q", in, got, want)
		}
	}
}

// unescape undoes Escape, to show that Escape loses nothing and that two
// different values never print the same.
func unescape(t *testing.T, s string) string {
	var b []byte
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			b = append(b, s[i])
			continue
		}
		i++
		switch s[i] {
		case '\\':
			b = append(b, '\\')
		case 'x':
			v, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
			if err != nil {
				t.Fatalf("bad escape in %q", s)
			}
			b = append(b, byte(v))
			i += 2
		case 'u':
			v, err := strconv.ParseUint(s[i+1:i+5], 16, 32)
			if err != nil {
				t.Fatalf("bad escape in %q", s)
			}
			b = utf8.AppendRune(b, rune(v))
			i += 4
		default:
			t.Fatalf("bad escape in %q", s)
		}
	}
	return string(b)
}

// safe reports why s is not safe for a terminal cell, or "".
func unsafeIn(s string) string {
	if !utf8.ValidString(s) {
		return "invalid UTF-8"
	}
	for _, r := range s {
		if r < 0x20 || r >= 0x7f && r <= 0x9f || r == '\u2028' || r == '\u2029' || unicode.Is(unicode.Cf, r) {
			return "control " + strconv.QuoteRune(r)
		}
	}
	return ""
}

// FuzzEscape: Escape's output is always safe on a terminal, and it can be
// undone exactly (no two values print the same).
func FuzzEscape(f *testing.F) {
	for _, s := range []string{"", "plain", "\x1b[2J\u009b\xff\\x41\u202e\n\t"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		e := api.Escape(s)
		if why := unsafeIn(e); why != "" {
			t.Fatalf("api.Escape(%q) = %q: %s", s, e, why)
		}
		if back := unescape(t, e); back != s {
			t.Fatalf("api.Escape(%q) = %q, which reads back as %q", s, e, back)
		}
	})
}

// hostile is a value every field of the golden test holds: terminal
// escapes, C1 CSI, a bidi override, a zero-width space, a newline, a tab,
// bytes that are not UTF-8 and a backslash.
const hostile = "\x1b]0;owned\x07\x1b[2J\u009b31m\u202eRLO\u200b\n\tX\xff\\"

// TestHumanFormsGolden prints every human form with hostile values in every
// field that comes from outside: nothing unsafe reaches the terminal.
func TestHumanFormsGolden(t *testing.T) {
	loc := time.Local
	time.Local = time.UTC // golden times
	t.Cleanup(func() { time.Local = loc })
	at := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	d := disk.Disk{Node: disk.NodeID(hostile), Host: "h" + hostile, Name: "n" + hostile, Device: "/dev/" + hostile,
		UUID: "u" + hostile, Label: "L" + hostile, PartLabel: "P" + hostile, Type: "t" + hostile,
		Mounts: []string{"/mnt/" + hostile, "/m2"}, Present: true, LastSeen: at, Size: 1 << 30}
	gone := d
	gone.Present = false
	n := disk.Node{ID: disk.NodeID("id" + hostile), Name: "node" + hostile, Online: true, LastSeen: at, Disks: 1,
		Addresses: []string{"a" + hostile}}
	st := api.Status{Version: "v" + hostile, NodeID: disk.NodeID(hostile), NodeName: "me" + hostile, StateDir: "/s" + hostile,
		Socket: "/sock" + hostile, DBus: "bus" + hostile, Problems: []string{"p" + hostile},
		Scan:    api.ScanStatus{LastScan: at, LastError: "blkid: " + hostile, LastErrorTime: at},
		Network: &api.NetStatus{Groups: []string{"g" + hostile}, Interfaces: []string{"i" + hostile}, Counters: map[string]uint64{"c" + hostile: 1}}}
	var b bytes.Buffer
	b.WriteString("== disks\n")
	api.WriteDisks(&b, []disk.Disk{d, gone})
	b.WriteString("== where\n")
	api.WriteWhere(&b, "q"+hostile, []disk.Disk{d, gone})
	api.WriteWhere(&b, "q"+hostile, nil)
	b.WriteString("== nodes\n")
	api.WriteNodes(&b, []disk.Node{n})
	b.WriteString("== status\n")
	api.WriteStatus(&b, st)
	b.WriteString("== events\n")
	api.WriteEvent(&b, api.WatchEvent{Kind: "added" + hostile, Time: at, Disk: &d})
	api.WriteEvent(&b, api.WatchEvent{Kind: "node-changed", Time: at, Node: &n})
	b.WriteString("== localhost\n")
	api.WriteLocalhost(&b, api.Localhost{NodeID: disk.NodeID(hostile), Name: "me" + hostile, Addresses: []string{"a" + hostile}})
	out := b.String()
	for i, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		if why := unsafeIn(line); why != "" {
			t.Errorf("line %d: %s: %q", i+1, why, line)
		}
	}
	if !strings.Contains(out, `\x1b]0;owned\x07\x1b[2J\u009b31m\u202eRLO\u200b\x0a\x09X\xff\\`) {
		t.Errorf("the hostile value is not shown escaped")
	}
	testutil.Golden(t, "testdata/human-hostile.golden", out)
}
