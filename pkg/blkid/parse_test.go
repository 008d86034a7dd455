package blkid

import (
	"fmt"
	"github.com/diskd/diskd/pkg/testutil"
	"os"
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

// TestParseExportGolden parses real blkid output captured on loop devices
// (see TestCaptureFixtures) and compares with the golden files.
func TestParseExportGolden(t *testing.T) {
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
			raw, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			recs, err := ParseExport(raw)
			if err != nil {
				t.Fatalf("ParseExport: %v", err)
			}
			got := formatRecords(recs)
			golden := strings.TrimSuffix(in, ".export") + ".golden"
			testutil.Golden(t, golden, got)
		})
	}
}

// TestParseExportFixtureValues pins the values that matter in the captured
// fixtures, so a wrong golden file cannot be blessed with -update unseen.
func TestParseExportFixtureValues(t *testing.T) {
	find := func(t *testing.T, file string, pred func(Record) bool) Record {
		t.Helper()
		raw, err := os.ReadFile(filepath.Join("testdata", file))
		if err != nil {
			t.Fatal(err)
		}
		recs, err := ParseExport(raw)
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
			scan := find(t, "scan-labels.export", byUUID)
			probe := find(t, "probe-"+d.name+".export", byUUID)
			for what, r := range map[string]Record{"scan": scan, "probe": probe} {
				r.Device = ""
				if r != d.want {
					t.Errorf("%s:\n got %+q\nwant %+q", what, r, d.want)
				}
			}
		})
	}
	t.Run("gpt", func(t *testing.T) {
		for _, file := range []string{"scan-gpt.export", "probe-gpt-p1.export"} {
			r := find(t, file, func(r Record) bool { return strings.EqualFold(r.PartUUID, gptPart1UUID) })
			if r.PartLabel != "part one" || r.UUID != "" || r.Type != "" || r.Usage != "" {
				t.Errorf("%s: partition without filesystem: %+q", file, r)
			}
		}
		for _, file := range []string{"scan-gpt.export", "probe-gpt-p2.export"} {
			r := find(t, file, func(r Record) bool { return strings.EqualFold(r.PartUUID, gptPart2UUID) })
			if r.UUID != gptPart2FSUUID || r.Type != "ext4" || r.Usage != "filesystem" {
				t.Errorf("%s: partition with ext4: %+q", file, r)
			}
		}
	})
}

func TestParseExport(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []Record
		wantErr string
	}{
		{name: "empty", in: "", want: nil},
		{name: "only newlines", in: "\n\n", want: nil},
		{
			name: "two devices without blank line",
			in:   "DEVNAME=/dev/a\nTYPE=ext4\nDEVNAME=/dev/b\nTYPE=swap\n",
			want: []Record{{Device: "/dev/a", Type: "ext4", Usage: "filesystem"}, {Device: "/dev/b", Type: "swap", Usage: "other"}},
		},
		{
			name: "no final newline",
			in:   "DEVNAME=/dev/a\nLABEL=x",
			want: []Record{{Device: "/dev/a", Label: "x"}},
		},
		{
			name: "real usage kept",
			in:   "DEVNAME=/dev/a\nTYPE=ext4\nUSAGE=other\n",
			want: []Record{{Device: "/dev/a", Type: "ext4", Usage: "other"}},
		},
		{
			name: "equals sign and raw bytes in label",
			in:   "DEVNAME=/dev/a\nLABEL=a=b \\\"\xff\n",
			want: []Record{{Device: "/dev/a", Label: "a=b \\\"\xff"}},
		},
		{
			name: "newline and blank line inside a label",
			in:   "DEVNAME=/dev/a\nLABEL=one\ntwo\n\nthree\nUUID=u\n",
			want: []Record{{Device: "/dev/a", Label: "one\ntwo\n\nthree", UUID: "u"}},
		},
		{
			name: "lower-case key is a continuation",
			in:   "DEVNAME=/dev/a\nLABEL=x\nfoo=bar\n",
			want: []Record{{Device: "/dev/a", Label: "x\nfoo=bar"}},
		},
		{
			name: "low-level partition entry",
			in:   "DEVNAME=/dev/p1\nPART_ENTRY_NAME=n\nPART_ENTRY_UUID=pu\n",
			want: []Record{{Device: "/dev/p1", PartLabel: "n", PartUUID: "pu"}},
		},
		{name: "tag before DEVNAME", in: "LABEL=x\n", wantErr: "line 1: LABEL= before any DEVNAME="},
		{name: "junk before DEVNAME", in: "\nhello\nDEVNAME=/dev/a\n", wantErr: "line 2: not KEY=value"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseExport([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
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

func TestUsageForType(t *testing.T) {
	for typ, want := range map[string]string{
		"":                  "",
		"ext4":              "filesystem",
		"xfs":               "filesystem",
		"vfat":              "filesystem",
		"zfs_member":        "filesystem",
		"linux_raid_member": "raid",
		"isw_raid_member":   "raid",
		"LVM2_member":       "raid",
		"crypto_LUKS":       "crypto",
		"BitLocker":         "crypto",
		"swap":              "other",
		"bcache":            "other",
	} {
		if got := UsageForType(typ); got != want {
			t.Errorf("UsageForType(%q) = %q, want %q", typ, got, want)
		}
	}
}

func BenchmarkParseExport(b *testing.B) {
	raw, err := os.ReadFile("testdata/scan-labels.export")
	if err != nil {
		b.Fatal(err)
	}
	// About 100 devices, a large machine's worth.
	big := []byte(strings.Repeat(string(raw)+"\n", 20))
	b.SetBytes(int64(len(big)))
	for b.Loop() {
		if _, err := ParseExport(big); err != nil {
			b.Fatal(err)
		}
	}
}
