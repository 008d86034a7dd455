package test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/diskd/diskd/pkg/testutil"
)

// churnBlkid writes a blkid stand-in whose every full scan reports n
// devices /dev/churnN with fresh random labels (so every scan rewrites n
// records of the state file), plus KEEP_0..9 on /dev/keepN while the file
// keep exists. It returns the script and keep's path. The UUIDs stay: with
// fresh ones every scan, the table grew by n absent disks a scan until the
// store's limit of rows per node forgot the oldest absent ones, KEEP's.
func churnBlkid(t *testing.T, n int) (script, keep string) {
	t.Helper()
	dir := t.TempDir()
	keep = filepath.Join(dir, "keep")
	script = filepath.Join(dir, "blkid")
	body := fmt.Sprintf(`#!/bin/sh
case "$*" in *-p*) exit 2;; esac
if [ -e %s ]; then
  i=0; while [ $i -lt 10 ]; do printf 'DEVNAME=/dev/keep%%d\nUUID=%%08x-5555-4000-8000-000000000000\nLABEL=KEEP_%%d\nTYPE=ext4\n\n' $i $i $i; i=$((i+1)); done
fi
exec awk -v seed="$$" 'BEGIN { srand(seed); for (i = 0; i < %d; i++) printf "DEVNAME=/dev/churn%%d\nUUID=%%08x-6666-4000-8000-000000000000\nLABEL=CHURN_%%d_%%d\nTYPE=ext4\n\n", i, i, i, int(rand()*1000000000) }'
`, keep, n)
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	return script, keep
}

// TestReliabilityKillDuringStateWrites: diskd is SIGKILLed at random
// moments while every scan rewrites hundreds of records of its state file
// (refreshes back to back). Every time, the next start loads the file (no
// "moved aside"), keeps its node ID, and still lists the disks it saw
// before the kills as history. 10 kills in `make test`, 200 in the long form.
func TestReliabilityKillDuringStateWrites(t *testing.T) {
	testutil.RequiresRoot(t)
	kills := pick(10, 200)
	blkid, keep := churnBlkid(t, 500)
	if err := os.WriteFile(keep, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	stateDir := filepath.Join(t.TempDir(), "state")
	opts := testutil.DaemonOptions{StateDir: stateDir, Binary: targetBinary(),
		Args: []string{"--blkid", blkid, "--devices", "/dev/churn*", "--devices", "/dev/keep*", "--uevents=false", "--ipv4=false", "--ipv6=false"}}
	d := testutil.StartDaemon(t, opts)
	id := status(t, d).NodeID
	if n := len(listJSON(t, d)); n != 510 {
		t.Fatalf("listed %d disks, want 510", n)
	}
	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}
	os.Remove(keep)

	r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 10))
	var maxSize int64
	start := time.Now()
	for i := range kills {
		d := testutil.StartDaemon(t, opts)
		st := status(t, d)
		if st.NodeID != id {
			t.Fatalf("kill %d: node ID %s, was %s", i, st.NodeID, id)
		}
		for _, p := range st.Problems {
			if strings.Contains(p, "moved aside") || strings.Contains(p, "corrupt") {
				t.Fatalf("kill %d: %s", i, p)
			}
		}
		ds := listJSON(t, d)
		keptN := 0
		for _, x := range ds {
			if strings.HasPrefix(x.Label, "KEEP_") {
				keptN++
			}
		}
		if keptN != 10 {
			t.Fatalf("after kill %d: %d of the 10 KEEP disks remembered (listed %d)", i, keptN, len(ds))
		}
		// Scans back to back, each a transaction of ~1000 records; the
		// kill lands anywhere in them.
		ctx, cancel := context.WithCancel(context.Background())
		_, diskctl := testutil.Binaries(t)
		go func() {
			for ctx.Err() == nil {
				exec.CommandContext(ctx, diskctl, "--socket", d.Socket, "refresh").Run()
			}
		}()
		time.Sleep(time.Duration(r.IntN(1500)) * time.Millisecond)
		if err := sigkill(d); err != nil {
			t.Fatal(err)
		}
		cancel()
		if fi, err := os.Stat(filepath.Join(stateDir, "state.db")); err == nil {
			maxSize = max(maxSize, fi.Size())
		}
	}
	figure(t, "%d SIGKILLs at random moments of back-to-back scans rewriting 500 records each: the state loaded every time with its node ID and history (%v in all, state file at most %.1f MiB)",
		kills, time.Since(start).Round(time.Second), float64(maxSize)/(1<<20))
}

// blkidWrapper writes a blkid stand-in that runs the real blkid on dev
// only (a full scan of a shared machine's many devices can be slow) until
// setMode switches it to one of: "hang" (never returns; its pid is
// recorded in the returned pids file), "fail" (exit 1 with a message on
// stderr), "garbage" (4 KiB of random bytes, exit 0), "ok".
func blkidWrapper(t *testing.T, dev string) (path, pids string, setMode func(string)) {
	t.Helper()
	dir := t.TempDir()
	mode := filepath.Join(dir, "mode")
	pids = filepath.Join(dir, "pids")
	path = filepath.Join(dir, "blkid")
	testutil.RequiresTool(t, "blkid")
	real, err := exec.LookPath("blkid")
	if err != nil {
		t.Fatal(err)
	}
	script := fmt.Sprintf(`#!/bin/sh
case "$(cat %[1]s 2>/dev/null)" in
hang) echo $$ >> %[2]s; exec sleep 1000;;
fail) echo "blkid: simulated failure: cannot read the device table" >&2; exit 1;;
garbage) exec head -c 4096 /dev/urandom;;
esac
case "$*" in *-p*) exec %[3]s "$@";; esac
exec %[3]s "$@" %[4]s
`, mode, pids, real, dev)
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path, pids, func(m string) {
		if err := os.WriteFile(mode, []byte(m), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestBlkidHangsFailsOrPrintsGarbage: a blkid that never returns is
// killed at the timeout (with its children), one that fails or prints
// random bytes is reported in status, and in every case the last good
// inventory is kept; a missing blkid is reported once.
func TestBlkidHangsFailsOrPrintsGarbage(t *testing.T) {
	testutil.RequiresRoot(t)
	testutil.RequiresTool(t, "losetup", "mkfs.ext4", "blkid")
	loop := testutil.AttachLoop(t, testutil.LoopImage(t, 32, "mkfs.ext4", "-q", "-L", "HANGKEEP"))
	wrapper, pidsFile, setMode := blkidWrapper(t, loop)
	d := testutil.StartDaemon(t, testutil.DaemonOptions{Args: []string{"--devices", loop, "--blkid", wrapper, "--blkid-timeout", "1s"}})
	if find(listJSON(t, d), "HANGKEEP") == nil {
		t.Fatal("disk not listed before blkid broke")
	}
	for _, c := range []struct {
		mode, refreshErr string
	}{
		{"hang", "timed out"},
		{"fail", "simulated failure"},
		{"garbage", ""},
	} {
		t.Run(c.mode, func(t *testing.T) {
			setMode(c.mode)
			_, errOut, code := d.Ctl("refresh")
			st := status(t, d)
			if code != 1 || !strings.Contains(errOut, c.refreshErr) {
				t.Errorf("refresh: exit %d, %q", code, errOut)
			}
			if !strings.Contains(st.Scan.LastError, c.refreshErr) || !strings.Contains(st.Scan.LastError, "blkid") || len(st.Problems) == 0 {
				t.Errorf("status does not report it: %+v", st)
			}
			t.Logf("%s: refresh said %q", c.mode, strings.TrimSpace(errOut))
			if g := find(listJSON(t, d), "HANGKEEP"); g == nil || !g.Present {
				t.Errorf("inventory lost: %+v (refresh exit %d %q, last error %q)", g, code, errOut, st.Scan.LastError)
			}
			setMode("ok")
			d.MustCtl("refresh")
		})
	}
	// The hung child was killed, not left behind.
	pids, _ := os.ReadFile(pidsFile)
	for _, p := range strings.Fields(string(pids)) {
		if cmd, err := os.ReadFile("/proc/" + p + "/cmdline"); err == nil && strings.Contains(string(cmd), "sleep") {
			t.Errorf("hung blkid (pid %s) still running", p)
		}
	}

	// Missing: a daemon whose blkid does not exist still serves and says why.
	d2 := testutil.StartDaemon(t, testutil.DaemonOptions{Args: []string{"--devices", loop, "--blkid", "/nonexistent/blkid"}})
	st2 := status(t, d2)
	if !strings.Contains(st2.Scan.LastError, "not installed") && !strings.Contains(st2.Scan.LastError, "no such file") {
		t.Errorf("missing blkid not reported: %q", st2.Scan.LastError)
	}
	if n := strings.Count(d2.Log(), "scan failed"); n != 1 {
		t.Errorf("missing blkid logged %d times, want once", n)
	}
}

// clientHelperEnv makes the test binary a socket client (see TestMain):
// "SOCKET MODE N" opens N connections to SOCKET and then, per MODE, stays
// idle, sends `list` without ever reading, or sends a 1 MiB line; it
// prints "ready K" (K connections made) and holds them until stdin closes.
const clientHelperEnv = "DISKD_TEST_CLIENT_HELPER"

func TestMain(m *testing.M) {
	if v := os.Getenv(clientHelperEnv); v != "" {
		os.Exit(clientHelper(v))
	}
	os.Exit(m.Run())
}

func clientHelper(spec string) int {
	var sock, mode string
	var n int
	if _, err := fmt.Sscanf(spec, "%s %s %d", &sock, &mode, &n); err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 2
	}
	var conns []net.Conn
	for range n {
		c, err := net.Dial("unix", sock)
		if err != nil {
			break
		}
		conns = append(conns, c)
	}
	line := []byte("list\n")
	if mode == "bigline" {
		line = append([]byte(strings.Repeat("x", 1<<20)), '\n')
	}
	var wg sync.WaitGroup
	for _, c := range conns {
		switch mode {
		case "noread", "bigline":
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					c.SetWriteDeadline(time.Now().Add(time.Second))
					if _, err := c.Write(line); err != nil {
						return // the server closed it, or our buffer is full: hold it
					}
					if mode == "bigline" {
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	fmt.Printf("ready %d\n", len(conns))
	io.Copy(io.Discard, os.Stdin)
	return 0
}

// TestReliabilityManyClients: an unprivileged user opens 1000 idle
// connections, 50 that send `list` and never read, and 10 that send 1 MiB
// lines, all at once. Root's `diskctl list` is served throughout. Figures:
// root's list latency under the load, the daemon's RSS.
func TestReliabilityManyClients(t *testing.T) {
	testutil.RequiresRoot(t)
	// The helper runs as nobody: copy the test binary and the socket where
	// nobody can reach them.
	dir, err := os.MkdirTemp("", "diskd-clients-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	helper := filepath.Join(dir, "helper")
	if out, err := exec.Command("cp", os.Args[0], helper).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	d := testutil.StartDaemon(t, testutil.DaemonOptions{Binary: targetBinary(), Socket: filepath.Join(dir, "diskd.sock"),
		Args: []string{"--devices", "/dev/fake*", "--blkid", fakeBlkid(t, 1000), "--uevents=false"}})
	rss0 := rssMiB(t, d)

	type group struct {
		mode string
		n    int
	}
	groups := []group{{"idle", 1000}, {"noread", 50}, {"bigline", 10}}
	var stdins []io.Closer
	made := map[string]int{}
	for _, g := range groups {
		cmd := exec.Command(helper)
		cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %s %d", clientHelperEnv, d.Socket, g.mode, g.n))
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}, Pdeathsig: syscall.SIGKILL}
		in, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { in.Close(); cmd.Wait() })
		stdins = append(stdins, in)
		l, err := bufio.NewReader(out).ReadString('\n')
		if err != nil {
			t.Fatalf("%s helper: %v", g.mode, err)
		}
		made[g.mode], _ = strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(l, "ready ")))
	}
	var lat []time.Duration
	var failures []string
	_, diskctl := testutil.Binaries(t)
	for range pick(20, 200) {
		t0 := time.Now()
		out, err := exec.Command(diskctl, "--socket", d.Socket, "list", "--json").CombinedOutput()
		lat = append(lat, time.Since(t0))
		if err != nil {
			failures = append(failures, strings.TrimSpace(string(out)))
		}
		time.Sleep(50 * time.Millisecond)
	}
	rss1 := rssMiB(t, d)
	for _, c := range stdins {
		c.Close()
	}
	figure(t, "an unprivileged user holds %d idle, %d never-reading and %d 1-MiB-line connections: root's diskctl list --json (1000 disks) p50 %.1f ms, p99 %.1f ms, %d of %d failed; RSS %.1f → %.1f MiB",
		made["idle"], made["noread"], made["bigline"], ms(percentile(lat, 50)), ms(percentile(lat, 99)), len(failures), len(lat), rss0, rss1)
	if len(failures) > 0 {
		t.Errorf("root's list failed %d times: %s", len(failures), failures[0])
	}
}
