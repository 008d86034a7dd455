package test

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/diskd/diskd/pkg/testutil"
)

// BenchmarkRemoteMount: `diskctl mount` on host 2 of a disk on host 1,
// over a keyed network, 15 times: until the mount exists in host 1's mount
// namespace, until host 2's `diskctl list --json` shows the mount point,
// and until diskctl returns. Baselines in the same run: a plain `mount` of
// the same device on host 1, and one diskctl round trip.
func BenchmarkRemoteMount(b *testing.B) {
	testutil.RequiresRoot(b)
	testutil.RequiresTool(b, "losetup", "mkfs.ext4", "blkid")
	_, diskctl := testutil.Binaries(b)
	hosts := testutil.Hosts(b, 2)
	keys := writeKeyFile(b, "1 "+strings.Repeat("cd", 16)+"\n")
	dev := newLoopDev(b)
	img := testutil.LoopImage(b, 32, "mkfs.ext4", "-q", "-L", "MNT_BENCH")
	mdir := filepath.Join(b.TempDir(), "media")
	h1 := benchStart(b, hosts[0], "--devices", dev, "--key-file", keys, "--mount-dir", mdir, "--mount-allow", "MNT_*",
		"--announce-limit", "600")
	h2 := benchStart(b, hosts[1], "--devices", "/dev/nothing", "--key-file", keys)
	if out, err := exec.Command("losetup", dev, img).CombinedOutput(); err != nil {
		b.Fatalf("losetup: %v %s", err, out)
	}
	where := filepath.Join(mdir, "MNT_BENCH")
	// Before the loop device's removal (cleanups run last first).
	b.Cleanup(func() { hosts[0].Command("umount", where).Run() })
	mountinfo := "/proc/" + strconv.Itoa(h1.Cmd.Process.Pid) + "/mountinfo"
	mounted := func() bool {
		m, _ := os.ReadFile(mountinfo)
		return strings.Contains(string(m), " "+where+" ")
	}
	listed := func(want bool) bool {
		g := find(listJSONB(b, diskctl, h2), "MNT_BENCH")
		return g != nil && slices.Contains(g.Mounts, where) == want
	}
	for deadline := time.Now().Add(10 * time.Second); !listed(false); {
		if time.Now().After(deadline) {
			b.Fatal("MNT_BENCH not listed on host 2")
		}
	}
	ctl := func(args ...string) *exec.Cmd {
		return exec.Command(diskctl, append([]string{"--socket", h2.Socket}, args...)...)
	}
	var onHost1, onHost2, returned []time.Duration
	// 15 mounts and unmounts, 2.1 s apart: the owner takes one request a
	// second from a node (bursts of 10).
	for range 15 {
		cmd := ctl("mount", "MNT_BENCH")
		t0 := time.Now()
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		for !mounted() {
			if time.Since(t0) > 20*time.Second {
				b.Fatal("not mounted on host 1 within 20 s")
			}
		}
		onHost1 = append(onHost1, time.Since(t0))
		for !listed(true) {
			if time.Since(t0) > 20*time.Second {
				b.Fatal("mount point not listed on host 2 within 20 s")
			}
		}
		onHost2 = append(onHost2, time.Since(t0))
		if err := cmd.Wait(); err != nil {
			b.Fatalf("diskctl mount: %v", err)
		}
		returned = append(returned, time.Since(t0))
		if out, err := ctl("unmount", "MNT_BENCH").CombinedOutput(); err != nil {
			b.Fatalf("diskctl unmount: %v %s", err, out)
		}
		for !listed(false) {
		}
		time.Sleep(2100 * time.Millisecond)
	}
	// Baselines: mount(8) of the same device on host 1, a diskctl round trip.
	plain := filepath.Join(b.TempDir(), "plain")
	os.Mkdir(plain, 0o755)
	var mnt []time.Duration
	for range 5 {
		t0 := time.Now()
		if out, err := hosts[0].Command("mount", "-o", "ro", dev, plain).CombinedOutput(); err != nil {
			b.Fatalf("mount: %v %s", err, out)
		}
		mnt = append(mnt, time.Since(t0))
		hosts[0].Command("umount", plain).Run()
	}
	t0 := time.Now()
	listJSONB(b, diskctl, h2)
	b.ReportMetric(ms(percentile(onHost1, 50)), "mounted-on-owner-p50-ms")
	b.ReportMetric(ms(percentile(onHost2, 50)), "listed-on-asker-p50-ms")
	b.ReportMetric(ms(percentile(onHost2, 99)), "listed-on-asker-p99-ms")
	b.ReportMetric(ms(percentile(returned, 50)), "diskctl-returned-p50-ms")
	b.ReportMetric(ms(percentile(mnt, 50)), "plain-mount-p50-ms")
	b.ReportMetric(ms(time.Since(t0)), "diskctl-roundtrip-ms")
}
