package legacy

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/diskd/diskd/pkg/testutil"
)

var perlGolden = flag.Bool("perl-golden", false, "rewrite testdata/encode/*.golden by running the real YAML::XS dumper (testdata/dump.pl)")

// encodeCases are lists of our fields (bytes as blkid gives them) with
// golden datagrams made by the original's own dumper, YAML::XS, from the
// same values (see TestEncodeMatchesPerl).
var encodeCases = []struct {
	name    string
	entries []Entry
}{
	{"empty", nil},
	// The disks of packet-sample-1.dgram, captured from the original.
	{"sample1", []Entry{
		{"1111aaaa-0000-4000-8000-00000000000a", "root-a", "/dev/sda1"},
		{"2222aaaa-0000-4000-8000-00000000000b", "My Backup Disk", "/dev/sdb1"},
		{"3333-AAAA", "", "/dev/sdc1"}}},
	{"quoting", entriesOf("1234", "0123", "true", "false", "null", "~", "a: b #c", "- dash", " lead and trail ",
		"two  spaces", "Photos 2013: Summer #1", "say \"hi\"", "it's", "'x", "\"x", "1e5", "1e", "-3.5", ".5", "5.",
		"+.5", " 12", "12 ", "Inf", "nan", "NaN", "infinity", "0 but true", "0x10", "1_000", "-", "?", ":", "-x", "?x", ":x",
		"x:", "x: y", "x:y", "a #b", "a#b", "#x", "@x", "`x", "%x", "!x", "&x", "*x", "|x", ">x", "[x", "]x", "{x",
		"}x", ",x", "x,y", "x[y]", "---", "---x", "...", "..x", "a\tb", "a\\b", "yes", "No", "~x")},
	{"nonascii", entriesOf("Données été", "写真", "Ünïcødé ✓", "😀 smile", "caf\xe9", "\x86\x99", "a\u00a0b",
		"\ufeffbom", "x\u00ffy", "\u0100", "\u3000wide", "\uffff", "\ue000")},
	{"control", entriesOf("a\x01b", "bell\a", "esc\x1b", "del\x7f", "line\nbreak", "cr\rx",
		"nel\u0085x", "ls\u2028x", "ps\u2029x", "\t", "tab\there")},
	// Not from blkid (C strings); YAML::XS prints it, Parse refuses it.
	{"nul", entriesOf("nul\x00")},
	{"folding", entriesOf(
		"a very long label with many spaces that goes on and on and on and on past column eighty for sure yes",
		"'quoted long label with many spaces that goes on and on and on and on past column eighty for sure yes",
		"tab\there long label with many spaces that goes on and on and on and on past column eighty for   sure yes",
		"a long label whose words line up so that    several spaces fall right at the place where it is folded",
		"\ttab long label with spaces that goes on and on and on and on and on and on past column   eighty  x  y",
		strings.Repeat("x", 90)+" tail",
		strings.Repeat("word ", 50)+"end",
		strings.Repeat("é ", 60)+"ü",
		strings.Repeat("ab", 45)+" - "+strings.Repeat("cd", 10)+" #x",
		strings.Repeat("nospaceatall", 12))},
}

// entriesOf makes one entry per label, with a plain UUID and device.
func entriesOf(labels ...string) []Entry {
	var es []Entry
	for i, l := range labels {
		es = append(es, Entry{UUID: fmt.Sprintf("%04d-ABCD", i), Label: l, Device: fmt.Sprintf("/dev/sd%c1", 'a'+i%26)})
	}
	return es
}

// cases splits encodeCases so each fits one datagram.
func cases() (out []struct {
	name    string
	entries []Entry
}) {
	for _, c := range encodeCases {
		if len(c.entries) <= 6 {
			out = append(out, c)
			continue
		}
		for i := 0; i < len(c.entries); i += 6 {
			c2 := c
			c2.name = fmt.Sprintf("%s-%d", c.name, i/6+1)
			c2.entries = c.entries[i:min(i+6, len(c.entries))]
			out = append(out, c2)
		}
	}
	return out
}

func goldenPath(name string) string { return filepath.Join("testdata", "encode", name+".golden") }

func TestEncodeGolden(t *testing.T) {
	for _, c := range cases() {
		t.Run(c.name, func(t *testing.T) {
			got, skipped := Encode(c.entries)
			if skipped != 0 {
				t.Fatalf("skipped %d", skipped)
			}
			if *perlGolden {
				if err := os.WriteFile(goldenPath(c.name), perlDump(t, c.entries), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			testutil.Golden(t, goldenPath(c.name), string(got))
		})
	}
}

// TestEncodeMatchesPerl runs the original's dumper on the same values now
// (when perl and YAML::XS are installed), so the golden files cannot
// drift from what it prints.
func TestEncodeMatchesPerl(t *testing.T) {
	requirePerlYAML(t)
	for _, c := range cases() {
		got, _ := Encode(c.entries)
		if want := perlDump(t, c.entries); !bytes.Equal(got, want) {
			t.Errorf("%s: ours differs from YAML::XS\n--- ours\n%s--- YAML::XS\n%s", c.name, got, want)
		}
	}
}

func requirePerlYAML(t testing.TB) {
	t.Helper()
	if err := exec.Command("perl", "-MYAML::XS", "-MJSON::PP", "-e", "1").Run(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("perl with YAML::XS not installed; .ci/run must install test/ci-packages.txt: %v", err)
		}
		t.Skipf("perl with YAML::XS not available (apt-get install libyaml-libyaml-perl): %v", err)
	}
}

// perlDump is the original's datagram for entries: the fields as the
// character strings its Dump would be given (prepare), missing ones undef.
func perlDump(t testing.TB, es []Entry) []byte {
	t.Helper()
	list := make([][3]*string, 0, len(es))
	for _, e := range es {
		var row [3]*string
		for i, f := range []string{e.UUID, e.Label, e.Device} {
			if f != "" {
				p := prepare(f)
				row[i] = &p
			}
		}
		list = append(list, row)
	}
	in, err := json.Marshal(list)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("perl", "testdata/dump.pl")
	cmd.Stdin = bytes.NewReader(in)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("dump.pl: %v", err)
	}
	return out
}

// perlLoad is what the original makes of a datagram: the list as JSON, or
// "ERROR: ..." when its YAML::XS::Load dies.
func perlLoad(t testing.TB, dgram []byte) string {
	t.Helper()
	cmd := exec.Command("perl", "testdata/load.pl")
	cmd.Stdin = bytes.NewReader(dgram)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("load.pl: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// TestRoundTripThroughPerl: what we send, the original's Load reads as the
// values we meant, and our Parse gives the fields back.
func TestRoundTripThroughPerl(t *testing.T) {
	requirePerlYAML(t)
	for _, c := range cases() {
		if c.name == "nul" {
			continue
		}
		dg, _ := Encode(c.entries)
		var got [][3]*string
		if err := json.Unmarshal([]byte(perlLoad(t, dg)), &got); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		for i, e := range c.entries {
			for k, f := range []string{e.UUID, e.Label, e.Device} {
				want := prepare(f)
				if g := got[i][k]; f == "" && g != nil || f != "" && (g == nil || *g != want) {
					t.Errorf("%s entry %d field %d: Perl loads %v, want %q", c.name, i, k, deref(g), want)
				}
			}
		}
		back, err := Parse(dg)
		if err != nil {
			t.Fatalf("%s: Parse of our own datagram: %v", c.name, err)
		}
		if len(back) != len(c.entries) {
			t.Fatalf("%s: %d entries back, want %d", c.name, len(back), len(c.entries))
		}
		for i, e := range c.entries {
			if want := roundTrip(e); back[i] != want {
				t.Errorf("%s entry %d: parsed %+q, want %+q", c.name, i, back[i], want)
			}
		}
	}
}

func deref(p *string) any {
	if p == nil {
		return nil
	}
	return *p
}

// roundTrip is what our Parse gives for an entry we sent: the same bytes,
// except that bytes which are not UTF-8 come back as the Latin-1
// characters the original would have made of them.
func roundTrip(e Entry) Entry {
	return Entry{UUID: DecodeText(prepare(e.UUID)), Label: DecodeLabel(prepare(e.Label)), Device: DecodeText(prepare(e.Device))}
}

func TestEncodeOverflow(t *testing.T) {
	var es []Entry
	for i := range 40 {
		es = append(es, Entry{UUID: fmt.Sprintf("%08d-0000-4000-8000-000000000000", i), Label: fmt.Sprintf("label-%02d", i), Device: fmt.Sprintf("/dev/sd%02d", i)})
	}
	b, skipped := Encode(es)
	if len(b) > MaxDatagram {
		t.Fatalf("%d bytes", len(b))
	}
	got, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if skipped == 0 || len(got)+skipped != len(es) {
		t.Errorf("%d sent, %d skipped of %d", len(got), skipped, len(es))
	}
	// A long entry that does not fit leaves room for a short one after it.
	n := len(got)
	long := Entry{UUID: "x", Label: strings.Repeat("L", 250), Device: "/dev/long"}
	b, skipped = Encode(append(append(es[:n-1:n-1], long), es[n-1]))
	if got2, err := Parse(b); err != nil || skipped != 1 || len(got2) != n || got2[n-1] != es[n-1] {
		t.Errorf("skipped %d, sent %d (%v), want 1 and %d", skipped, len(got2), err, n)
	}
}
