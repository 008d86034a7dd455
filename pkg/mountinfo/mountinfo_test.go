package mountinfo

import (
	"fmt"
	"github.com/diskd/diskd/pkg/testutil"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// format renders a parsed table and its ByDevice map; %q shows every byte.
func format(ms []Mount) string {
	var b strings.Builder
	for _, m := range ms {
		fmt.Fprintf(&b, "%s root=%q mnt=%q type=%q src=%q\n", m.MajMin, m.Root, m.MountPoint, m.FSType, m.Source)
	}
	b.WriteString("# ByDevice\n")
	by := ByDevice(ms)
	for _, k := range slices.Sorted(maps.Keys(by)) {
		fmt.Fprintf(&b, "%s %q\n", k, by[k])
	}
	return b.String()
}

func TestParseGolden(t *testing.T) {
	inputs, _ := filepath.Glob("testdata/*.mountinfo")
	if len(inputs) < 3 {
		t.Fatalf("only %d fixtures", len(inputs))
	}
	for _, in := range inputs {
		t.Run(filepath.Base(in), func(t *testing.T) {
			f, err := os.Open(in)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			ms, err := Parse(f)
			if err != nil {
				t.Fatal(err)
			}
			got := format(ms)
			golden := strings.TrimSuffix(in, ".mountinfo") + ".golden"
			testutil.Golden(t, golden, got)
		})
	}
}

// TestParseEscapes pins the decoded values of the kernel-captured fixture,
// so a wrong golden file cannot be blessed unseen.
func TestParseEscapes(t *testing.T) {
	f, err := os.Open("testdata/escapes.mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ms, err := Parse(f)
	if err != nil {
		t.Fatal(err)
	}
	by := ByDevice(ms)
	ms = withoutIDs(ms)
	want := []Mount{
		{0, 0, "0:39", "/", "/tmp/mi/root", "tmpfs", "src with space"},
		{0, 0, "0:40", "/", "/tmp/mi/root/a b", "tmpfs", "tmpfs"},
		{0, 0, "0:41", "/", "/tmp/mi/root/tab\there", "tmpfs", "tmpfs"},
		{0, 0, "0:42", "/", "/tmp/mi/root/new\nline", "tmpfs", "tmpfs"},
		{0, 0, "0:43", "/", `/tmp/mi/root/back\slash`, "tmpfs", "tmpfs"},
		{0, 0, "0:44", "/", "/tmp/mi/root/plain", "tmpfs", ""},
		{0, 0, "0:44", "/sub dir", "/tmp/mi/root/bind-target", "tmpfs", ""},
		{0, 0, "0:45", "/", "/tmp/mi/root/plain", "tmpfs", "tmpfs"},
	}
	if !slices.Equal(ms, want) {
		t.Errorf("got\n%+v\nwant\n%+v", ms, want)
	}
	if got := by["0:44"]; !slices.Equal(got, []string{"/tmp/mi/root/bind-target", "/tmp/mi/root/plain"}) {
		t.Errorf("ByDevice[0:44] = %q", got)
	}
}

func TestParseLines(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []Mount
		wantErr string
	}{
		{name: "empty", in: ""},
		{name: "blank lines skipped", in: "\n1 0 8:1 / / rw - ext4 /dev/sda1 rw\n\n", want: []Mount{{0, 0, "8:1", "/", "/", "ext4", "/dev/sda1"}}},
		{name: "no final newline", in: "1 0 8:1 / / rw - ext4 /dev/sda1 rw", want: []Mount{{0, 0, "8:1", "/", "/", "ext4", "/dev/sda1"}}},
		{name: "many optional fields", in: "1 0 8:1 / /m rw a:1 b:2 c d:4 - ext4 s o", want: []Mount{{0, 0, "8:1", "/", "/m", "ext4", "s"}}},
		{name: "escape of every byte value", in: `1 0 8:1 / /\001\377\000x rw - t s o`, want: []Mount{{0, 0, "8:1", "/", "/\x01\xff\x00x", "t", "s"}}},
		{name: "escaped type", in: `1 0 8:1 / /m rw - fuse.a\040b s o`, want: []Mount{{0, 0, "8:1", "/", "/m", "fuse.a b", "s"}}},
		{name: "extra super options field", in: "1 0 8:1 / /m rw - t s o extra", want: []Mount{{0, 0, "8:1", "/", "/m", "t", "s"}}},
		{name: "no separator", in: "1 0 8:1 / / rw ext4 /dev/sda1 rw x", wantErr: "line 1: want at least 10 fields"},
		{name: "too few fields", in: "1 0 8:1 / / rw - ext4", wantErr: "line 1: want at least 10 fields"},
		{name: "nothing after separator", in: "1 0 8:1 / / rw a b c -", wantErr: "after \"-\""},
		// "-" as the mount point is a path, not the separator.
		{name: "dash mount point", in: "1 0 8:1 / - rw x - ext4 s o", want: []Mount{{0, 0, "8:1", "/", "-", "ext4", "s"}}},
		{name: "bad majmin", in: "1 0 8-1 / / rw - ext4 s o", wantErr: `"8-1" is not major:minor`},
		{name: "bad id", in: "x 0 8:1 / / rw - ext4 s o", wantErr: `mount ID "x"`},
		{name: "bad escape", in: `1 0 8:1 / /a\x41 rw - ext4 s o`, wantErr: `mount point "/a\\x41": bad escape`},
		{name: "escape out of range", in: `1 0 8:1 / /a\777 rw - ext4 s o`, wantErr: "bad escape"},
		{name: "truncated escape", in: `1 0 8:1 / /a\04 rw - ext4 s o`, wantErr: "truncated escape"},
		{name: "empty mount point", in: "1 0 8:1 /  rw - ext4 s o", wantErr: "empty root, mount point or type"},
		{name: "error names the line", in: "1 0 8:1 / / rw - ext4 s o\n2 1 8:2 / /b rw - \n", wantErr: "line 2:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(strings.NewReader(tt.in))
			got = withoutIDs(got)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestByDevice(t *testing.T) {
	got := ByDevice([]Mount{
		{MajMin: "8:1", MountPoint: "/b"},
		{MajMin: "8:1", MountPoint: "/a"},
		{MajMin: "8:2", MountPoint: "/c"},
		{MajMin: "8:1", MountPoint: "/b"},
	})
	want := map[string][]string{"8:1": {"/a", "/b"}, "8:2": {"/c"}}
	if !maps.EqualFunc(got, want, slices.Equal) {
		t.Errorf("got %q, want %q", got, want)
	}
	if got := ByDevice(nil); len(got) != 0 {
		t.Errorf("ByDevice(nil) = %q", got)
	}
}

func BenchmarkParse(b *testing.B) {
	raw, err := os.ReadFile("testdata/host.mountinfo")
	if err != nil {
		b.Fatal(err)
	}
	big := []byte(strings.Repeat(string(raw), 40)) // ~1000 mounts, a container host
	b.SetBytes(int64(len(big)))
	for b.Loop() {
		if _, err := parseBytes(big); err != nil {
			b.Fatal(err)
		}
	}
}

func withoutIDs(ms []Mount) []Mount {
	for i := range ms {
		ms[i].ID, ms[i].ParentID = 0, 0
	}
	return ms
}

// TestByDeviceLeavesOutSandboxMounts: what systemd's hardening adds to the
// daemon's own mount table (seen in the nspawn test) is not reported.
func TestByDeviceLeavesOutSandboxMounts(t *testing.T) {
	table := strings.Join([]string{
		"20 1 8:1 / / ro - ext4 /dev/sda1 rw",
		"21 20 8:2 / /var/lib ro - ext4 /dev/sda2 rw",
		"22 21 8:2 /diskd /var/lib/diskd rw - ext4 /dev/sda2 rw",                             // StateDirectory=
		"23 20 8:1 /tmp/systemd-private-abc-diskd.service-x/tmp /tmp rw - ext4 /dev/sda1 rw", // PrivateTmp=
		"24 21 8:2 / /var/lib ro - ext4 /dev/sda2 rw",                                        // ProtectSystem= remount
		"25 20 8:3 /@home /home rw - btrfs /dev/sda3 rw",                                     // a subvolume: real
		"26 20 8:2 /export /srv/export rw - ext4 /dev/sda2 rw",                               // a real bind elsewhere
	}, "\n")
	ms, err := Parse(strings.NewReader(table))
	if err != nil {
		t.Fatal(err)
	}
	by := ByDevice(ms)
	want := map[string][]string{"8:1": {"/"}, "8:2": {"/srv/export", "/var/lib"}, "8:3": {"/home"}}
	if len(by) != len(want) {
		t.Errorf("ByDevice = %q", by)
	}
	for k, v := range want {
		if !slices.Equal(by[k], v) {
			t.Errorf("ByDevice[%s] = %q, want %q", k, by[k], v)
		}
	}
}
