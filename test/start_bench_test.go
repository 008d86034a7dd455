package test

import (
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/diskd/diskd/pkg/testutil"
)

// BenchmarkStartToReady: exec of diskd → READY=1 on its NOTIFY_SOCKET (as
// systemd's Type=notify sees it: the socket listens and the first full
// scan has finished), over 20 starts of one daemon with its state file
// from the start before, a disk of its own attached. Baseline: one run of
// the blkid command the first scan runs, in the same run. DISKD_TEST_BINDIR
// measures another build.
func BenchmarkStartToReady(b *testing.B) {
	testutil.RequiresRoot(b)
	testutil.RequiresTool(b, "blkid", "unshare")
	img := testutil.LoopImage(b, 16, "mkfs.ext4", "-q", "-L", "BENCHSTART")
	dev := testutil.AttachLoop(b, img)
	dir := b.TempDir()
	notifyPath := filepath.Join(dir, "notify")
	nl, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"})
	if err != nil {
		b.Fatal(err)
	}
	defer nl.Close()
	ready := make(chan time.Time, 16)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := nl.Read(buf)
			if err != nil {
				return
			}
			if strings.Contains(string(buf[:n]), "READY=1") {
				ready <- time.Now()
			}
		}
	}()
	state := filepath.Join(dir, "state")
	const n = 20
	var took, blkidT []time.Duration
	for i := 0; i < n; i++ {
		blkidT = append(blkidT, timeCmd(b, "blkid", "-c", "/dev/null", "-o", "export"))
		start := time.Now()
		d := testutil.StartDaemon(b, testutil.DaemonOptions{
			StateDir: state, NoWait: true,
			Env:  []string{"NOTIFY_SOCKET=" + notifyPath},
			Args: []string{"--devices", dev},
		})
		select {
		case at := <-ready:
			took = append(took, at.Sub(start))
		case <-d.Done():
			b.Fatalf("diskd exited before READY=1:\n%s", d.Log())
		case <-time.After(20 * time.Second):
			b.Fatalf("no READY=1 within 20 s:\n%s", d.Log())
		}
		if out := d.MustCtl("list", "--json"); !strings.Contains(out, "BENCHSTART") {
			b.Fatalf("after READY=1 the disk is not listed:\n%s", out)
		}
		d.Stop()
		time.Sleep(100 * time.Millisecond) // let the machine settle between starts
	}
	b.ReportMetric(ms(percentile(took, 50)), "p50-ms")
	b.ReportMetric(ms(percentile(took, 90)), "p90-ms")
	b.ReportMetric(ms(percentile(blkidT, 50)), "baseline-blkid-p50-ms")
}
