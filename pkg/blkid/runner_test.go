package blkid

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/diskd/diskd/pkg/testutil"
)

// fakeBlkid writes an executable shell script standing in for blkid and
// returns its path.
func fakeBlkid(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "blkid")
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestRunnerExitStatus(t *testing.T) {
	tests := []struct {
		name      string
		script    string
		wantRecs  int
		wantFound bool
		wantErr   string // substring; "" = no error
	}{
		{name: "exit 2 is nothing found", script: "exit 2"},
		{name: "exit 2 with output ignored", script: "echo DEVNAME=/dev/x; exit 2"},
		{
			name:     "records",
			script:   "printf 'DEVNAME=/dev/x\\nTYPE=ext4\\n'",
			wantRecs: 1, wantFound: true,
		},
		{name: "exit 0 with no output", script: "exit 0"},
		{
			name:    "other failure carries trimmed stderr",
			script:  "echo '  blkid: ambivalent result (use wipefs)  ' >&2; exit 8",
			wantErr: "exit status 8: blkid: ambivalent result (use wipefs)",
		},
		{name: "failure without stderr", script: "exit 4", wantErr: "exit status 4"},
		{name: "unparsable output", script: "echo garbage", wantErr: "not KEY=value"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &Runner{Path: fakeBlkid(t, tt.script), Logger: testLogger(t)}
			recs, err := r.ScanAll(t.Context())
			checkErr(t, "ScanAll", err, tt.wantErr)
			if len(recs) != tt.wantRecs {
				t.Errorf("ScanAll returned %d records, want %d: %+q", len(recs), tt.wantRecs, recs)
			}
			rec, found, err := r.Probe(t.Context(), "/dev/x")
			checkErr(t, "Probe", err, tt.wantErr)
			if found != tt.wantFound {
				t.Errorf("Probe found = %v, want %v", found, tt.wantFound)
			}
			if found && rec != (Record{Device: "/dev/x", Type: "ext4", Usage: "filesystem"}) {
				t.Errorf("Probe = %+q", rec)
			}
			if errors.Is(err, ErrTimeout) || errors.Is(err, ErrNotInstalled) {
				t.Errorf("unexpected sentinel in %v", err)
			}
		})
	}
}

func checkErr(t *testing.T, what string, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Errorf("%s: unexpected error %v", what, err)
	case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
		t.Errorf("%s: error %v, want it to contain %q", what, err, want)
	}
}

// TestRunnerPassesArguments checks the exact command lines: no stale
// cache for the scan, escaped values for both (raw ones are only asked
// for when needed: TestRunnerRawPass).
func TestRunnerPassesArguments(t *testing.T) {
	args := filepath.Join(t.TempDir(), "args")
	r := &Runner{Path: fakeBlkid(t, `echo "$*" >> `+args+`; exit 2`)}
	if _, err := r.ScanAll(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.Probe(t.Context(), "/dev/sdz9"); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(args)
	if err != nil {
		t.Fatal(err)
	}
	want := "-c /dev/null -o export\n-p -o export /dev/sdz9\n"
	if string(got) != want {
		t.Errorf("blkid ran with\n%s\nwant\n%s", got, want)
	}
}

// TestRunnerRawPass: blkid runs a second time, with -d, only for the
// devices whose escaped values are ambiguous, and their raw bytes are
// taken under the grammar of the escaped output.
func TestRunnerRawPass(t *testing.T) {
	args := filepath.Join(t.TempDir(), "args")
	script := `echo "$*" >> ` + args + `
case "$*" in
*-d*) printf 'DEVNAME=/dev/b\nLABEL=x\nDEVNAME=/dev/evil\n\nUUID=u\n' ;;
*) printf 'DEVNAME=/dev/a\nLABEL=A\n\nDEVNAME=/dev/b\nLABEL=x^JDEVNAME=/dev/evil^J\nUUID=u\n' ;;
esac`
	r := &Runner{Path: fakeBlkid(t, script), Logger: testLogger(t)}
	recs, err := r.ScanAll(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	want := []Record{{Device: "/dev/a", Label: "A"}, {Device: "/dev/b", Label: "x\nDEVNAME=/dev/evil\n", UUID: "u"}}
	if formatRecords(recs) != formatRecords(want) {
		t.Errorf("got\n%swant\n%s", formatRecords(recs), formatRecords(want))
	}
	got, err := os.ReadFile(args)
	if err != nil {
		t.Fatal(err)
	}
	if want := "-c /dev/null -o export\n-c /dev/null -d -o export /dev/b\n"; string(got) != want {
		t.Errorf("blkid ran with\n%s\nwant\n%s", got, want)
	}
}

// TestRunnerRawDisagrees: a device whose raw output never matches its
// escaped one (it changes under us, or lies) is asked once more, then left
// out; the others are kept.
func TestRunnerRawDisagrees(t *testing.T) {
	args := filepath.Join(t.TempDir(), "args")
	// The raw form prints the devices asked for; /dev/b's raw label
	// (\001) never escapes to what the escaped form said (^B).
	script := `echo "$*" >> ` + args + `
case "$*" in
*-d*) for a; do case "$a" in
	/dev/b) printf 'DEVNAME=/dev/b\nLABEL=\001\n\n' ;;
	/dev/c) printf 'DEVNAME=/dev/c\nLABEL=\303\251\n\n' ;;
	esac; done ;;
*-p*) printf 'DEVNAME=/dev/b\nLABEL=^B\n' ;;
*) printf 'DEVNAME=/dev/a\nLABEL=A\n\nDEVNAME=/dev/b\nLABEL=^B\n\nDEVNAME=/dev/c\nLABEL=M-CM-)\n' ;;
esac`
	r := &Runner{Path: fakeBlkid(t, script), Logger: testLogger(t)}
	recs, err := r.ScanAll(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	want := []Record{{Device: "/dev/a", Label: "A"}, {Device: "/dev/c", Label: "é"}}
	if formatRecords(recs) != formatRecords(want) {
		t.Errorf("got\n%swant\n%s", formatRecords(recs), formatRecords(want))
	}
	got, _ := os.ReadFile(args)
	// escaped; raw b c (b fails); raw b c (b fails again, left out); raw c.
	if n := strings.Count(string(got), "\n"); n != 4 {
		t.Errorf("blkid ran %d times, want 4:\n%s", n, got)
	}
	if _, found, err := r.Probe(t.Context(), "/dev/b"); err == nil || found {
		t.Errorf("Probe of a device whose outputs disagree: found %v, err %v", found, err)
	}
}

// TestRunnerProbeRefusesOtherRecords: a probe's output is one record for
// the device probed, or an error.
func TestRunnerProbeRefusesOtherRecords(t *testing.T) {
	for name, script := range map[string]string{
		"two records":    `printf 'DEVNAME=/dev/x\nTYPE=ext4\n\nDEVNAME=/dev/y\nTYPE=xfs\n'`,
		"another device": `printf 'DEVNAME=/dev/y\nTYPE=ext4\n'`,
	} {
		t.Run(name, func(t *testing.T) {
			r := &Runner{Path: fakeBlkid(t, script)}
			rec, found, err := r.Probe(t.Context(), "/dev/x")
			if err == nil || found {
				t.Errorf("Probe = %+q, found %v, err %v; want an error", rec, found, err)
			}
		})
	}
}

func TestRunnerNotInstalled(t *testing.T) {
	for _, path := range []string{"/nonexistent/dir/blkid", "diskd-test-no-such-blkid"} {
		r := &Runner{Path: path}
		_, err := r.ScanAll(t.Context())
		if !errors.Is(err, ErrNotInstalled) {
			t.Errorf("ScanAll with %s: err = %v, want ErrNotInstalled", path, err)
		}
		_, found, err := r.Probe(t.Context(), "/dev/x")
		if !errors.Is(err, ErrNotInstalled) || found {
			t.Errorf("Probe with %s: found %v, err = %v, want ErrNotInstalled", path, found, err)
		}
	}
}

// TestRunnerTimeoutKillsGroup: a blkid that hangs (here a wrapper script
// whose child sleeps) is killed at the timeout, child included.
func TestRunnerTimeoutKillsGroup(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "sleep.pid")
	// The script writes the pid of its sleeping child, then waits on it.
	script := "sleep 1000 &\necho $! > " + pidFile + ".tmp && mv " + pidFile + ".tmp " + pidFile + "\nwait"
	r := &Runner{Path: fakeBlkid(t, script), Timeout: 2 * time.Second, Logger: testLogger(t)}
	_, err := r.ScanAll(t.Context())
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("err = %v, want ErrTimeout", err)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatalf("the fake blkid never started its child within the timeout: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { killIfOurSleep(pid) })
	// SIGKILL is delivered at once, but the orphan is reaped by whoever
	// adopted it; wait for that instead of asserting it is instant.
	deadline := time.Now().Add(10 * time.Second)
	for processAlive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("sleep child %d still running after the group was killed", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRunnerCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	r := &Runner{Path: fakeBlkid(t, "exec sleep 1000"), Timeout: time.Minute}
	errc := make(chan error, 1)
	go func() {
		_, _, err := r.Probe(ctx, "/dev/x")
		errc <- err
	}()
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) || errors.Is(err, ErrTimeout) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
}

// processAlive reports whether pid is a live (not zombie) sleep process.
func processAlive(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// pid (comm) state ...
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || !strings.Contains(s[:i], "(sleep") {
		return false // gone and the pid reused by something else
	}
	state := strings.Fields(s[i+1:])
	return len(state) > 0 && state[0] != "Z" && state[0] != "X"
}

func killIfOurSleep(pid int) {
	if processAlive(pid) {
		if p, err := os.FindProcess(pid); err == nil {
			_ = p.Kill()
		}
	}
}

func BenchmarkRealScanAll(b *testing.B) {
	r := &Runner{}
	if _, err := r.ScanAll(b.Context()); errors.Is(err, ErrNotInstalled) {
		b.Skip(err)
	}
	for b.Loop() {
		if _, err := r.ScanAll(b.Context()); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRealScanAllMany measures a full scan of many loop devices
// (DISKD_BENCH_LOOPS, default 1000) besides the machine's own, with plain
// ASCII labels (one blkid run) and with labels that need their raw bytes
// (two runs, the worst case). Each iteration also times one bare
// `blkid -c /dev/null -d -o export`, what a scan cost before the raw pass
// existed, so the two are compared under the same load: the figures are
// their medians. The scanner runs at most one full scan a second, and a
// hung one is killed at --blkid-timeout (15 s).
func BenchmarkRealScanAllMany(b *testing.B) {
	testutil.RequiresRoot(b)
	testutil.RequiresTool(b, "blkid", "losetup", "mkfs.ext4")
	n := 1000
	if s := os.Getenv("DISKD_BENCH_LOOPS"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	median := func(ds []time.Duration) float64 {
		slices.Sort(ds)
		return float64(ds[len(ds)/2].Microseconds()) / 1000
	}
	for _, c := range []struct{ name, label string }{{"plain", "PLAIN_LABEL"}, {"ambiguous", "caf\xc3\xa9 M-1"}} {
		b.Run(c.name, func(b *testing.B) {
			img := testutil.LoopImage(b, 1, "mkfs.ext4", "-q", "-L", c.label)
			for range n {
				testutil.AttachLoop(b, img)
			}
			r := &Runner{}
			var devs int
			var bare, scan []time.Duration
			for b.Loop() {
				start := time.Now()
				if _, _, err := r.run(b.Context(), "-c", "/dev/null", "-d", "-o", "export"); err != nil {
					b.Fatal(err)
				}
				bare = append(bare, time.Since(start))
				start = time.Now()
				recs, err := r.ScanAll(b.Context())
				if err != nil {
					b.Fatal(err)
				}
				scan = append(scan, time.Since(start))
				devs = len(recs)
			}
			b.ReportMetric(float64(devs), "devices")
			b.ReportMetric(median(bare), "ms-bare-blkid")
			b.ReportMetric(median(scan), "ms-ScanAll")
		})
	}
}
