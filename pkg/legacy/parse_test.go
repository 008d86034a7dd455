package legacy

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"
)

func readDgram(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "captured", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestParseCaptured: datagrams captured from the original (see
// testdata/captured/README), each with the disks it really announced.
func TestParseCaptured(t *testing.T) {
	for _, c := range []struct {
		file string
		want []Entry
		err  Reason
	}{
		{"packet-sample-1.dgram", []Entry{
			{"1111aaaa-0000-4000-8000-00000000000a", "root-a", "/dev/sda1"},
			{"2222aaaa-0000-4000-8000-00000000000b", "My Backup Disk", "/dev/sdb1"},
			{"3333-AAAA", "", "/dev/sdc1"}}, 0},
		{"packet-sample-2.dgram", []Entry{
			{"4444bbbb-0000-4000-8000-00000000000c", "rootfs-b", "/dev/vda1"},
			{"5555bbbb-0000-4000-8000-00000000000d", "data:b", "/dev/vdb"}}, 0},
		{"packet-sample-3.dgram", []Entry{
			{"1111aaaa-0000-4000-8000-00000000000a", "root-a", "/dev/sda1"},
			{"0f1e2d3c-01", "EFI system partition", "/dev/sdd1"},
			{"6666-UTF8", "Données été", "/dev/sde1"}, // double UTF-8 undone
			{"7777-QUOTE", `say \`, "/dev/sdf1"},      // the original cut it there
			{"8888-NUM", "1234", "/dev/sdg1"},
			{"9999-BOOL", "true", "/dev/sdh1"},
			{"aaaa-COLON", "a: b #c", "/dev/sdi1"},
			{"bbbb-DASH", "- dash", "/dev/sdj1"},
			{"cccc-TILDE", "~", "/dev/sdk1"},
			{"0123", "x", "/dev/sdl1"},
			{"dddd-COLONDEV", "colon-dev", "/dev/disk/by-id/usb-X"}}, 0},
		{"packet-sample-4.dgram", []Entry{}, 0},
		{"empty.dgram", []Entry{}, 0},
		{"packet-sample-5.dgram", nil, ReasonShape}, // "--- {}": blkid still running
		{"slow-blkid.dgram", nil, ReasonShape},
		{"legacy_b.dgram", []Entry{{"1111aaaa-0000-4000-8000-00000000000a", "LEGACY_B", "/dev/sdz1"}}, 0},
		{"nonascii.dgram", []Entry{
			{"3333-UTF8", "Données été", "/dev/sda1"},
			{"3333-CJK0", "写真", "/dev/sdb1"},
			{"3333-MIX0", "Ünïcødé ✓", "/dev/sdc1"},
			{"3333-LAT1", "café", "/dev/sdd1"}}, 0}, // a lone Latin-1 byte: the best we can do
		{"nulluuid.dgram", []Entry{
			{"", "NOUUID", "/dev/sda1"},
			{"4444-NOLB", "", "/dev/sdb1"},
			{"00000000-0000-0000-0000-000000000000", "NILUUID", "/dev/sdc1"},
			{"4444-NULL", "null", "/dev/sdd1"},
			{"4444-TILD", "~", "/dev/sde1"}}, 0},
		{"real-blkid.dgram", []Entry{ // blkid's M-/^ notation undone
			{"60d831bc-28de-4258-a591-65690fed6971", "Données été", "/dev/loop225"},
			{"EF4C-8B65", "MY DISK", "/dev/loop226"},
			{"0266b5a4-cd66-4ffa-8b9a-0dce98200468", "", "/dev/loop227"},
			{"793df3ac-2b83-442e-a988-7c54b55d2092", "tab\tx", "/dev/loop228"}}, 0},
		{"spaces.dgram", []Entry{
			{"2222aaaa-0000-4000-8000-00000000000b", "My Backup Disk", "/dev/sda1"},
			{"2222aaaa-0000-4000-8000-00000000000c", " lead and trail ", "/dev/sdb1"},
			{"2222-SP02", "two  spaces", "/dev/sdc1"},
			{"2222-TAB0", "tab\there", "/dev/sdd1"},
			{"2222-COLN", "Photos 2013: Summer #1", "/dev/sde1"}}, 0},
	} {
		got, err := Parse(readDgram(t, c.file))
		if ReasonOf(err) != c.err {
			t.Errorf("%s: error %v, want reason %v", c.file, err, c.err)
			continue
		}
		if fmt.Sprintf("%q", got) != fmt.Sprintf("%q", c.want) {
			t.Errorf("%s:\n got %q\nwant %q", c.file, got, c.want)
		}
	}
}

func TestDecodeLabel(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"plain", "plain"},
		{"DonnÃ©es", "Données"},              // double UTF-8
		{"å\u0086\u0099ç\u009c\u009f", "写真"}, // double UTF-8 through C1 characters
		{"café", "café"},                     // a lone Latin-1 byte arrives as this
		{"DonnM-CM-)es", "Données"},          // blkid notation
		{"tab^Ix", "tab\tx"},                 // control character
		{"M-eM-^FM-^YM-gM-^\\M-^_", "写真"},    // M-^\ is 0x9c
		{`a\\b`, `a\b`},                      // blkid escapes the backslash
		{`say \"hi\"`, `say "hi"`},           //  and the quote
		{"M-DISC", "M-DISC"},                 // decodes to invalid UTF-8: a real label
		{"x^@y", "x^@y"},                     // NUL: kept as text
		{"a^b", "a^b"},                       // not the notation
		{"^", "^"},
		{"M-", "M-"},
		{"Ã", "Ã"}, // c3 alone is not UTF-8
	} {
		if got := DecodeLabel(c.in); got != c.want {
			t.Errorf("DecodeLabel(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// malformed is every kind of bad datagram the bridge must refuse (the
// original dies on most of them), with the reason it is counted under.
func malformed() []struct {
	name string
	b    []byte
	want Reason
} {
	type c = struct {
		name string
		b    []byte
		want Reason
	}
	d := func(s string) []byte { return []byte(Prefix + s) }
	deepFlow := strings.Repeat("[", 700) + strings.Repeat("]", 700)
	deepBlock := "---\n"
	for i := range 30 {
		deepBlock += strings.Repeat("  ", i) + "- - x\n"
	}
	bomb := "---\na: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n"
	for i, p := 'b', 'a'; i <= 'i'; i, p = i+1, i {
		bomb += fmt.Sprintf("%c: &%c [*%c,*%c,*%c,*%c,*%c,*%c,*%c,*%c,*%c]\n", i, i, p, p, p, p, p, p, p, p, p)
	}
	return []c{
		{"no prefix", []byte("hello world"), ReasonNoPrefix},
		{"prefix only", d(""), ReasonSyntax},
		{"space after prefix", []byte("diskd: ---\n- - a\n  - b\n  - c\n"), ReasonSyntax},
		{"oversized", append(d("---\n- - a\n  - b\n  - "), []byte(strings.Repeat("c", 1500)+"\n")...), ReasonTooBig},
		{"binary", []byte("diskd:\x00\x01\x02\xff\xfe"), ReasonEncoding},
		{"invalid UTF-8", d("---\n- - a\n  - \xc3\x28\n  - c\n"), ReasonEncoding},
		{"raw tab", d("---\n- - a\n  - a\tb\n  - c\n"), ReasonEncoding},
		{"CR line ends", d("---\r\n- - a\r\n  - b\r\n  - c\r\n"), ReasonEncoding},
		{"BOM", d("\ufeff---\n- - a\n  - b\n  - c\n"), ReasonEncoding},
		{"unclosed flow", d("[unclosed"), ReasonSyntax},
		{"flow list", d("--- [1, 2]\n"), ReasonSyntax},
		{"flow entries", d("---\n- [a, b, c]\n"), ReasonShape},
		{"mapping", d("--- {}\n"), ReasonShape},
		{"block mapping", d("---\na: b\n"), ReasonSyntax},
		{"alias bomb", d(bomb), ReasonSyntax},
		{"anchor on entry", d("---\n- - &a x\n  - b\n  - c\n"), ReasonSyntax},
		{"alias field", d("---\n- - *a\n  - b\n  - c\n"), ReasonSyntax},
		{"tag", d("---\n- - !!binary eA==\n  - b\n  - c\n"), ReasonSyntax},
		{"perl object tag", d("--- !!perl/array:Foo []\n"), ReasonSyntax},
		{"directive", d("%YAML 1.1\n---\n- - a\n  - b\n  - c\n"), ReasonSyntax},
		{"deep flow", d("--- " + deepFlow + "\n"), ReasonSyntax},
		{"deep block", d(deepBlock), ReasonShape},
		{"nested field", d("---\n- - - x\n  - b\n  - c\n"), ReasonShape},
		{"scalar entry", d("---\n- x\n"), ReasonShape},
		{"two fields", d("---\n- - a\n  - b\n"), ReasonShape},
		{"two fields then more", d("---\n- - a\n  - b\n- - a\n  - b\n  - c\n"), ReasonShape},
		{"four fields", d("---\n- - a\n  - b\n  - c\n  - d\n"), ReasonShape},
		{"mapping field", d("---\n- - a: b\n  - b\n  - c\n"), ReasonShape},
		{"block scalar", d("---\n- - |\n    x\n  - b\n  - c\n"), ReasonSyntax},
		{"comment", d("---\n- - a # c\n  - b\n  - c\n"), ReasonSyntax},
		{"two documents", d("---\n- - a\n  - b\n  - c\n---\n- - a\n  - b\n  - c\n"), ReasonSyntax},
		{"document end", d("---\n- - a\n  - b\n  - c\n...\n"), ReasonSyntax},
		{"unterminated", d("---\n- - a\n  - b\n  - c"), ReasonSyntax},
		{"unclosed quote", d("---\n- - 'a\n  - b\n  - c\n"), ReasonSyntax},
		{"bad escape", d("---\n- - \"\\q\"\n  - b\n  - c\n"), ReasonSyntax},
		{"surrogate escape", d("---\n- - \"\\uD800\"\n  - b\n  - c\n"), ReasonSyntax},
		{"NUL escape", d("---\n- - \"a\\0\"\n  - b\n  - c\n"), ReasonEncoding},
		{"long field", d("---\n- - a\n  - " + strings.Repeat("x", 300) + "\n  - c\n"), ReasonLimits},
		{"implicit document", d("- - a\n  - b\n  - c\n"), ReasonSyntax},
		{"empty", d("---\n"), ReasonSyntax},
		{"wrong indent", d("---\n- - a\n   - b\n  - c\n"), ReasonSyntax},
		{"extra space", d("---\n- -  a\n  - b\n  - c\n"), ReasonSyntax},
		{"plain boolean", d("---\n- - a\n  - true\n  - c\n"), ReasonSyntax},
	}
}

func TestParseMalformed(t *testing.T) {
	for _, c := range malformed() {
		if got, err := Parse(c.b); ReasonOf(err) != c.want {
			t.Errorf("%s: %v (%q), want reason %v", c.name, err, got, c.want)
		}
	}
}

// TestParseAgreesWithPerl: on every datagram we accept, the original's
// own YAML::XS::Load reads the same list (before our text decoding); the
// malformed ones are refused by us whatever it does with them.
func TestParseAgreesWithPerl(t *testing.T) {
	requirePerlYAML(t)
	files, _ := filepath.Glob("testdata/captured/*.dgram")
	var dgrams [][]byte
	for _, f := range files {
		b, _ := os.ReadFile(f)
		dgrams = append(dgrams, b)
	}
	for _, c := range cases() {
		b, _ := Encode(c.entries)
		dgrams = append(dgrams, b)
	}
	for _, b := range dgrams {
		ours, err := Parse(b)
		if err != nil {
			continue
		}
		perl, err := perlRows(perlLoad(t, b))
		if err != nil {
			t.Fatalf("%q: %v", b, err)
		}
		if len(perl) != len(ours) {
			t.Fatalf("%q: Perl %d entries, ours %d", b, len(perl), len(ours))
		}
		for i, e := range ours {
			for k, f := range []string{e.UUID, e.Label, e.Device} {
				var want string
				if p := perl[i][k]; p != nil {
					want = DecodeText(*p)
					if k == 1 {
						want = DecodeLabel(*p)
					}
				}
				if f != want {
					t.Errorf("entry %d field %d: ours %q, Perl's decoded %q", i, k, f, want)
				}
			}
		}
	}
}

// TestParseMutationsAgreeWithPerl: thousands of datagrams made by
// changing, inserting or deleting bytes of good ones. Whatever we accept,
// YAML::XS reads too, as the same list: Parse accepts a subset of what the
// original reads, never another reading of it.
func TestParseMutationsAgreeWithPerl(t *testing.T) {
	requirePerlYAML(t)
	var seeds [][]byte
	files, _ := filepath.Glob("testdata/captured/*.dgram")
	for _, f := range files {
		b, _ := os.ReadFile(f)
		seeds = append(seeds, b)
	}
	for _, c := range cases() {
		b, _ := Encode(c.entries)
		seeds = append(seeds, b)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []byte(" \n-:#'\"~[]{}&*!|>\\x0123456789abcM^é")
	var accepted [][]byte
	var got [][]Entry
	tried := 0
	for range 20000 {
		b := bytes.Clone(seeds[rng.IntN(len(seeds))])
		for range 1 + rng.IntN(3) {
			i := len(Prefix) + rng.IntN(len(b)-len(Prefix)+1)
			c := alphabet[rng.IntN(len(alphabet))]
			switch rng.IntN(3) {
			case 0:
				if i < len(b) {
					b[i] = c
				}
			case 1:
				b = append(b[:i], append([]byte{c}, b[i:]...)...)
			default:
				if i < len(b) {
					b = append(b[:i], b[i+1:]...)
				}
			}
		}
		tried++
		if es, err := Parse(b); err == nil {
			accepted = append(accepted, b)
			got = append(got, es)
		}
	}
	var in bytes.Buffer
	for _, b := range accepted {
		in.WriteString(hex.EncodeToString(b) + "\n")
	}
	cmd := exec.Command("perl", "testdata/loadmany.pl")
	cmd.Stdin = &in
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	if len(lines) != len(accepted) {
		t.Fatalf("%d answers for %d datagrams", len(lines), len(accepted))
	}
	for k, line := range lines {
		perl, err := perlRows(line)
		if err != nil || len(perl) != len(got[k]) {
			t.Errorf("we accept %q as %q; YAML::XS reads %s", accepted[k], got[k], line)
			continue
		}
		for i, e := range got[k] {
			for f, v := range []string{e.UUID, e.Label, e.Device} {
				var want string
				if p := perl[i][f]; p != nil {
					want = DecodeText(*p)
					if f == 1 {
						want = DecodeLabel(*p)
					}
				}
				if v != want {
					t.Errorf("we read %q field %d,%d as %q; YAML::XS as %q", accepted[k], i, f, v, want)
				}
			}
		}
	}
	t.Logf("%d mutated datagrams, %d accepted, all read alike by YAML::XS", tried, len(accepted))
}

// perlRows reads load.pl's JSON: a list of rows of strings or nulls; a
// number (YAML::XS reads a plain integer as one) is taken as its text,
// which is how Perl prints it.
func perlRows(js string) ([][]*string, error) {
	dec := json.NewDecoder(strings.NewReader(js))
	dec.UseNumber()
	var raw [][]any
	if err := dec.Decode(&raw); err != nil {
		return nil, err
	}
	out := make([][]*string, len(raw))
	for i, row := range raw {
		for _, v := range row {
			switch x := v.(type) {
			case nil:
				out[i] = append(out[i], nil)
			case string:
				out[i] = append(out[i], &x)
			case json.Number:
				s := x.String()
				out[i] = append(out[i], &s)
			default:
				return nil, fmt.Errorf("row %d: %T", i, v)
			}
		}
	}
	return out, nil
}

func FuzzLegacyParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/captured/*.dgram")
	for _, p := range files {
		b, _ := os.ReadFile(p)
		f.Add(b)
	}
	for _, c := range malformed() {
		f.Add(c.b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		es, err := Parse(b)
		if err != nil {
			if ReasonOf(err) == ReasonNone {
				t.Fatal("error without reason")
			}
			return
		}
		if len(b) > MaxDatagram || len(es) > MaxEntries {
			t.Fatalf("accepted %d bytes, %d entries", len(b), len(es))
		}
		for _, e := range es {
			for _, v := range []string{e.UUID, e.Label, e.Device} {
				if len(v) > MaxField || !utf8.ValidString(v) || strings.IndexByte(v, 0) >= 0 {
					t.Fatalf("field %q", v)
				}
			}
		}
	})
}

// FuzzLegacyEncode: whatever our fields hold, the datagram fits, and Parse
// reads back every entry sent.
func FuzzLegacyEncode(f *testing.F) {
	f.Add("1111-AAAA", "Données été", "/dev/sda1", 3)
	f.Add("", "'a: b #c", "", 1)
	f.Add("x", "tab\there "+strings.Repeat("long ", 30), "/dev/x", 40)
	f.Fuzz(func(t *testing.T, uuid, label, dev string, n int) {
		n = max(0, min(n, 60))
		es := make([]Entry, n)
		for i := range es {
			es[i] = Entry{uuid, label, dev}
		}
		b, skipped := Encode(es)
		if len(b) > MaxDatagram {
			t.Fatalf("%d bytes", len(b))
		}
		got, err := Parse(b)
		nul := strings.ContainsRune(uuid+label+dev, 0)
		long := len(prepare(uuid)) > MaxField/2 || len(prepare(label)) > MaxField/2 || len(prepare(dev)) > MaxField/2
		if err != nil {
			if !nul && !long {
				t.Fatalf("Parse(Encode): %v\n%s", err, b)
			}
			return
		}
		if len(got)+skipped != n {
			t.Fatalf("%d back, %d skipped, of %d", len(got), skipped, n)
		}
	})
}
