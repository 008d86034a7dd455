package mounter

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/diskd/diskd/pkg/disk"
	"github.com/diskd/diskd/pkg/testutil"
)

func TestSafeName(t *testing.T) {
	tests := []struct {
		name string
		d    disk.Disk
		want string
	}{
		{"plain", disk.Disk{Label: "BACKUP"}, "BACKUP"},
		{"spaces and non-ASCII kept", disk.Disk{Label: "Fotos Ä 2024"}, "Fotos Ä 2024"},
		{"parent directories", disk.Disk{Label: "../../etc"}, "_._.._etc"},
		{"dot", disk.Disk{Label: "."}, "_"},
		{"dot dot", disk.Disk{Label: ".."}, "_."},
		{"hidden", disk.Disk{Label: ".hidden"}, "_hidden"},
		{"absolute", disk.Disk{Label: "/etc/passwd"}, "_etc_passwd"},
		{"backslash", disk.Disk{Label: `a\b`}, "a_b"},
		{"control characters", disk.Disk{Label: "a\nb\x1b[31mc\u009bd\x7f"}, "a_b_[31mc_d_"},
		{"bidi override", disk.Disk{Label: "abc\u202edcba"}, "abc_dcba"},
		{"invalid UTF-8", disk.Disk{Label: "a\xff\xfeb"}, "a__b"},
		{"NUL", disk.Disk{Label: "a\x00b"}, "a_b"},
		{"no label: UUID", disk.Disk{UUID: "1234-ABCD"}, "1234-ABCD"},
		{"nothing: kernel name", disk.Disk{Name: "loop7"}, "loop7"},
		{"empty", disk.Disk{}, "disk"},
		{"long is clipped on a rune", disk.Disk{Label: strings.Repeat("é", 40)}, strings.Repeat("é", 32)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := SafeName(tt.d)
			if got != tt.want {
				t.Errorf("SafeName(%q) = %q, want %q", tt.d.Label, got, tt.want)
			}
			if p := filepath.Join("/media/diskd", got); filepath.Dir(p) != "/media/diskd" {
				t.Errorf("%q escapes the mount directory: %s", got, p)
			}
		})
	}
}

func FuzzSafeName(f *testing.F) {
	for _, s := range []string{"BACKUP", "../..", "/", ".x", "a\x00b", "\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, label string) {
		n := SafeName(disk.Disk{Label: label})
		p := filepath.Join("/media/diskd", n)
		if filepath.Dir(p) != "/media/diskd" || n == "" || n == "." || n == ".." || len(n) > maxName ||
			strings.ContainsAny(n, "/\x00") || strings.HasPrefix(n, ".") {
			t.Fatalf("SafeName(%q) = %q: unsafe", label, n)
		}
	})
}

func TestRules(t *testing.T) {
	r := Rules{Allow: []string{"BACKUP*", "1234-*"}, AllowRW: []string{"SCRATCH"}}
	tests := []struct {
		label, uuid string
		rw          bool
		want        error
	}{
		{"BACKUP", "", false, nil},
		{"BACKUP2", "", false, nil},
		{"BACKUP", "", true, ErrRWNotAllowed},
		{"OTHER", "1234-5678", false, nil},
		{"OTHER", "9999", false, ErrNotAllowed},
		{"SCRATCH", "", true, nil},
		{"SCRATCH", "", false, nil}, // a read-write rule allows read-only too
		{"", "", false, ErrNotAllowed},
	}
	for _, tt := range tests {
		err := r.Check(disk.Disk{Label: tt.label, UUID: tt.uuid}, tt.rw)
		if !errors.Is(err, tt.want) && !(err == nil && tt.want == nil) {
			t.Errorf("Check(%q, %q, rw=%v) = %v, want %v", tt.label, tt.uuid, tt.rw, err, tt.want)
		}
	}
	if (Rules{}).Check(disk.Disk{Label: "X"}, false) == nil {
		t.Error("no rules allowed a mount: nothing may be mountable unless configured")
	}
}

// TestDirectMount mounts a real ext4 loop device with mount(2): read-only
// and nosuid/nodev/noexec, a write fails, a busy unmount is refused and
// says so, a mount diskd did not make is not unmounted without force, and
// the records survive a new Mounter.
func TestDirectMount(t *testing.T) {
	testutil.RequiresRoot(t)
	testutil.RequiresTool(t, "mkfs.ext4", "losetup", "blkid")
	img := testutil.LoopImage(t, 32, "mkfs.ext4", "-q", "-L", "MNT_TEST")
	dev := testutil.AttachLoop(t, img)
	dir := t.TempDir()
	cfg := Config{Dir: filepath.Join(dir, "media"), Rules: Rules{Allow: []string{"MNT_*"}},
		Remembered: filepath.Join(dir, "mounts.json")}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	d := disk.Disk{Name: filepath.Base(dev), Device: dev, Label: "MNT_TEST", Type: "ext4", Usage: "filesystem", Present: true}
	ctx := context.Background()
	p, err := m.Mount(ctx, d, false, "test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = exec.Command("umount", p).Run() })
	if p != filepath.Join(cfg.Dir, "MNT_TEST") {
		t.Errorf("mounted at %s", p)
	}
	opts := mountOptions(t, p)
	for _, o := range []string{"ro", "nosuid", "nodev", "noexec"} {
		if !strings.Contains(","+opts+",", ","+o+",") {
			t.Errorf("mount options %q lack %s", opts, o)
		}
	}
	if err := os.WriteFile(filepath.Join(p, "x"), nil, 0o644); err == nil {
		t.Error("wrote to a read-only mount")
	}
	// As the store would see it after mountinfo's update.
	d.Mounts = []string{p}
	if _, err := m.Mount(ctx, d, false, "test"); !strings.Contains(errString(err), "already mounted at "+p) {
		t.Errorf("second mount: %v", err)
	}
	// Records survive a restart.
	m2, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if made := m2.Made(); len(made) != 1 || made[0].Path != p || made[0].By != "test" {
		t.Errorf("remembered %+v", made)
	}
	// Busy: a file open inside.
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m2.Unmount(ctx, d, false, "test"); !errors.Is(err, ErrBusy) {
		t.Errorf("unmount while busy: %v, want ErrBusy", err)
	}
	f.Close()
	if got, err := m2.Unmount(ctx, d, false, "test"); err != nil || got != p {
		t.Fatalf("unmount: %q, %v", got, err)
	}
	if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("mount point left behind: %v", err)
	}

	// A mount diskd did not make: refused unless forced.
	other := filepath.Join(dir, "other")
	os.Mkdir(other, 0o755)
	if out, err := exec.Command("mount", "-o", "ro", dev, other).CombinedOutput(); err != nil {
		t.Fatalf("mount: %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", other).Run() })
	d.Mounts = []string{other}
	if _, err := m2.Unmount(ctx, d, false, "test"); !errors.Is(err, ErrNotOurs) {
		t.Errorf("unmount of a foreign mount: %v, want ErrNotOurs", err)
	}
	if _, err := m2.Unmount(ctx, d, true, "root"); err != nil {
		t.Errorf("forced unmount: %v", err)
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// mountOptions returns the per-mount options of p from mountinfo.
func mountOptions(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) > 5 && f[4] == p {
			return f[5]
		}
	}
	t.Fatalf("%s not in mountinfo", p)
	return ""
}
