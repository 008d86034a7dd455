package test

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/diskd/diskd/pkg/disk"
	"github.com/diskd/diskd/pkg/testutil"
)

// Bursts of changes between real daemons on namespace hosts, with real
// loop devices and uevents (delta announces, docs/protocol.md "8 Delta
// announce"). The figures are BenchmarkPeerBurst and
// BenchmarkPeerFlapping in peer_bench_test.go.

// burstRig is a daemon on host 1 that reports n loop devices of its own,
// each with an ext4 image labelled BURST_i (none attached at first), and a
// daemon on host 2 that reports none.
type burstRig struct {
	src, dst *testutil.Daemon
	devs     []string
	imgs     []string
	attached []bool
	diskctl  string
}

func newBurstRig(tb testing.TB, n int, srcArgs, dstArgs []string) *burstRig {
	tb.Helper()
	testutil.RequiresRoot(tb)
	testutil.RequiresTool(tb, "losetup", "mkfs.ext4", "blkid")
	_, diskctl := testutil.Binaries(tb)
	hosts := testutil.Hosts(tb, 2)
	r := &burstRig{diskctl: diskctl, attached: make([]bool, n)}
	args := []string{"--heartbeat-interval", "10s"}
	for i := range n {
		r.devs = append(r.devs, newLoopDev(tb))
		r.imgs = append(r.imgs, testutil.LoopImage(tb, 32, "mkfs.ext4", "-q", "-L", fmt.Sprintf("BURST_%d", i)))
		args = append(args, "--devices", r.devs[i])
	}
	r.src = testutil.StartDaemon(tb, testutil.DaemonOptions{Prefix: hosts[0].Prefix(), Args: append(args, srcArgs...)})
	r.dst = testutil.StartDaemon(tb, testutil.DaemonOptions{Prefix: hosts[1].Prefix(),
		Args: append([]string{"--heartbeat-interval", "10s", "--devices", "/dev/nothing"}, dstArgs...)})
	testutil.Eventually(tb, peerWait, "the hosts to meet", func() bool {
		var ns []disk.Node
		out, err := exec.Command(diskctl, "--socket", r.dst.Socket, "peers", "--json").Output()
		if err != nil || json.Unmarshal(out, &ns) != nil {
			return false
		}
		for _, n := range ns {
			if n.Name == "dkd-h1" && n.Online {
				return true
			}
		}
		return false
	})
	return r
}

// toggle attaches device i when it is detached and the other way round,
// and returns when losetup returned (an attach waits up to a second for a
// device still busy from its detach).
func (r *burstRig) toggle(tb testing.TB, i int) time.Time {
	tb.Helper()
	args := []string{r.devs[i], r.imgs[i]}
	if r.attached[i] {
		args = []string{"-d", r.devs[i]}
	}
	// A device just detached may still be busy for a moment (detaching
	// finishes asynchronously; a blkid may hold it open): try again.
	for try := 0; ; try++ {
		out, err := exec.Command("losetup", args...).CombinedOutput()
		if err == nil {
			break
		}
		if try == 200 || !strings.Contains(string(out), "busy") {
			tb.Fatalf("losetup %v: %v: %s", args, err, out)
		}
		time.Sleep(5 * time.Millisecond)
	}
	r.attached[i] = !r.attached[i]
	return time.Now()
}

// view returns, for each of host 1's devices host 2 lists, whether one of
// its disks is present (keyed by device: an attach probed before blkid
// could read the filesystem is listed without its label).
func (r *burstRig) view(tb testing.TB) map[string]bool {
	tb.Helper()
	out, err := exec.Command(r.diskctl, "--socket", r.dst.Socket, "list", "--json").Output()
	if err != nil {
		tb.Fatalf("diskctl list: %v", err)
	}
	var ds []disk.Disk
	if err := json.Unmarshal(out, &ds); err != nil {
		tb.Fatal(err)
	}
	m := map[string]bool{}
	for _, d := range ds {
		if d.Host == "dkd-h1" {
			m[d.Device] = m[d.Device] || d.Present
		}
	}
	return m
}

// converged reports whether host 2 shows exactly what is attached.
func (r *burstRig) converged(tb testing.TB) bool {
	v := r.view(tb)
	for i, a := range r.attached {
		if v[r.devs[i]] != a {
			return false
		}
	}
	return true
}

// counters returns d's peer network counters.
func counters(tb testing.TB, d *testutil.Daemon) map[string]uint64 {
	tb.Helper()
	var s struct {
		Network struct{ Counters map[string]uint64 } `json:"network"`
	}
	if err := json.Unmarshal([]byte(d.MustCtl("status", "--json")), &s); err != nil {
		tb.Fatal(err)
	}
	return s.Network.Counters
}

// every runs f at start, start+gap, start+2*gap, ... for n times.
func every(n int, gap time.Duration, f func(i int)) {
	start := time.Now()
	for i := range n {
		if d := time.Until(start.Add(time.Duration(i) * gap)); d > 0 {
			time.Sleep(d)
		}
		f(i)
	}
}

// TestPeerBurstsArriveAsDeltas: 10 attaches 200 ms apart, then 100
// attaches and detaches 20 ms apart (each of 10 devices toggled in turn),
// all reach the other host, carried by delta announces, none waiting for
// the byte budget.
func TestPeerBurstsArriveAsDeltas(t *testing.T) {
	r := newBurstRig(t, 10, nil, nil)
	every(10, 200*time.Millisecond, func(i int) { r.toggle(t, i) })
	testutil.Eventually(t, peerWait, "10 attaches listed on host 2", func() bool { return r.converged(t) })
	every(100, 20*time.Millisecond, func(i int) { r.toggle(t, i%10) })
	// Leave half attached, so that "converged" is not the empty list.
	for i := 0; i < 10; i += 2 {
		r.toggle(t, i)
	}
	testutil.Eventually(t, peerWait, "the 100 changes listed on host 2", func() bool { return r.converged(t) })
	src, dst := counters(t, r.src), counters(t, r.dst)
	// How many changes host 1's scanner reports (it folds some of a burst
	// together) and how many of them a one-datagram announce carries (while
	// one or two devices are attached, the whole inventory is smaller than
	// a delta) varies; the old pacer would have sent about 5 announces.
	if src["deltas_sent"] < 30 || dst["deltas_applied"] != src["deltas_sent"] {
		t.Errorf("deltas: %d sent, %d applied, for 115 changes", src["deltas_sent"], dst["deltas_applied"])
	}
	if src["changes_waited"] != 0 {
		t.Errorf("%d changes waited for the byte budget", src["changes_waited"])
	}
	if dst["drop_no_base"] != 0 || dst["drop_bad_digest"] != 0 {
		t.Errorf("receiver: no_base %d, bad_digest %d on a lossless link", dst["drop_no_base"], dst["drop_bad_digest"])
	}
}

// TestPeerOldReceiverConvergesOnBursts: a receiver from before delta
// announces (it drops them as an unknown type) still ends with every
// change of a burst, by heartbeat, query and announce.
func TestPeerOldReceiverConvergesOnBursts(t *testing.T) {
	r := newBurstRig(t, 4, []string{"--heartbeat-interval", "1s"}, []string{"--debug-ignore-deltas"})
	every(12, 20*time.Millisecond, func(i int) { r.toggle(t, i%4) })
	r.toggle(t, 1)
	testutil.Eventually(t, 3*peerWait, "host 2 (old) ends with host 1's devices", func() bool { return r.converged(t) })
	src, dst := counters(t, r.src), counters(t, r.dst)
	if src["deltas_sent"] == 0 {
		t.Error("no delta sent: the test proves nothing")
	}
	if dst["drop_unknown_type"] == 0 || dst["deltas_applied"] != 0 {
		t.Errorf("old receiver: drop_unknown_type %d, deltas_applied %d", dst["drop_unknown_type"], dst["deltas_applied"])
	}
}
