package testutil

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// LoopImage creates a sparse image of sizeMiB in a fresh t.TempDir() and,
// when mkfs is given, runs that command line with the image path appended
// (e.g. LoopImage(t, 64, "mkfs.ext4", "-q", "-L", "DATA")). It returns the
// image path. The image goes away with the temp dir.
func LoopImage(t testing.TB, sizeMiB int, mkfs ...string) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatalf("create image: %v", err)
	}
	if err := f.Truncate(int64(sizeMiB) << 20); err != nil {
		f.Close()
		t.Fatalf("truncate image to %d MiB: %v", sizeMiB, err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("close image: %v", err)
	}
	if len(mkfs) > 0 {
		RequiresTool(t, mkfs[0])
		runCmd(t, mkfs[0], append(mkfs[1:len(mkfs):len(mkfs)], img)...)
	}
	return img
}

// AttachLoop attaches img to a free loop device and returns its /dev path.
// A t.Cleanup detaches it again (only the devices backed by img, found with
// `losetup -j`), also when the test fails.
func AttachLoop(t testing.TB, img string) string {
	t.Helper()
	RequiresRoot(t)
	RequiresTool(t, "losetup")
	t.Cleanup(func() { DetachLoop(t, img) })
	return strings.TrimSpace(runCmd(t, "losetup", "-f", "--show", img))
}

// AttachLoopParts attaches img (which holds a partition table) with
// partition scanning and returns the disk's /dev path and its partitions'
// /dev paths in partition order. When the kernel cannot parse the table
// itself (this machine's kernel has no EFI or MSDOS partition support) the
// partitions are added from user space with `partx -a`, which reads the
// table with libblkid and registers each partition through BLKPG.
// Detaching (t.Cleanup) removes the partitions with the disk.
func AttachLoopParts(t testing.TB, img string) (string, []string) {
	t.Helper()
	RequiresRoot(t)
	RequiresTool(t, "losetup", "partx")
	t.Cleanup(func() { DetachLoop(t, img) })
	dev := strings.TrimSpace(runCmd(t, "losetup", "-f", "--show", "-P", img))
	name := filepath.Base(dev)
	if len(partitionNames(name)) == 0 {
		runCmd(t, "partx", "-a", dev)
	}
	parts := partitionNames(name)
	if len(parts) == 0 {
		t.Fatalf("%s: no partitions after losetup -P and partx -a", dev)
	}
	paths := make([]string, len(parts))
	for i, p := range parts {
		paths[i] = "/dev/" + p
		waitForNode(t, paths[i])
	}
	return dev, paths
}

// DetachLoop detaches every loop device backed by img. Never `losetup -D`:
// other tests and engineers share the machine's loop devices.
func DetachLoop(t testing.TB, img string) {
	t.Helper()
	out, err := exec.Command("losetup", "-n", "-O", "NAME", "-j", img).Output()
	if err != nil {
		t.Errorf("losetup -j %s: %v", img, err)
		return
	}
	for _, dev := range strings.Fields(string(out)) {
		if b, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", dev, err, bytes.TrimSpace(b))
		}
	}
	// A device another process has open (a daemon's blkid, on a shared
	// machine) is detached when it closes: wait for that.
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		out, err := exec.Command("losetup", "-n", "-O", "NAME", "-j", img).Output()
		if err != nil || len(bytes.TrimSpace(out)) == 0 {
			return
		}
	}
	t.Errorf("%s still attached 10 s after losetup -d", img)
}

// partitionNames lists the partitions the kernel knows for disk, ordered
// by partition number.
func partitionNames(disk string) []string {
	type part struct {
		name string
		n    int
	}
	var parts []part
	entries, _ := os.ReadDir(filepath.Join("/sys/class/block", disk))
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join("/sys/class/block", disk, e.Name(), "partition"))
		if err != nil {
			continue
		}
		n, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			continue
		}
		parts = append(parts, part{e.Name(), n})
	}
	sort.Slice(parts, func(i, j int) bool { return parts[i].n < parts[j].n })
	names := make([]string, len(parts))
	for i, p := range parts {
		names[i] = p.name
	}
	return names
}

// waitForNode waits for a device node that devtmpfs (or udevd, where it
// runs) creates asynchronously after the kernel registers the device.
func waitForNode(t testing.TB, path string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		} else if time.Now().After(deadline) {
			t.Fatalf("device node did not appear: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// runCmd runs a command and fails the test with its output when it fails.
func runCmd(t testing.TB, name string, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v: %s", fmt.Sprint(append([]string{name}, args...)), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return stdout.String()
}
