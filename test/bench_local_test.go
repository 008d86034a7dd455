package test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/diskd/diskd/pkg/disk"
	"github.com/diskd/diskd/pkg/testutil"
)

// The figures of the core issue. Run with `make bench` (as root); each
// benchmark runs once (-benchtime 1x) and reports medians and p99s as
// custom metrics, with a baseline measured in the same run.

func percentile(ds []time.Duration, p float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(p/100*float64(len(s)) + 0.5)
	return s[min(max(i-1, 0), len(s)-1)]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func timeCmd(b *testing.B, name string, args ...string) time.Duration {
	start := time.Now()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 { // blkid: nothing found
			b.Fatalf("%s: %v %s", name, err, out)
		}
	}
	return time.Since(start)
}

func listedByDiskctl(b *testing.B, diskctl, sock, label string, present bool) bool {
	out, err := exec.Command(diskctl, "--socket", sock, "list", "--json").Output()
	if err != nil {
		b.Fatalf("diskctl: %v", err)
	}
	var ds []disk.Disk
	if err := json.Unmarshal(out, &ds); err != nil {
		b.Fatal(err)
	}
	for _, d := range ds {
		if d.Label == label && d.Present == present {
			return true
		}
	}
	return false
}

// BenchmarkAttachToListed: `losetup` returning → the device listed by
// `diskctl list --json`, over 50 attaches. Baselines: one `blkid -p` of
// the device, and one `diskctl list --json` round trip. Attaches are 200 ms
// apart: faster than that one device is flapping, and the scanner's probe
// budget deliberately hands it to the next full scan instead.
func BenchmarkAttachToListed(b *testing.B) {
	testutil.RequiresRoot(b)
	_, diskctl := testutil.Binaries(b)
	img := testutil.LoopImage(b, 16, "mkfs.ext4", "-q", "-L", "BENCHATTACH")
	d := testutil.StartDaemon(b, testutil.DaemonOptions{Args: []string{"--devices", "/dev/loop*"}})
	const n = 50
	var lat, blkidT, rtt []time.Duration
	for i := 0; i < n; i++ {
		start := time.Now()
		out, err := exec.Command("losetup", "-f", "--show", img).Output()
		if err != nil {
			b.Fatal(err)
		}
		dev := strings.TrimSpace(string(out))
		returned := time.Now()
		for !listedByDiskctl(b, diskctl, d.Socket, "BENCHATTACH", true) {
			if time.Since(start) > 10*time.Second {
				b.Fatalf("attach %d not listed", i)
			}
		}
		lat = append(lat, time.Since(returned))
		blkidT = append(blkidT, timeCmd(b, "blkid", "-p", "-o", "export", dev))
		t0 := time.Now()
		listedByDiskctl(b, diskctl, d.Socket, "BENCHATTACH", true)
		rtt = append(rtt, time.Since(t0))
		exec.Command("losetup", "-d", dev).Run()
		for !listedByDiskctl(b, diskctl, d.Socket, "BENCHATTACH", false) {
			if time.Since(returned) > 10*time.Second {
				b.Fatalf("detach %d not seen", i)
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	b.ReportMetric(ms(percentile(lat, 50)), "p50-ms")
	b.ReportMetric(ms(percentile(lat, 99)), "p99-ms")
	b.ReportMetric(ms(percentile(blkidT, 50)), "baseline-blkid-p-p50-ms")
	b.ReportMetric(ms(percentile(rtt, 50)), "baseline-diskctl-list-p50-ms")
}

// BenchmarkList100k: `diskctl list --json` with 100,000 disks in the
// store, beside one plain `blkid` run; the daemon's RSS holding them right
// after the lists, at rest after the idle window (DISKD_BENCH_IDLE,
// default 60s) and at its peak, each beside an empty daemon's; and the
// CPU it uses for a list and over the idle window.
func BenchmarkList100k(b *testing.B) {
	testutil.RequiresRoot(b)
	_, diskctl := testutil.Binaries(b)
	stateDir := filledState(b, 100_000)
	d := testutil.StartDaemon(b, testutil.DaemonOptions{StateDir: stateDir, Args: []string{"--devices", "/dev/nonexistent"}})
	// Baseline for RSS and idle CPU: an empty daemon over the same window.
	empty := testutil.StartDaemon(b, testutil.DaemonOptions{Args: []string{"--devices", "/dev/nonexistent"}})
	// The load read every page of the state file; what of it stays
	// resident (none: the store lets go of the pages after reading them).
	b.ReportMetric(float64(max(testutil.MappedRssKiB(b, fmt.Sprintf("/proc/%d/smaps", d.Cmd.Process.Pid), filepath.Join(stateDir, "state.db")), 0)), "state-file-rss-after-load-KiB")
	var rtt, blkidT []time.Duration
	for i := 0; i < 11; i++ {
		t0 := time.Now()
		out, err := exec.Command(diskctl, "--socket", d.Socket, "list", "--json").Output()
		if err != nil {
			b.Fatal(err)
		}
		rtt = append(rtt, time.Since(t0))
		if i == 0 {
			var ds []json.RawMessage
			if err := json.Unmarshal(out, &ds); err != nil || len(ds) != 100_000 {
				b.Fatalf("listed %d disks (%v)", len(ds), err)
			}
			b.ReportMetric(float64(len(out))/1e6, "json-MB")
		}
		blkidT = append(blkidT, timeCmd(b, "blkid"))
	}
	b.ReportMetric(ms(percentile(rtt, 50)), "list-100k-p50-ms")
	// The same read by this process as a consumer of a stream reads it
	// (jq, grep): through a pipe, 1 MiB at a time, nothing kept. The
	// figure above also counts exec's Output growing one buffer to 40 MB
	// in this process (26 reallocations, 80 MB of fresh pages faulted in),
	// which is this benchmark's cost, not diskctl's.
	var rttRead []time.Duration
	chunk := make([]byte, 1<<20)
	for range 11 {
		cmd := exec.Command(diskctl, "--socket", d.Socket, "list", "--json")
		out, err := cmd.StdoutPipe()
		if err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		n := 0
		for {
			m, err := out.Read(chunk)
			n += m
			if err != nil {
				break
			}
		}
		if err := cmd.Wait(); err != nil {
			b.Fatal(err)
		}
		rttRead = append(rttRead, time.Since(t0))
		if n < 100_000*100 {
			b.Fatalf("read %d bytes", n)
		}
	}
	b.ReportMetric(ms(percentile(rttRead, 50)), "list-100k-streamed-p50-ms")
	// The same with diskctl's output going to /dev/null rather than into
	// this process through a pipe: what the list costs without a reader.
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer devnull.Close()
	var rttNull []time.Duration
	cpu0 := cpuSeconds(b, d.Cmd.Process.Pid)
	for range 11 {
		cmd := exec.Command(diskctl, "--socket", d.Socket, "list", "--json")
		cmd.Stdout = devnull
		t0 := time.Now()
		if err := cmd.Run(); err != nil {
			b.Fatal(err)
		}
		rttNull = append(rttNull, time.Since(t0))
	}
	b.ReportMetric(ms(percentile(rttNull, 50)), "list-100k-to-devnull-p50-ms")
	// The daemon's CPU (user and system, its collections included) for
	// each of those lists, on average.
	b.ReportMetric((cpuSeconds(b, d.Cmd.Process.Pid)-cpu0)*1000/11, "list-100k-daemon-cpu-ms")
	// And through a pipe to a reader that keeps nothing, as a person's
	// `diskctl list --json | jq` is (the shell's start included).
	var rttCat []time.Duration
	for range 11 {
		t0 := time.Now()
		if out, err := exec.Command("sh", "-c", `"$0" --socket "$1" list --json | cat >/dev/null`, diskctl, d.Socket).CombinedOutput(); err != nil {
			b.Fatalf("%v %s", err, out)
		}
		rttCat = append(rttCat, time.Since(t0))
	}
	b.ReportMetric(ms(percentile(rttCat, 50)), "list-100k-piped-to-cat-p50-ms")
	b.ReportMetric(ms(percentile(blkidT, 50)), "baseline-blkid-p50-ms")
	// RSS right after the lists (rss-MiB), and at rest after the idle
	// window below (rss-at-rest-MiB), beside the empty daemon's.
	b.ReportMetric(float64(rssKiB(b, d.Cmd.Process.Pid, "VmRSS:"))/1024, "rss-MiB")
	// File-backed pages: the executable's text and data (diskd's own
	// binary, shared with the page cache), not the state file's
	// (state-file-rss-after-load-KiB).
	b.ReportMetric(float64(rssKiB(b, d.Cmd.Process.Pid, "RssFile:"))/1024, "rss-file-MiB")
	b.ReportMetric(float64(rssKiB(b, empty.Cmd.Process.Pid, "VmRSS:"))/1024, "baseline-empty-rss-MiB")
	// Disks remembered per MiB: of state file, and of the daemon's RSS
	// above an empty daemon's (all of it, and the anonymous part alone:
	// the rest is the mapped state file).
	const perMiB = 100_000 * 1024.0
	if fi, err := os.Stat(filepath.Join(stateDir, "state.db")); err == nil {
		b.ReportMetric(perMiB*1024/float64(fi.Size()), "disks-per-MiB-state-file")
	}
	b.ReportMetric(perMiB/float64(rssKiB(b, d.Cmd.Process.Pid, "VmRSS:")-rssKiB(b, empty.Cmd.Process.Pid, "VmRSS:")), "disks-per-MiB-rss")
	b.ReportMetric(perMiB/float64(rssKiB(b, d.Cmd.Process.Pid, "RssAnon:")-rssKiB(b, empty.Cmd.Process.Pid, "RssAnon:")), "disks-per-MiB-rss-anon")
	// `where` among them: one label, through the real diskctl.
	var whereT []time.Duration
	for range 51 { // 2 ms each: enough runs for a steady p50 on a busy machine
		t0 := time.Now()
		out, err := exec.Command(diskctl, "--socket", d.Socket, "where", "LABEL-54321").Output()
		if err != nil || !strings.HasPrefix(string(out), "LABEL-54321 ") {
			b.Fatalf("where: %v %q", err, out)
		}
		whereT = append(whereT, time.Since(t0))
	}
	b.ReportMetric(ms(percentile(whereT, 50)), "where-100k-p50-ms")
	// Baseline: the same diskctl where against the empty daemon (process
	// start, connection, one round trip).
	whereT = whereT[:0]
	for range 51 {
		t0 := time.Now()
		out, err := exec.Command(diskctl, "--socket", empty.Socket, "where", "LABEL-54321").Output()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), "not known") {
			b.Fatalf("where on the empty daemon: %v %q", err, out)
		}
		whereT = append(whereT, time.Since(t0))
	}
	b.ReportMetric(ms(percentile(whereT, 50)), "baseline-where-empty-daemon-p50-ms")
	// And the floor under both: starting a process that does nothing.
	whereT = whereT[:0]
	for range 51 {
		t0 := time.Now()
		if err := exec.Command("true").Run(); err != nil {
			b.Fatal(err)
		}
		whereT = append(whereT, time.Since(t0))
	}
	b.ReportMetric(ms(percentile(whereT, 50)), "baseline-exec-true-p50-ms")
	// Table output: the whole table for a person, decoded and formatted
	// by diskctl.
	var tableT []time.Duration
	for range 5 {
		t0 := time.Now()
		out, err := exec.Command(diskctl, "--socket", d.Socket, "list").Output()
		if err != nil || strings.Count(string(out), "\n") != 100_001 {
			b.Fatalf("list: %v (%d lines)", err, strings.Count(string(out), "\n"))
		}
		tableT = append(tableT, time.Since(t0))
	}
	b.ReportMetric(ms(percentile(tableT, 50)), "table-100k-p50-ms")

	idle := 60 * time.Second
	if v := os.Getenv("DISKD_BENCH_IDLE"); v != "" {
		idle, _ = time.ParseDuration(v)
	}
	time.Sleep(2 * time.Second) // let the list replies' garbage settle
	// The window counts the memory policy's one trim after the lists
	// (a forced collection, when the daemon has been quiet for 3 s).
	c0, e0 := cpuSeconds(b, d.Cmd.Process.Pid), cpuSeconds(b, empty.Cmd.Process.Pid)
	time.Sleep(idle)
	b.ReportMetric(cpuSeconds(b, d.Cmd.Process.Pid)-c0, "idle-cpu-s")
	b.ReportMetric(cpuSeconds(b, empty.Cmd.Process.Pid)-e0, "baseline-empty-idle-cpu-s")
	b.ReportMetric(idle.Seconds(), "idle-window-s")
	// At rest after the window (the heap of the lists returned or not),
	// and the peak over the daemon's life (VmHWM: the load, or a list).
	for _, m := range []struct {
		pid         int
		field, name string
	}{
		{d.Cmd.Process.Pid, "VmRSS:", "rss-at-rest-MiB"},
		{d.Cmd.Process.Pid, "RssAnon:", "rss-anon-at-rest-MiB"},
		{empty.Cmd.Process.Pid, "VmRSS:", "baseline-empty-rss-at-rest-MiB"},
		{d.Cmd.Process.Pid, "VmHWM:", "rss-peak-MiB"},
		{empty.Cmd.Process.Pid, "VmHWM:", "baseline-empty-rss-peak-MiB"},
	} {
		b.ReportMetric(float64(rssKiB(b, m.pid, m.field))/1024, m.name)
	}
}

func rssKiB(b testing.TB, pid int, field string) int {
	s, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range strings.Split(string(s), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == field {
			v, _ := strconv.Atoi(f[1])
			return v
		}
	}
	b.Fatal("no " + field)
	return 0
}

func cpuSeconds(b *testing.B, pid int) float64 {
	s, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the command name (which may hold spaces) start at ')'.
	f := strings.Fields(string(s[strings.LastIndexByte(string(s), ')')+2:]))
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ is 100 on Linux
}

// BenchmarkUeventBurst: 1000 real uevents (`echo change > uevent` on 4
// loop devices) in about a second, and the blkid runs they cause.
func BenchmarkUeventBurst(b *testing.B) {
	testutil.RequiresRoot(b)
	var devs []string
	for i := 0; i < 4; i++ {
		devs = append(devs, testutil.AttachLoop(b, testutil.LoopImage(b, 8, "mkfs.ext4", "-q", "-L", fmt.Sprintf("BURST%d", i))))
	}
	var args []string
	for _, d := range devs {
		args = append(args, "--devices", d)
	}
	d := testutil.StartDaemon(b, testutil.DaemonOptions{Args: args})
	_, diskctl := testutil.Binaries(b)
	statusOf := func() (full, probes, uevents uint64) {
		out, err := exec.Command(diskctl, "--socket", d.Socket, "status", "--json").Output()
		if err != nil {
			b.Fatal(err)
		}
		var s struct {
			Scan struct {
				FullScans    uint64 `json:"full_scans"`
				DeviceProbes uint64 `json:"device_probes"`
				Uevents      uint64 `json:"uevents"`
			} `json:"scan"`
		}
		json.Unmarshal(out, &s)
		return s.Scan.FullScans, s.Scan.DeviceProbes, s.Scan.Uevents
	}
	f0, p0, u0 := statusOf()
	files := make([]*os.File, len(devs))
	for i, dev := range devs {
		f, err := os.OpenFile("/sys/class/block/"+filepath.Base(dev)+"/uevent", os.O_WRONLY, 0)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		files[i] = f
	}
	start := time.Now()
	for i := 0; i < 1000; i++ {
		if _, err := files[i%len(files)].WriteString("change"); err != nil {
			b.Fatal(err)
		}
		// Spread over about a second, as a flapping device would.
		if wait := time.Duration(i+1)*time.Millisecond - time.Since(start); wait > 0 {
			time.Sleep(wait)
		}
	}
	sent := time.Since(start)
	time.Sleep(3 * time.Second)
	f1, p1, u1 := statusOf()
	b.ReportMetric(float64(u1-u0), "uevents-seen")
	b.ReportMetric(sent.Seconds(), "burst-s")
	b.ReportMetric(float64(f1-f0), "full-blkid-runs")
	b.ReportMetric(float64(p1-p0), "single-device-probes")
}
