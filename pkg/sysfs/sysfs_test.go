package sysfs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/diskd/diskd/pkg/testutil"
	"golang.org/x/sys/unix"
)

// TestRead reads the fixture tree in testdata/sys, laid out as the kernel
// lays out /sys (class/block/NAME symlinks into devices/).
func TestRead(t *testing.T) {
	tests := []struct {
		name    string
		want    Info
		wantErr string
	}{
		{name: "sda", want: Info{Name: "sda", MajMin: "8:0", Size: 31266816 * 512, Removable: true}},
		{
			// No removable file of its own: inherits the USB disk's.
			name: "sda1",
			want: Info{Name: "sda1", MajMin: "8:1", Size: 31264768 * 512, Removable: true, Partition: true, Parent: "sda"},
		},
		{name: "nvme0n1", want: Info{Name: "nvme0n1", MajMin: "259:0", Size: 1000215216 * 512}},
		{
			name: "nvme0n1p2",
			want: Info{Name: "nvme0n1p2", MajMin: "259:2", Size: 2048 * 512, ReadOnly: true, Partition: true, Parent: "nvme0n1"},
		},
		{name: "loop0", want: Info{Name: "loop0", MajMin: "7:0", Size: 131072 * 512, ReadOnly: true}},
		{name: "dm-0", want: Info{Name: "dm-0", MajMin: "254:0", Size: 2097152 * 512}},
		{name: "cciss/c0d0", want: Info{Name: "cciss!c0d0", MajMin: "104:0", Size: 143305920 * 512}},
		{name: "cciss!c0d0", want: Info{Name: "cciss!c0d0", MajMin: "104:0", Size: 143305920 * 512}},
		{name: "sdz", wantErr: "no such file"},
		{name: "", wantErr: "invalid device name"},
		{name: "..", wantErr: "invalid device name"},
		{name: "bad-size", wantErr: `"12x" is not a number`},
		{name: "bad-dev", wantErr: `"8" is not major:minor`},
		{name: "no-ro", wantErr: "no-ro/ro: no such file"},
		{name: "bad-ro", wantErr: `"yes" is not 0 or 1`},
		{name: "orphan-part", wantErr: "block/removable: no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Read("testdata/sys", tt.name)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestReadMissingIsNotExist(t *testing.T) {
	_, err := Read("testdata/sys", "sdz")
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("err = %v, want fs.ErrNotExist", err)
	}
}

func TestKernelNameErrors(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{
		file:                          "not a block device",
		"/dev/null":                   "not a block device",
		filepath.Join(dir, "missing"): "no such file",
	} {
		if _, err := KernelName(path); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("KernelName(%s) err = %v, want it to contain %q", path, err, want)
		}
	}
}

// TestKernelNameFromSysRoot checks the name comes from sysfs's
// dev/block/MAJ:MIN link, not from the node's path: a node named "mydisk"
// resolves to whatever the (fixture) sysfs says owns its numbers.
func TestKernelNameFromSysRoot(t *testing.T) {
	testutil.RequiresRoot(t) // mknod
	dir := t.TempDir()
	node := filepath.Join(dir, "mydisk")
	if err := unix.Mknod(node, unix.S_IFBLK|0o600, int(unix.Mkdev(7, 200))); err != nil {
		t.Fatalf("mknod: %v", err)
	}
	// Built here rather than in testdata: "7:200" holds a ':', which Go
	// module zips refuse in file names.
	sys := filepath.Join(dir, "sys")
	if err := os.MkdirAll(filepath.Join(sys, "dev", "block"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../../devices/virtual/block/dm-7", filepath.Join(sys, "dev", "block", "7:200")); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "by-label")
	if err := os.Symlink(node, link); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{node, link} {
		got, err := kernelName(sys, p)
		if err != nil || got != "dm-7" {
			t.Errorf("kernelName(%s) = %q, %v; want dm-7", p, got, err)
		}
	}
	if _, err := kernelName(t.TempDir(), node); err == nil || !strings.Contains(err.Error(), "(7:200)") {
		t.Errorf("no sysfs entry: err = %v", err)
	}
}

// TestRealLoop reads a real loop device and one of its partitions.
func TestRealLoop(t *testing.T) {
	testutil.RequiresRoot(t)
	testutil.RequiresTool(t, "losetup", "sfdisk", "partx", "blockdev")
	img := testutil.LoopImage(t, 64)
	sfdisk := exec.Command("sfdisk", "-q", img)
	sfdisk.Stdin = strings.NewReader("label: gpt\nsize=16MiB, type=L\n")
	if out, err := sfdisk.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v: %s", err, out)
	}
	dev, parts := testutil.AttachLoopParts(t, img)
	name := filepath.Base(dev)

	var st unix.Stat_t
	if err := unix.Stat(dev, &st); err != nil {
		t.Fatal(err)
	}
	majmin := fmt.Sprintf("%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
	got, err := Read("/sys", name)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Info{Name: name, MajMin: majmin, Size: 64 << 20}); got != want {
		t.Errorf("Read(%s) = %+v, want %+v", name, got, want)
	}
	if kn, err := KernelName(dev); err != nil || kn != name {
		t.Errorf("KernelName(%s) = %q, %v", dev, kn, err)
	}

	part := filepath.Base(parts[0])
	got, err = Read("/sys", part)
	if err != nil {
		t.Fatal(err)
	}
	if got.Size != 16<<20 || !got.Partition || got.Parent != name || got.ReadOnly {
		t.Errorf("Read(%s) = %+v", part, got)
	}
	link := filepath.Join(t.TempDir(), "by-partlabel")
	if err := os.Symlink(parts[0], link); err != nil {
		t.Fatal(err)
	}
	if kn, err := KernelName(link); err != nil || kn != part {
		t.Errorf("KernelName(%s -> %s) = %q, %v", link, parts[0], kn, err)
	}

	// Read-only flag, set and cleared through the block layer.
	if out, err := exec.Command("blockdev", "--setro", dev).CombinedOutput(); err != nil {
		t.Fatalf("blockdev --setro: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("blockdev", "--setrw", dev).Run() })
	if got, err := Read("/sys", name); err != nil || !got.ReadOnly {
		t.Errorf("after --setro: %+v, %v; want ReadOnly", got, err)
	}
}
