package testutil

import (
	"encoding/binary"
	"os"
	"os/exec"
	"strings"
	"testing"
)

func loopsOf(t *testing.T, img string) []string {
	t.Helper()
	out, err := exec.Command("losetup", "-n", "-O", "NAME", "-j", img).Output()
	if err != nil {
		t.Fatalf("losetup -j: %v", err)
	}
	return strings.Fields(string(out))
}

func TestLoopImage(t *testing.T) {
	RequiresTool(t, "mkfs.ext4")
	img := LoopImage(t, 16, "mkfs.ext4", "-q", "-L", "T")
	st, err := os.Stat(img)
	if err != nil || st.Size() != 16<<20 {
		t.Fatalf("image %s: %v, size %d", img, err, st.Size())
	}
	// The ext2/3/4 superblock magic 0xEF53 sits at byte 1024+56.
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	if m := binary.LittleEndian.Uint16(b[1080:]); m != 0xEF53 {
		t.Errorf("no ext4 superblock in %s (magic %#x): mkfs did not run on it", img, m)
	}
}

func TestAttachAndCleanup(t *testing.T) {
	RequiresRoot(t)
	RequiresTool(t, "losetup")
	img := LoopImage(t, 8)
	var dev string
	t.Run("attach", func(t *testing.T) {
		dev = AttachLoop(t, img)
		if got := loopsOf(t, img); len(got) != 1 || got[0] != dev {
			t.Fatalf("losetup -j %s = %v, want [%s]", img, got, dev)
		}
	})
	// The subtest's cleanup detached it.
	if got := loopsOf(t, img); len(got) != 0 {
		t.Errorf("still attached after cleanup: %v", got)
		DetachLoop(t, img)
	}

	// DetachLoop leaves other images' devices alone.
	other := LoopImage(t, 8)
	otherDev := AttachLoop(t, other)
	AttachLoop(t, img)
	DetachLoop(t, img)
	if got := loopsOf(t, other); len(got) != 1 || got[0] != otherDev {
		t.Errorf("DetachLoop(%s) touched %s: %v", img, other, got)
	}
}

func TestAttachLoopParts(t *testing.T) {
	RequiresRoot(t)
	RequiresTool(t, "losetup", "sfdisk", "partx")
	img := LoopImage(t, 32)
	cmd := exec.Command("sfdisk", "-q", img)
	cmd.Stdin = strings.NewReader("label: gpt\nsize=8MiB, type=L\nsize=8MiB, type=L\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v: %s", err, out)
	}
	dev, parts := AttachLoopParts(t, img)
	if len(parts) != 2 || !strings.HasPrefix(parts[0], dev) || !strings.HasSuffix(parts[1], "2") {
		t.Fatalf("AttachLoopParts = %s, %v", dev, parts)
	}
	for _, p := range parts {
		if st, err := os.Stat(p); err != nil || st.Mode()&os.ModeDevice == 0 {
			t.Errorf("%s: not a device node (%v)", p, err)
		}
	}
}
