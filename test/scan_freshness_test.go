package test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/diskd/diskd/pkg/testutil"
)

// slowBlkid writes a blkid wrapper into dir. While dir/hold exists, a full
// scan (`blkid -c /dev/null ...`) runs the real blkid first, creates
// dir/read, and prints what blkid said only once dir/release exists: a
// scan that has read the devices but not yet answered. Probes, and full
// scans without dir/hold, pass straight through.
func slowBlkid(t *testing.T, dir string) string {
	t.Helper()
	real, err := exec.LookPath("blkid")
	if err != nil {
		t.Fatal(err)
	}
	script := fmt.Sprintf(`#!/bin/sh
d=%s
if [ "$1" = "-c" ] && [ -e "$d/hold" ]; then
	%s "$@" > "$d/out.$$"; rc=$?
	touch "$d/read"
	n=0
	while [ ! -e "$d/release" ] && [ $n -lt 1200 ]; do sleep 0.05; n=$((n+1)); done
	cat "$d/out.$$"; rm -f "$d/out.$$"
	exit $rc
fi
exec %s "$@"
`, dir, real, real)
	path := filepath.Join(dir, "blkid")
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestRemovedDuringSlowScanStaysGone: a partition removed while a full
// scan runs (blkid has already read it) is not brought back by the scan's
// result, through the real daemon, blkid, loop devices and uevents.
func TestRemovedDuringSlowScanStaysGone(t *testing.T) {
	testutil.RequiresRoot(t)
	testutil.RequiresTool(t, "losetup", "partx", "sfdisk", "mkfs.ext4", "blkid")
	img := testutil.LoopImage(t, 64)
	sfdisk := exec.Command("sfdisk", "-q", img)
	sfdisk.Stdin = strings.NewReader("label: gpt\nsize=32MiB, type=L\n")
	if out, err := sfdisk.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v: %s", err, out)
	}
	dev, parts := testutil.AttachLoopParts(t, img)
	if out, err := exec.Command("mkfs.ext4", "-q", "-L", "SLOWSCAN", parts[0]).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4 %s: %v: %s", parts[0], err, out)
	}
	dir := t.TempDir()
	d := testutil.StartDaemon(t, testutil.DaemonOptions{Args: []string{
		"--devices", dev, "--devices", dev + "p*", "--blkid", slowBlkid(t, dir), "--blkid-timeout", "90s"}})
	testutil.Eventually(t, 10*time.Second, "the partition listed", func() bool {
		p := find(listJSON(t, d), "SLOWSCAN")
		return p != nil && p.Present
	})

	// A full scan reads the devices, then holds its answer.
	os.WriteFile(filepath.Join(dir, "hold"), nil, 0o644)
	refreshed := make(chan string, 1)
	go func() {
		out, errOut, code := d.Ctl("refresh")
		refreshed <- fmt.Sprintf("exit %d: %s%s", code, out, errOut)
	}()
	testutil.Eventually(t, 30*time.Second, "blkid to have read the devices", func() bool {
		_, err := os.Stat(filepath.Join(dir, "read"))
		return err == nil
	})
	// Detached meanwhile: the kernel removes the partition (a remove
	// uevent), which the daemon applies at once.
	testutil.DetachLoop(t, img)
	testutil.Eventually(t, 10*time.Second, "the removal applied during the scan", func() bool {
		p := find(listJSON(t, d), "SLOWSCAN")
		return p != nil && !p.Present
	})
	os.WriteFile(filepath.Join(dir, "release"), nil, 0o644)
	if got := <-refreshed; !strings.HasPrefix(got, "exit 0") {
		t.Fatalf("refresh: %s", got)
	}
	// The scan has ended and its result is applied (refresh answers after
	// that): the partition is still gone.
	if p := find(listJSON(t, d), "SLOWSCAN"); p == nil || p.Present {
		t.Errorf("after the slow scan the removed partition is %+v, want listed as not present", p)
	}
	// The disk itself (a loop detach is a change event, probed once the
	// scan is done) goes too.
	name := filepath.Base(dev)
	testutil.Eventually(t, 10*time.Second, dev+" not present", func() bool {
		for _, g := range listJSON(t, d) {
			if g.Name == name {
				return !g.Present
			}
		}
		return true
	})
}
