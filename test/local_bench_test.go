package test

import (
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/diskd/diskd/pkg/testutil"
)

// The local-user attacks of issue 10, as figures. They use only flags every
// diskd has had, so DISKD_TEST_BINDIR can point them at an older build for
// the "before" figure.

// BenchmarkLocalAnnounceFlood: `announce` sent as fast as the socket takes
// it for 5 s, by nobody and then by root, on a namespace host; the IPv4
// datagrams a tap on a second host counts in each window, beside an idle
// window.
func BenchmarkLocalAnnounceFlood(b *testing.B) {
	testutil.RequiresRoot(b)
	hosts := testutil.Hosts(b, 2)
	sock := publicSocket(b)
	d := testutil.StartDaemon(b, testutil.DaemonOptions{Prefix: hosts[0].Prefix(), Socket: sock,
		Args: []string{"--devices", "/dev/nothing", "--heartbeat-interval", "10s"}})
	tap := newWireTap(b, hosts[1])
	const window = 5 * time.Second
	count := func(fn func()) int {
		n := len(tap.Datagrams())
		fn()
		time.Sleep(300 * time.Millisecond) // the last sends reach the tap
		return len(tap.Datagrams()) - n
	}
	time.Sleep(time.Second) // past the start-up hello
	idle := count(func() { time.Sleep(window) })
	var asNobody, asRoot map[string]string
	nobody := count(func() { asNobody = flood(b, nobodyUID, nogroupGID, sock, "announce", window) })
	logBefore := strings.Count(d.Log(), "\n")
	root := count(func() { asRoot = flood(b, 0, 0, sock, "announce", window) })
	b.Logf("nobody: %v; root: %v", asNobody, asRoot)
	b.ReportMetric(float64(idle), "idle-datagrams-5s")
	b.ReportMetric(float64(nobody), "nobody-flood-datagrams-5s")
	b.ReportMetric(atof(asNobody["sent"]), "nobody-requests")
	b.ReportMetric(float64(root), "root-flood-datagrams-5s")
	b.ReportMetric(atof(asRoot["sent"]), "root-requests")
	b.ReportMetric(float64(strings.Count(d.Log(), "\n")-logBefore), "root-flood-log-lines")
}

// BenchmarkLocalSessionFlood: nobody holds 1100 idle sessions (does root's
// `diskctl list` still work?), then 200 sessions that send `list` and
// never read, with 2000 disks known: the daemon's RSS before, while they
// are stuck, and after (once closed, or 60 s on), how many it closed, and
// after a second round of the same.
func BenchmarkLocalSessionFlood(b *testing.B) {
	testutil.RequiresRoot(b)
	diskd, diskctl := testutil.Binaries(b)
	sock := publicSocket(b)
	args := []string{"--devices", "/dev/nonexistent"}
	// A build with a write deadline gets a short one, so that all stuck
	// sessions (two at a time per user) are closed within the window.
	if help, _ := exec.Command(diskd, "--help").CombinedOutput(); strings.Contains(string(help), "--session-write-timeout") {
		args = append(args, "--session-write-timeout", "1s")
	}
	d := testutil.StartDaemon(b, testutil.DaemonOptions{StateDir: filledState(b, 2000), Socket: sock, Args: args})
	rootList := func() float64 {
		if err := exec.Command(diskctl, "--socket", sock, "list", "--json").Run(); err != nil {
			return 0
		}
		return 1
	}

	idle := startHog(b, nobodyUID, nogroupGID, sock, false, 1100)
	b.Logf("1100 idle sessions: %d accepted, %d refused (%s)", idle.Accepted, idle.Refused, idle.First)
	b.ReportMetric(rootList(), "root-list-ok-with-1100-idle")
	b.ReportMetric(float64(idle.Accepted), "idle-accepted")
	idle.stop()

	time.Sleep(2 * time.Second) // the daemon sees the idle ones go
	rootList()
	rss0 := rssKiB(b, d.Cmd.Process.Pid, "VmRSS:")
	stuck := startHog(b, nobodyUID, nogroupGID, sock, true, 200)
	time.Sleep(2 * time.Second)
	rss1 := rssKiB(b, d.Cmd.Process.Pid, "VmRSS:")
	t0 := time.Now()
	closed := stuck.Closed()
	for closed < stuck.Accepted && time.Since(t0) < 60*time.Second {
		time.Sleep(500 * time.Millisecond)
		closed = stuck.Closed()
	}
	b.Logf("%d stuck sessions accepted, %d refused (%s); %d closed after %s", stuck.Accepted, stuck.Refused, stuck.First, closed, time.Since(t0).Round(time.Second))
	time.Sleep(5 * time.Second) // freed memory goes back to the system
	rss2 := rssKiB(b, d.Cmd.Process.Pid, "VmRSS:")
	// A second round: memory the first freed is reused, not added to.
	stuck.stop()
	again := startHog(b, nobodyUID, nogroupGID, sock, true, 200)
	for t1 := time.Now(); again.Closed() < again.Accepted && time.Since(t1) < 60*time.Second; {
		time.Sleep(500 * time.Millisecond)
	}
	rss3 := rssKiB(b, d.Cmd.Process.Pid, "VmRSS:")
	b.ReportMetric(float64(rss3)/1024, "rss-after-second-round-MiB")
	b.ReportMetric(float64(stuck.Accepted), "stuck-accepted")
	b.ReportMetric(float64(closed), "stuck-closed")
	b.ReportMetric(float64(rss0)/1024, "rss-before-MiB")
	b.ReportMetric(float64(rss1)/1024, "rss-stuck-MiB")
	b.ReportMetric(float64(rss2)/1024, "rss-after-MiB")
	b.ReportMetric(rootList(), "root-list-ok-after")
}

func atof(s string) float64 {
	f, _ := strconv.ParseFloat(s, 64)
	return f
}
