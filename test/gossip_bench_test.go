package test

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/diskd/diskd/pkg/api"
	"github.com/diskd/diskd/pkg/testutil"
)

// gossipMesh starts one daemon on every host of nw, all at once: the
// first host of each subnet gossips (joining the first host of subnet A,
// which joins that of subnet B), the others speak only multicast. Every
// daemon reports perHost fake disks. It returns the daemons by subnet and
// when the first was started.
func gossipMesh(tb testing.TB, nw *testutil.Network, perHost int, args ...string) ([][]*testutil.Daemon, time.Time) {
	key := writeKeyFile(tb, gossipKey)
	blkid := fakeBlkid(tb, perHost)
	seed, second := nw.Subnets[0][0], nw.Subnets[1][0]
	ds := make([][]*testutil.Daemon, len(nw.Subnets))
	t0 := time.Now()
	for s, hosts := range nw.Subnets {
		for i, h := range hosts {
			a := append([]string{"--devices", "/dev/fake*", "--blkid", blkid, "--uevents=false", "--key-file", key}, args...)
			if i == 0 {
				join := seed.Addr4.String()
				if h == seed {
					join = second.Addr4.String()
				}
				a = append(a, "--join", join)
			}
			d := testutil.StartDaemon(tb, testutil.DaemonOptions{Prefix: h.Prefix(), NoWait: true, Args: a})
			ds[s] = append(ds[s], d)
		}
	}
	for _, sub := range ds {
		for _, d := range sub {
			d.WaitReady()
		}
	}
	return ds, t0
}

// presentCount is how many present disks d lists.
func presentCount(tb testing.TB, diskctl string, d *testutil.Daemon) int {
	out, err := exec.Command(diskctl, "--socket", d.Socket, "list", "--json").Output()
	if err != nil {
		tb.Fatalf("diskctl list: %v", err)
	}
	return countPresent(out)
}

// countPresent counts `"present":true` in a list's JSON (cheaper than
// decoding 50 lists of 100 disks on every poll).
func countPresent(b []byte) int {
	n := 0
	for i := 0; i+15 <= len(b); i++ {
		if string(b[i:i+15]) == `"present":true,` {
			n++
		}
	}
	return n
}

// TestGossipNine: three subnets of three hosts, routing off, one gossip
// node per subnet, all started at once: every host lists every disk.
// (BenchmarkGossip50 is the same with 50 hosts over 5 subnets.)
func TestGossipNine(t *testing.T) {
	nw := testutil.Routed(t, 3, 3, 3)
	_, diskctl := testutil.Binaries(t)
	ds, _ := gossipMesh(t, nw, 2, "--heartbeat-interval", peerHeartbeat)
	deadline := time.Now().Add(gossipWait)
	for {
		var short []string
		for _, sub := range ds {
			for _, d := range sub {
				if n := presentCount(t, diskctl, d); n != 18 {
					short = append(short, fmt.Sprintf("%s lists %d", d.Socket, n))
				}
			}
		}
		if len(short) == 0 {
			return
		}
		if time.Now().After(deadline) {
			// Say who misses what, and how each of them hears its peers.
			for _, sub := range ds {
				for _, d := range sub {
					out, _ := exec.Command(diskctl, "--socket", d.Socket, "peers").CombinedOutput()
					t.Logf("%s peers:\n%s", d.Socket, out)
				}
			}
			t.Fatalf("after %s, not every host lists the 18 disks: %s", gossipWait, strings.Join(short, "; "))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// BenchmarkGossipPropagation: `losetup` on subnet A → listed by `diskctl
// list --json` on subnet B with multicast routing off, over 50 attaches:
// "direct" from one gossip node to the other, "relayed" from a
// multicast-only host of A through both gossip nodes to a multicast-only
// host of B. (Routed multicast: BenchmarkRoutedPropagation.)
func BenchmarkGossipPropagation(b *testing.B) {
	testutil.RequiresRoot(b)
	key := writeKeyFile(b, gossipKey)
	b.Run("direct", func(b *testing.B) {
		nw := testutil.Routed(b, 1, 1)
		a1, b1 := nw.Subnets[0][0], nw.Subnets[1][0]
		benchPropagationArgs(b, a1, b1,
			[]string{"--key-file", key, "--join", b1.Addr4.String()},
			[]string{"--key-file", key, "--join", a1.Addr4.String()})
	})
	b.Run("relayed", func(b *testing.B) {
		nw := testutil.Routed(b, 2, 2)
		a1, a2, b1, b2 := nw.Subnets[0][0], nw.Subnets[0][1], nw.Subnets[1][0], nw.Subnets[1][1]
		benchStart(b, a1, "--devices", "/dev/nothing", "--key-file", key, "--join", b1.Addr4.String())
		benchStart(b, b1, "--devices", "/dev/nothing", "--key-file", key, "--join", a1.Addr4.String())
		benchPropagationArgs(b, a2, b2, []string{"--key-file", key}, []string{"--key-file", key})
	})
}

// BenchmarkGossip50: 50 hosts over 5 subnets (one gossip node each, the
// rest multicast only; 2 disks each), routing off, started at once: time
// until every host lists all 100 disks; then a minute idle, what each
// host sends: multicast datagrams and bytes (every host), gossip packets,
// stream bytes (the 5 gossip nodes).
func BenchmarkGossip50(b *testing.B) {
	testutil.RequiresRoot(b)
	_, diskctl := testutil.Binaries(b)
	nw := testutil.Routed(b, 10, 10, 10, 10, 10)
	ds, t0 := gossipMesh(b, nw, 2)
	b.ReportMetric(time.Since(t0).Seconds(), "all-sockets-up-s")
	var all, gossipers []*testutil.Daemon
	for _, sub := range ds {
		all = append(all, sub...)
		gossipers = append(gossipers, sub[0])
	}
	for _, d := range all {
		for presentCount(b, diskctl, d) != 100 {
			if time.Since(t0) > 3*time.Minute {
				b.Fatalf("a host lists %d of 100 disks after 3 min", presentCount(b, diskctl, d))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	b.ReportMetric(time.Since(t0).Seconds(), "all-listed-s")

	sample := func() (mDgs, mBytes, gPkts, gBytes, gStreamBytes float64) {
		for _, d := range all {
			st := statusB(b, diskctl, d)
			c := st.Network.Counters
			mDgs += float64(c["sent_datagrams_ipv4"] + c["sent_datagrams_ipv6"])
			mBytes += float64(c["sent_bytes_ipv4"] + c["sent_bytes_ipv6"])
			if st.Gossip != nil {
				g := st.Gossip.Counters
				gPkts += float64(g["sent_packets"])
				gBytes += float64(g["sent_packet_bytes"])
				gStreamBytes += float64(g["sent_stream_bytes"])
			}
		}
		return
	}
	time.Sleep(10 * time.Second) // past the start's bursts
	m0, mb0, g0, gb0, gs0 := sample()
	time.Sleep(time.Minute)
	m1, mb1, g1, gb1, gs1 := sample()
	n, ng := float64(len(all)), float64(len(gossipers))
	b.ReportMetric((m1-m0)/n, "mcast-dgs/host/min")
	b.ReportMetric((mb1-mb0)/n, "mcast-B/host/min")
	b.ReportMetric((g1-g0)/ng, "gossip-pkts/gossiper/min")
	b.ReportMetric((gb1-gb0)/ng, "gossip-pkt-B/gossiper/min")
	b.ReportMetric((gs1-gs0)/ng, "gossip-stream-B/gossiper/min")
}

// statusB is `diskctl status --json` against d.
func statusB(b *testing.B, diskctl string, d *testutil.Daemon) api.Status {
	out, err := exec.Command(diskctl, "--socket", d.Socket, "status", "--json").Output()
	if err != nil {
		b.Fatalf("diskctl status: %v", err)
	}
	var st api.Status
	if err := json.Unmarshal(out, &st); err != nil {
		b.Fatal(err)
	}
	return st
}
