package gossip

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/diskd/diskd/pkg/disk"
	"github.com/diskd/diskd/pkg/store"
	"github.com/diskd/diskd/pkg/wire"
)

// BenchmarkScale runs N gossip services in one process on 127.0.0.1
// (memberlist's own UDP/TCP transport, LAN profile, keyed), each with its
// own store and 2 disks, all started at once, the first joining the
// second and every other joining the first. It reports the time until
// every store lists all 2N disks, what each node sends per second when
// idle (packets and bytes, UDP and TCP), and how long until every other
// node shows a node offline after its memberlist stopped without leaving
// (a kill). N=1000 runs when DISKD_BENCH_1000=1; DISKD_BENCH_SIZES=50,100
// picks the sizes. One process hosting 200
// keyed members is CPU-bound on 2 cores: members are suspected and refute
// under that load, so the N=200 figures are an upper bound, not a steady
// network's. TestSimulatedScale measures the protocol itself at 50, 200
// and 1000 members, on virtual time.
func BenchmarkScale(b *testing.B) {
	sizes := []int{50, 200}
	if os.Getenv("DISKD_BENCH_1000") == "1" {
		sizes = append(sizes, 1000)
	}
	if v := os.Getenv("DISKD_BENCH_SIZES"); v != "" { // e.g. "50,100"
		sizes = nil
		for _, f := range strings.Split(v, ",") {
			if n, err := strconv.Atoi(f); err == nil && n >= 2 {
				sizes = append(sizes, n)
			}
		}
	}
	for _, n := range sizes {
		b.Run(strconv.Itoa(n), func(b *testing.B) { benchScale(b, n) })
	}
}

func freePorts(b testing.TB, n int) []int {
	var ports []int
	var held []net.Listener
	defer func() {
		for _, l := range held {
			l.Close()
		}
	}()
	for len(ports) < n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		held = append(held, l)
		p := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			continue
		}
		u.Close()
		ports = append(ports, p)
	}
	return ports
}

// cluster is n gossip services on 127.0.0.1, each with a store holding 2
// disks, the first joining the second and the others the first, all
// started at once. stop ends them all; stopOne one of them, cleanly.
func cluster(tb testing.TB, n int) (svcs []*Service, stores []*store.Store, started time.Time, stop func(), stopOne func(i int)) {
	keys, err := wire.ParseKeys(strings.NewReader("1 0123456789abcdef0123456789abcdef\n"))
	if err != nil {
		tb.Fatal(err)
	}
	ports := freePorts(tb, n)
	svcs = make([]*Service, n)
	stores = make([]*store.Store, n)
	for i := range n {
		raw := make([]byte, 16)
		_, _ = rand.Read(raw)
		st := store.New(store.Options{Local: disk.Node{ID: disk.NodeID(hex.EncodeToString(raw)), Name: fmt.Sprintf("n%d", i)}})
		st.SetLocal([]disk.Disk{
			{Name: "sda", Device: "/dev/sda", UUID: fmt.Sprintf("%08x-a", i), Type: "ext4", Size: 1 << 30},
			{Name: "sdb", Device: "/dev/sdb", UUID: fmt.Sprintf("%08x-b", i), Type: "xfs", Size: 1 << 31},
		})
		join := ports[0]
		if i == 0 {
			join = ports[1]
		}
		cfg := Config{Join: []string{"127.0.0.1:" + strconv.Itoa(join)}, Port: ports[i], Bind: "127.0.0.1",
			Advertise: "127.0.0.1:" + strconv.Itoa(ports[i]), Profile: "lan"}
		s, err := New(cfg, Deps{Store: st, Keys: keys, Interval: 10 * time.Second})
		if err != nil {
			tb.Fatal(err)
		}
		svcs[i], stores[i] = s, st
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	started = time.Now()
	cancels := make([]context.CancelFunc, n)
	for i, s := range svcs {
		wg.Add(1)
		sctx, scancel := context.WithCancel(ctx)
		cancels[i] = scancel
		go func() { defer wg.Done(); _ = s.Run(sctx) }()
	}
	stopOne = func(i int) { cancels[i](); <-svcs[i].stopped }
	return svcs, stores, started, func() { cancel(); wg.Wait() }, stopOne
}

func benchScale(b *testing.B, n int) {
	svcs, stores, t0, stop, _ := cluster(b, n)
	defer stop()
	want := 2 * n
	var members time.Duration
	lastLog := time.Now()
	for {
		done, joined := 0, 0
		for i, st := range stores {
			if st.Counts().DisksPresent == want {
				done++
			}
			if svcs[i].numMembers() == n {
				joined++
			}
		}
		if joined == n && members == 0 {
			members = time.Since(t0)
		}
		if done == n {
			break
		}
		if time.Since(lastLog) > 10*time.Second {
			lastLog = time.Now()
			sum := map[string]uint64{}
			for _, sv := range svcs {
				for k, v := range sv.ctr.snapshot() {
					sum[k] += v
				}
			}
			b.Logf("%v: %d of %d nodes see every member, %d list every disk; fetches sent %d served %d applied %d stale %d cached %d failed %d, work full %d",
				time.Since(t0).Round(time.Second), joined, n, done, sum[cFetchesSent], sum[cFetchesServed], sum[cFetchesApplied],
				sum[cFetchesStale], sum[cFetchesCached], sum[cFetchFailed], sum[cDropWorkFull])
		}
		if time.Since(t0) > 10*time.Minute {
			b.Fatalf("%d of %d nodes list every disk after 10 min", done, n)
		}
		time.Sleep(100 * time.Millisecond)
	}
	b.ReportMetric(time.Since(t0).Seconds(), "converged-s")
	b.ReportMetric(members.Seconds(), "all-members-s")

	sample := func() (pkts, udpB, streams, tcpB, fetches float64) {
		for _, s := range svcs {
			pkts += float64(s.tr.packets.Load())
			udpB += float64(s.tr.packetBytes.Load())
			streams += float64(s.tr.streams.Load())
			tcpB += float64(s.tr.streamBytes.Load())
			fetches += float64(s.ctr.get(cFetchesSent))
		}
		return
	}
	time.Sleep(5 * time.Second)
	p0, u0, s0, t0b, f0 := sample()
	const idle = time.Minute // push/pull comes every 60 s at N=50, 120 s at N=200
	time.Sleep(idle)
	p1, u1, s1, t1b, f1 := sample()
	per := func(a, b float64) float64 { return (b - a) / float64(n) / idle.Seconds() }
	b.ReportMetric(per(p0, p1), "idle-udp-pkts/node/s")
	b.ReportMetric(per(u0, u1), "idle-udp-B/node/s")
	b.ReportMetric(per(s0, s1), "idle-tcp-streams/node/s")
	b.ReportMetric(per(t0b, t1b), "idle-tcp-B/node/s")
	b.ReportMetric(per(f0, f1), "idle-fetches/node/s")

	// A kill: the victim's memberlist stops without leaving.
	victim := svcs[n-1]
	vid := stores[n-1].LocalNode().ID
	victim.kill()
	t1 := time.Now()
	var first time.Duration
	for {
		off := 0
		for _, st := range stores[:n-1] {
			if nd, ok := st.Node(vid); ok && !nd.Online {
				off++
			}
		}
		if off > 0 && first == 0 {
			first = time.Since(t1)
		}
		if off == n-1 {
			break
		}
		if time.Since(t1) > 5*time.Minute {
			b.Fatalf("victim offline on %d of %d after 5 min", off, n-1)
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.ReportMetric(first.Seconds(), "kill-first-s")
	b.ReportMetric(time.Since(t1).Seconds(), "kill-all-s")
}

// TestCluster runs the whole service in one process (run it with -race):
// four members list each other's disks; one that stops cleanly is offline
// on the others at once (they count it left, not failed).
func TestCluster(t *testing.T) {
	svcs, stores, t0, stop, stopOne := cluster(t, 4)
	defer stop()
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for !cond() {
			if time.Since(t0) > time.Minute {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	for _, st := range stores {
		waitFor("every disk everywhere", func() bool { return st.Counts().DisksPresent == 8 })
	}
	gone := stores[3].LocalNode().ID
	stopOne(3)
	for i, st := range stores[:3] {
		waitFor("the stopped member offline", func() bool { n, ok := st.Node(gone); return ok && !n.Online })
		if c := svcs[i].ctr.snapshot(); c[cMembersLeft] != 1 || c[cMembersFailed] != 0 {
			t.Errorf("member %d: left %d, failed %d; want 1, 0", i, c[cMembersLeft], c[cMembersFailed])
		}
		if st.Counts().DisksPresent != 6 {
			t.Errorf("member %d lists %d present disks, want 6", i, st.Counts().DisksPresent)
		}
	}
}
