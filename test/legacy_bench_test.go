package test

import (
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/diskd/diskd/pkg/testutil"
)

// The legacy bridge's figures (issue 13), against the real original Perl
// diskd on namespace hosts. `make bench` runs each once; each reports the
// median of its samples.

const legacySamples = 5

// BenchmarkLegacyAnnounceToList: the original's announce arriving on
// diskd's host → `diskctl list --json` there listing its new disk. Each
// sample restarts the original with a new disk (it announces 5 s after
// its start, then only every 600 s).
func BenchmarkLegacyAnnounceToList(b *testing.B) {
	testutil.RequiresRoot(b)
	requirePerlDiskd(b)
	_, diskctl := testutil.Binaries(b)
	hosts := testutil.Hosts(b, 2)
	d := benchStart(b, hosts[0], "--devices", "/dev/nothing", "--legacy")
	watch := legacyWatch(b, hosts[0])
	var lat []time.Duration
	var first time.Duration
	for i := range legacySamples {
		label := fmt.Sprintf("ANNOUNCE_%d", i)
		p := startPerlPeer(b, hosts[1], fmt.Sprintf("/dev/sdb%d: LABEL=%q UUID=\"%04d-BBBB\" TYPE=\"ext4\"\n", i, label, i))
		var listed time.Time
		for t0 := time.Now(); ; {
			g := find(listJSONB(b, diskctl, d), label)
			if g != nil && g.Present && g.Host == hosts[1].Addr4.String() {
				listed = time.Now()
				break
			}
			if time.Since(t0) > 30*time.Second {
				b.Fatalf("%s not listed within 30 s", label)
			}
		}
		var arrived time.Time
		for _, h := range watch() {
			if h.src.Addr() == hosts[1].Addr4 && strings.Contains(string(h.b), label) {
				arrived = h.at
			}
		}
		if arrived.IsZero() {
			b.Fatalf("the original's announce of %s not seen on the wire", label)
		}
		if i == 0 {
			first = listed.Sub(arrived) // a new source settles 250 ms first
		} else {
			lat = append(lat, listed.Sub(arrived))
		}
		p.stop()
	}
	t0 := time.Now()
	listJSONB(b, diskctl, d)
	b.ReportMetric(ms(percentile(lat, 50)), "p50-ms")
	b.ReportMetric(ms(slices.Max(lat)), "max-ms")
	b.ReportMetric(ms(first), "new-peer-ms")
	b.ReportMetric(ms(time.Since(t0)), "diskctl-roundtrip-ms")
}

// BenchmarkLegacyStartToPerlList: starting diskd --legacy with a disk →
// the original's own `list` (its Unix socket, polled) showing that disk
// from diskd's address. Each sample starts a fresh diskd with a disk of
// a new label.
func BenchmarkLegacyStartToPerlList(b *testing.B) {
	testutil.RequiresRoot(b)
	testutil.RequiresTool(b, "losetup", "mkfs.ext4", "blkid")
	requirePerlDiskd(b)
	testutil.Binaries(b)
	hosts := testutil.Hosts(b, 2)
	p := startPerlPeer(b, hosts[1], "")
	dev := newLoopDev(b)
	var lat, ready []time.Duration
	for i := range legacySamples {
		label := fmt.Sprintf("START_%d", i)
		if out, err := exec.Command("losetup", dev, testutil.LoopImage(b, 32, "mkfs.ext4", "-q", "-L", label)).CombinedOutput(); err != nil {
			b.Fatalf("losetup: %v %s", err, out)
		}
		t0 := time.Now()
		d := testutil.StartDaemon(b, testutil.DaemonOptions{Prefix: hosts[0].Prefix(), NoWait: true,
			Args: []string{"--devices", dev, "--legacy"}})
		for {
			lines, _ := p.list()
			if slices.ContainsFunc(lines, func(l string) bool {
				return strings.HasPrefix(l, hosts[0].Addr4.String()+":") && strings.Contains(l, label)
			}) {
				break
			}
			if time.Since(t0) > 30*time.Second {
				b.Fatalf("%s not in the original's list within 30 s", label)
			}
			time.Sleep(2 * time.Millisecond)
		}
		lat = append(lat, time.Since(t0))
		// Baseline: the same start until diskd's own socket answers.
		d.Stop()
		t1 := time.Now()
		d2 := testutil.StartDaemon(b, testutil.DaemonOptions{Prefix: hosts[0].Prefix(), NoWait: true,
			Args: []string{"--devices", dev}})
		d2.WaitReady()
		ready = append(ready, time.Since(t1))
		d2.Stop()
		if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
			b.Fatalf("losetup -d: %v %s", err, out)
		}
	}
	b.ReportMetric(ms(percentile(lat, 50)), "p50-ms")
	b.ReportMetric(ms(slices.Max(lat)), "max-ms")
	b.ReportMetric(ms(percentile(ready, 50)), "daemon-ready-ms")
}
