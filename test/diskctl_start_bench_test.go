package test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/diskd/diskd/pkg/testutil"
)

// BenchmarkDiskctlStart: `diskctl where` against an empty daemon, exec to
// exit as a script runs it, beside the floors under it measured in the
// same run: `true`, a Go program that prints a line, and the same program
// linking what diskctl links beyond the standard library (cobra, godbus,
// readline; test/testdata/start). What diskctl adds above the last is its
// own work between exec and exit: its commands, the connection and one
// round trip. 300 runs of each, interleaved, so load from elsewhere on
// the machine falls on all of them alike. DISKD_TEST_BINDIR measures
// another build; DISKD_BENCH_OTHER_DISKCTL adds another build's diskctl
// to the same loop (baseline-where-other-diskctl), against the same
// daemon.
func BenchmarkDiskctlStart(b *testing.B) {
	testutil.RequiresRoot(b)
	_, diskctl := testutil.Binaries(b)
	dir := b.TempDir()
	hello, hellodeps := filepath.Join(dir, "hello"), filepath.Join(dir, "hellodeps")
	for bin, pkg := range map[string]string{hello: "./test/testdata/start/hello", hellodeps: "./test/testdata/start/hellodeps"} {
		cmd := exec.Command("go", "build", "-o", bin, pkg)
		cmd.Dir = testutil.RepoRoot(b)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0") // as diskctl is built
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("go build %s: %v\n%s", pkg, err, out)
		}
	}
	d := testutil.StartDaemon(b, testutil.DaemonOptions{Args: []string{"--devices", "/dev/nonexistent"}})
	type run struct {
		metric string
		argv   []string
		exit   int
	}
	runs := []run{
		{"where-empty-daemon-p50-ms", []string{diskctl, "--socket", d.Socket, "where", "LABEL-54321"}, 1}, // not known: exit 1
		{"baseline-go-hello-linking-cobra-godbus-readline-p50-ms", []string{hellodeps}, 0},
		{"baseline-go-hello-p50-ms", []string{hello}, 0},
		{"baseline-exec-true-p50-ms", []string{"true"}, 0},
	}
	if other := os.Getenv("DISKD_BENCH_OTHER_DISKCTL"); other != "" {
		runs = append(runs, run{"baseline-where-other-diskctl-p50-ms", []string{other, "--socket", d.Socket, "where", "LABEL-54321"}, 1})
	}
	times := make([][]time.Duration, len(runs))
	for range 300 {
		for i, r := range runs {
			t0 := time.Now()
			err := exec.Command(r.argv[0], r.argv[1:]...).Run()
			times[i] = append(times[i], time.Since(t0))
			code := 0
			if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				b.Fatalf("%v: %v", r.argv, err)
			}
			if code != r.exit {
				b.Fatalf("%v: exit %d, want %d", r.argv, code, r.exit)
			}
		}
	}
	for i, r := range runs {
		b.ReportMetric(ms(percentile(times[i], 50)), r.metric)
	}
}
