package blkid

import (
	"fmt"
	"github.com/diskd/diskd/pkg/testutil"
	"path/filepath"
	"strings"
	"testing"
)

// formatRecords renders records for golden files. %q keeps every byte
// (invalid UTF-8 shows as \xNN), which JSON would not.
func formatRecords(recs []Record) string {
	var b strings.Builder
	for i, r := range recs {
		fmt.Fprintf(&b, "# record %d\n", i+1)
		fmt.Fprintf(&b, "Device    %q\nUUID      %q\nPartUUID  %q\nLabel     %q\nPartLabel %q\nType      %q\nUsage     %q\n",
			r.Device, r.UUID, r.PartUUID, r.Label, r.PartLabel, r.Type, r.Usage)
	}
	if len(recs) == 0 {
		b.WriteString("# no records\n")
	}
	return b.String()
}

// readFixture returns the escaped and raw forms of a captured fixture.
func readFixture(t testing.TB, name string) (escaped, raw []byte) {
	t.Helper()
	escaped, raw, err := readFixtureErr(name)
	if err != nil {
		t.Fatal(err)
	}
	return escaped, raw
}

// TestDecodeGolden decodes real blkid output captured on loop devices (see
// TestCaptureFixtures) and compares with the golden files.
func TestDecodeGolden(t *testing.T) {
	inputs, err := filepath.Glob("testdata/*.export")
	if err != nil {
		t.Fatal(err)
	}
	if len(inputs) < 5 {
		t.Fatalf("only %d fixtures in testdata/", len(inputs))
	}
	for _, in := range inputs {
		name := strings.TrimSuffix(filepath.Base(in), ".export")
		t.Run(name, func(t *testing.T) {
			escaped, raw := readFixture(t, name)
			recs, err := Decode(escaped, raw)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			testutil.Golden(t, strings.TrimSuffix(in, ".export")+".golden", formatRecords(recs))
		})
	}
}

// TestDecodeFixtureValues pins the values that matter in the captured
// fixtures, so a wrong golden file cannot be blessed with -update unseen.
func TestDecodeFixtureValues(t *testing.T) {
	find := func(t *testing.T, file string, pred func(Record) bool) Record {
		t.Helper()
		recs, err := Decode(readFixture(t, file))
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			if pred(r) {
				return r
			}
		}
		t.Fatalf("%s: no matching record in %s", file, formatRecords(recs))
		return Record{}
	}
	for _, d := range labelDisks {
		t.Run(d.name, func(t *testing.T) {
			byUUID := func(r Record) bool { return strings.EqualFold(r.UUID, d.want.UUID) }
			scan := find(t, "scan-labels", byUUID)
			probe := find(t, "probe-"+d.name, byUUID)
			for what, r := range map[string]Record{"scan": scan, "probe": probe} {
				r.Device = ""
				if r != d.want {
					t.Errorf("%s:\n got %+q\nwant %+q", what, r, d.want)
				}
			}
		})
	}
	t.Run("gpt", func(t *testing.T) {
		for _, file := range []string{"scan-gpt", "probe-gpt-p1"} {
			r := find(t, file, func(r Record) bool { return strings.EqualFold(r.PartUUID, gptPart1UUID) })
			if r.PartLabel != "part one" || r.UUID != "" || r.Type != "" || r.Usage != "" {
				t.Errorf("%s: partition without filesystem: %+q", file, r)
			}
		}
		for _, file := range []string{"scan-gpt", "probe-gpt-p2"} {
			r := find(t, file, func(r Record) bool { return strings.EqualFold(r.PartUUID, gptPart2UUID) })
			if r.UUID != gptPart2FSUUID || r.Type != "ext4" || r.Usage != "filesystem" {
				t.Errorf("%s: partition with ext4: %+q", file, r)
			}
		}
	})
	// The hostile label forges nothing: as many records as devices, each
	// device once, and no device named by the label.
	escaped, _ := readFixture(t, "scan-labels")
	ents, err := parseEscaped(escaped)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != len(labelDisks) {
		t.Errorf("scan-labels: %d records for %d devices", len(ents), len(labelDisks))
	}
	for _, e := range ents {
		if e.dev == "/dev/loop200" || e.dev == "/dev/loop201" {
			t.Errorf("phantom device %s", e.dev)
		}
	}
}

// TestEscapeByteMatchesBlkid: escaping every byte the way escapeByte does
// gives what the real blkid printed for the label holding them all.
func TestEscapeByteMatchesBlkid(t *testing.T) {
	escaped, _ := readFixture(t, "probe-btrfs-allbytes")
	ents, err := parseEscaped(escaped)
	if err != nil || len(ents) != 1 {
		t.Fatalf("%d entries, %v", len(ents), err)
	}
	var want []byte
	for i := range len(allBytes) {
		want = escapeByte(want, allBytes[i])
	}
	for _, tg := range ents[0].tags {
		if tg.key == "LABEL" {
			if tg.esc != string(want) {
				t.Errorf("blkid printed\n%s\nescapeByte gives\n%s", tg.esc, want)
			}
			return
		}
	}
	t.Fatal("no LABEL")
}

func TestDecode(t *testing.T) {
	tests := []struct {
		name        string
		escaped     string
		raw         string
		want        []Record
		wantErr     string
		wantMatched int // records matchRaw accepts before failing, when wantErr is set
	}{
		{name: "empty", escaped: "", raw: "", want: nil},
		{name: "only newlines", escaped: "\n\n", raw: "\n", want: nil},
		{
			name:    "two devices without blank line",
			escaped: "DEVNAME=/dev/a\nTYPE=ext4\nDEVNAME=/dev/b\nTYPE=swap\n",
			raw:     "DEVNAME=/dev/a\nTYPE=ext4\nDEVNAME=/dev/b\nTYPE=swap\n",
			want:    []Record{{Device: "/dev/a", Type: "ext4", Usage: "filesystem"}, {Device: "/dev/b", Type: "swap", Usage: "other"}},
		},
		{
			name:    "no final newline in escaped form",
			escaped: "DEVNAME=/dev/a\nLABEL=x",
			raw:     "DEVNAME=/dev/a\nLABEL=x\n",
			want:    []Record{{Device: "/dev/a", Label: "x"}},
		},
		{
			name:    "real usage kept",
			escaped: "DEVNAME=/dev/a\nTYPE=ext4\nUSAGE=other\n",
			raw:     "DEVNAME=/dev/a\nTYPE=ext4\nUSAGE=other\n",
			want:    []Record{{Device: "/dev/a", Type: "ext4", Usage: "other"}},
		},
		{
			name:    "escapes, equals sign and a high byte",
			escaped: "DEVNAME=/dev/a\nLABEL=a=b\\ \\\\\\\"M-^?\n",
			raw:     "DEVNAME=/dev/a\nLABEL=a=b \\\"\xff\n",
			want:    []Record{{Device: "/dev/a", Label: "a=b \\\"\xff"}},
		},
		{
			name:    "a label that forges a record with raw values forges nothing",
			escaped: "DEVNAME=/dev/a\nLABEL=x^JDEVNAME=/dev/b^JLABEL=ROOT^J\nUUID=u\n",
			raw:     "DEVNAME=/dev/a\nLABEL=x\nDEVNAME=/dev/b\nLABEL=ROOT\n\nUUID=u\n",
			want:    []Record{{Device: "/dev/a", Label: "x\nDEVNAME=/dev/b\nLABEL=ROOT\n", UUID: "u"}},
		},
		{
			name:    "literal M- and ^ decoded from the raw bytes",
			escaped: "DEVNAME=/dev/a\nLABEL=FILM-2024^JM-2\n",
			raw:     "DEVNAME=/dev/a\nLABEL=FILM-2024^J\xb2\n",
			want:    []Record{{Device: "/dev/a", Label: "FILM-2024^J\xb2"}},
		},
		{
			name:    "trailing newline in a value is kept",
			escaped: "DEVNAME=/dev/a\nLABEL=x^J\n",
			raw:     "DEVNAME=/dev/a\nLABEL=x\n\n",
			want:    []Record{{Device: "/dev/a", Label: "x\n"}},
		},
		{
			name:    "low-level partition entry",
			escaped: "DEVNAME=/dev/p1\nPART_ENTRY_NAME=n\nPART_ENTRY_UUID=pu\n",
			raw:     "DEVNAME=/dev/p1\nPART_ENTRY_NAME=n\nPART_ENTRY_UUID=pu\n",
			want:    []Record{{Device: "/dev/p1", PartLabel: "n", PartUUID: "pu"}},
		},
		{
			name:    "raw bytes that do not escape to the escaped value",
			escaped: "DEVNAME=/dev/a\nLABEL=M-A\n",
			raw:     "DEVNAME=/dev/a\nLABEL=M-B\n",
			wantErr: "LABEL differs from its escaped form",
		},
		{
			name:    "raw record for another device",
			escaped: "DEVNAME=/dev/a\nLABEL=M-A\n",
			raw:     "DEVNAME=/dev/b\nLABEL=M-A\n",
			wantErr: "does not start with",
		},
		{
			name:        "second device changed between the runs",
			escaped:     "DEVNAME=/dev/a\nLABEL=A\n\nDEVNAME=/dev/b\nLABEL=^J\n",
			raw:         "DEVNAME=/dev/a\nLABEL=A\n\nDEVNAME=/dev/b\nLABEL=\t\n",
			wantErr:     "record 2",
			wantMatched: 1,
		},
		{
			name:    "plain value that disagrees with the raw one",
			escaped: "DEVNAME=/dev/a\nLABEL=A\n",
			raw:     "DEVNAME=/dev/a\nLABEL=A\n",
			want:    []Record{{Device: "/dev/a", Label: "A"}},
		},
		{name: "tag before DEVNAME", escaped: "LABEL=x\n", wantErr: "line 1: LABEL= before any DEVNAME="},
		{name: "junk before DEVNAME", escaped: "\nhello\nDEVNAME=/dev/a\n", wantErr: "line 2: not KEY=value"},
		{name: "raw control byte in escaped output", escaped: "DEVNAME=/dev/a\nLABEL=a\x1bb\n", wantErr: "byte 0x1b in LABEL"},
		{name: "high byte in escaped output", escaped: "DEVNAME=/dev/a\nLABEL=\xc3\xa9\n", wantErr: "byte 0xc3 in LABEL"},
		{name: "DEVNAME not a path", escaped: "DEVNAME=-d\nLABEL=M-A\n", wantErr: `DEVNAME "-d" is not a path`},
		{name: "empty DEVNAME", escaped: "DEVNAME=\n", wantErr: "is not a path"},
		{name: "repeated key", escaped: "DEVNAME=/dev/a\nLABEL=x\nLABEL=y\n", wantErr: "LABEL= twice for /dev/a"},
		{name: "continuation line", escaped: "DEVNAME=/dev/a\nLABEL=x\nfoo=bar\n", wantErr: "line 3: not KEY=value"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Decode([]byte(tt.escaped), []byte(tt.raw))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				if ents, perr := parseEscaped([]byte(tt.escaped)); perr == nil {
					if _, n, _ := matchRaw(ents, []byte(tt.raw)); n != tt.wantMatched {
						t.Errorf("matchRaw matched %d records, want %d", n, tt.wantMatched)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if formatRecords(got) != formatRecords(tt.want) {
				t.Errorf("got\n%swant\n%s", formatRecords(got), formatRecords(tt.want))
			}
		})
	}
}

func TestUnescapePlain(t *testing.T) {
	for esc, want := range map[string]string{
		"":                 "",
		"abc":              "abc",
		`a\ b\\c\"d\'e\$f`: `a b\c"d'e$f`,
		"\\`\\<\\>":        "`<>",
		"x=y,z-M":          "x=y,z-M",
	} {
		if got, ok := unescapePlain(esc); !ok || got != want {
			t.Errorf("unescapePlain(%q) = %q, %v; want %q", esc, got, ok, want)
		}
	}
	for _, esc := range []string{"M-A", "a^Jb", `trailing\`, `\q`, "a b", `"`} {
		if got, ok := unescapePlain(esc); ok {
			t.Errorf("unescapePlain(%q) = %q, want it refused", esc, got)
		}
	}
}

// BenchmarkDecode: about 150 devices, a large machine's worth, every one
// with a value that needs its raw bytes (the worst case).
func BenchmarkDecode(b *testing.B) {
	escaped, raw := readFixture(b, "scan-labels")
	bigE := []byte(strings.Repeat(string(escaped)+"\n", 20))
	bigR := []byte(strings.Repeat(string(raw)+"\n", 20))
	b.SetBytes(int64(len(bigE) + len(bigR)))
	for b.Loop() {
		if _, err := Decode(bigE, bigR); err != nil {
			b.Fatal(err)
		}
	}
}
