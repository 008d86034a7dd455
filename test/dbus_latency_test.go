package test

import (
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/diskd/diskd/pkg/testutil"
)

// BenchmarkDBusSignalLatency: from starting `losetup` on a fresh ext4
// image to dbus-monitor receiving diskd's InterfacesAdded for it (the
// monitor's own receive timestamp). Reports the median and the worst, and
// the median time losetup itself took. The rest is the uevent, blkid, the
// store, the adapter's batching delay (10 ms by default) and the bus.
// Twenty samples per run, whatever -benchtime says (make bench runs 1x).
func BenchmarkDBusSignalLatency(b *testing.B) {
	testutil.RequiresRoot(b)
	testutil.RequiresTool(b, "losetup", "mkfs.ext4", "blkid")
	bus := startPolicyBus(b)
	// Every loop device: the ones this benchmark attaches are not known
	// in advance. Others on the machine only add a little load.
	testutil.StartDaemon(b, testutil.DaemonOptions{Args: []string{"--dbus", bus.Address, "--devices", "/dev/loop*"}})
	waitBusName(b, bus)
	m := monitorBus(b, bus)
	stamp := regexp.MustCompile(`time=(\d+)\.(\d+)`)
	var lat, losetup []time.Duration
	for i := 0; i < 20; i++ {
		label := fmt.Sprintf("LAT%d_%d", time.Now().UnixNano()%1e6, i)
		img := testutil.LoopImage(b, 16, "mkfs.ext4", "-q", "-L", label)
		b.Cleanup(func() { testutil.DetachLoop(b, img) })
		start := time.Now()
		if out, err := exec.Command("losetup", "-f", "--show", img).CombinedOutput(); err != nil {
			b.Fatalf("losetup: %v %s", err, out)
		}
		losetup = append(losetup, time.Since(start))
		s := m.Wait(b, "InterfacesAdded for "+label, "member=InterfacesAdded", `string "`+label+`"`)
		g := stamp.FindStringSubmatch(s.Head)
		if g == nil {
			b.Fatalf("no time= in %q", s.Head)
		}
		sec, _ := strconv.ParseInt(g[1], 10, 64)
		usec, _ := strconv.ParseInt((g[2] + "000000")[:6], 10, 64)
		lat = append(lat, time.Unix(sec, usec*1000).Sub(start))
	}
	b.ReportMetric(ms(percentile(lat, 50)), "p50-ms")
	b.ReportMetric(ms(percentile(lat, 100)), "max-ms")
	b.ReportMetric(ms(percentile(losetup, 50)), "losetup-p50-ms")
	b.Logf("losetup -> InterfacesAdded seen by dbus-monitor, %d samples: %s", len(lat), strings.Trim(fmt.Sprint(lat), "[]"))
}
