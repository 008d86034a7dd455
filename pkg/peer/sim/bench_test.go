package sim

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/diskd/diskd/pkg/wire"
)

// BenchmarkSimulatedPeers runs the protocol at N = 10 to 1000 nodes on the
// simulated link (0.2-1 ms, no loss, keyed, 2 disks a node, the default
// 10 s heartbeat) and reports, per size:
//   - converge_ms: simulated time from all nodes starting at once (a power
//     cut ends) until every node knows every node's current generation;
//   - boot_dgrams/node: datagrams a node sends in the first 30 s;
//   - spread_converge_ms and spread_boot_dgrams/node: the same when the
//     nodes start spread evenly over 10 s (converged counted from the
//     last start), where every start's query meets a running network;
//   - idle sent dgrams and bytes per node per minute, over SIM_IDLE_MINUTES
//     (default 2) simulated minutes after the first minute;
//   - change_dgrams and change_bytes: what the whole network sends, but
//     heartbeats, in the minute after one node's inventory changes;
//   - received dgrams per node per minute at idle;
//   - cpu_us/node/min: the process's CPU time (user+system, checking and
//     decoding every copy received included) during the idle minutes,
//     divided by N and by the simulated minutes.
//
// SIM_PEERS chooses the sizes ("10,100"); SIM_IDLE_MINUTES the idle
// window. N = 10 is the baseline of the per-node curve; idle sends must
// stay flat from 10 to 1000. N = 1000 takes minutes of CPU and about
// 5 GB: every pair of nodes costs ~2.3 KB, mostly each machine's
// assembler holding each peer's last inventory, and every second of
// simulated time delivers ~100,000 datagrams.
func BenchmarkSimulatedPeers(b *testing.B) {
	sizes := []int{10, 30, 100, 300, 1000}
	if env := os.Getenv("SIM_PEERS"); env != "" {
		sizes = nil
		for _, f := range strings.Split(env, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 2 || n > 65536 {
				b.Fatalf("SIM_PEERS: %q: want sizes from 2 to 65536", f)
			}
			sizes = append(sizes, n)
		}
	}
	idle := 2
	if env := os.Getenv("SIM_IDLE_MINUTES"); env != "" {
		var err error
		if idle, err = strconv.Atoi(env); err != nil || idle < 1 || idle > 600 {
			b.Fatalf("SIM_IDLE_MINUTES: %q: want 1 to 600", env)
		}
	}
	var rows []simResult
	for _, n := range sizes {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			var r simResult
			for b.Loop() {
				r = runScenario(b, n, idle)
			}
			b.ReportMetric(float64(r.converge.Milliseconds()), "converge_ms")
			b.ReportMetric(r.boot, "boot_dgrams/node")
			b.ReportMetric(float64(r.spreadConverge.Milliseconds()), "spread_converge_ms")
			b.ReportMetric(r.spreadBoot, "spread_boot_dgrams/node")
			b.ReportMetric(r.idleSent, "idle_dgrams/node/min")
			b.ReportMetric(r.idleBytes, "idle_bytes/node/min")
			b.ReportMetric(r.idleOther, "idle_non_heartbeat_dgrams/min")
			b.ReportMetric(r.change, "change_dgrams")
			b.ReportMetric(r.changeBytes, "change_bytes")
			b.ReportMetric(r.recv, "recv_dgrams/node/min")
			b.ReportMetric(r.cpu, "cpu_us/node/min")
			rows = append(rows, r)
		})
	}
	if len(rows) == 0 {
		return
	}
	var t strings.Builder
	fmt.Fprintf(&t, "simulated peers: keyed, 2 disks a node, heartbeat 10 s, latency 0.2-1 ms, no loss, one IPv4 path; idle over %d min\n", idle)
	fmt.Fprintf(&t, "%6s %10s %9s %10s %9s %13s %12s %11s %9s %8s %13s %12s %9s\n", "N", "converge", "boot/node", "spread cvg", "sp boot/n",
		"idle dg/n/min", "idle B/n/min", "idle x base", "change dg", "change B", "recv dg/n/min", "cpu us/n/min", "real")
	base := rows[0].idleSent
	for _, r := range rows {
		fmt.Fprintf(&t, "%6d %10v %9.1f %10v %9.1f %13.2f %12.0f %11.2f %9.0f %8.0f %13.0f %12.0f %9v\n", r.n, r.converge, r.boot,
			r.spreadConverge, r.spreadBoot, r.idleSent, r.idleBytes, r.idleSent/base, r.change, r.changeBytes, r.recv, r.cpu, r.real.Round(time.Millisecond))
	}
	fmt.Print(t.String())
}

type simResult struct {
	n                                    int
	converge                             time.Duration
	boot, idleSent, idleBytes, idleOther float64
	change, changeBytes, recv, cpu       float64
	spreadConverge                       time.Duration
	spreadBoot                           float64
	real                                 time.Duration
}

func runScenario(b *testing.B, n, idleMinutes int) simResult {
	start := time.Now()
	net := New(options(b, n))
	for i := range net.Nodes {
		net.Start(i)
	}
	r := simResult{n: n}
	if !net.RunUntil(Epoch.Add(time.Minute), time.Millisecond, net.Converged) {
		b.Fatalf("N=%d: not converged a minute after all started", n)
	}
	r.converge = net.Now().Sub(Epoch)
	net.Run(Epoch.Add(30 * time.Second))
	r.boot = float64(net.Total().SentDatagrams) / float64(n)

	net.Run(Epoch.Add(time.Minute))
	before, cpu0 := net.Total(), cpuTime()
	net.Run(net.Now().Add(time.Duration(idleMinutes) * time.Minute))
	after, cpu1 := net.Total(), cpuTime()
	per := float64(n) * float64(idleMinutes)
	r.idleSent = float64(after.SentDatagrams-before.SentDatagrams) / per
	r.idleBytes = float64(after.SentBytes-before.SentBytes) / per
	r.idleOther = float64((after.SentDatagrams-after.SentByType[wire.TypeHeartbeat])-
		(before.SentDatagrams-before.SentByType[wire.TypeHeartbeat])) / float64(idleMinutes)
	r.recv = float64(after.ReceivedDatagrams-before.ReceivedDatagrams) / per
	r.cpu = float64((cpu1 - cpu0).Microseconds()) / per

	net.Change(0)
	changed := net.Now()
	if !net.RunUntil(changed.Add(time.Second), time.Millisecond, net.Converged) {
		b.Fatalf("N=%d: a change did not reach everyone within a second", n)
	}
	net.Run(changed.Add(time.Minute))
	end := net.Total()
	r.change = float64((end.SentDatagrams - end.SentByType[wire.TypeHeartbeat]) - (after.SentDatagrams - after.SentByType[wire.TypeHeartbeat]))
	r.changeBytes = float64((end.SentBytes - end.SentBytesByType[wire.TypeHeartbeat]) - (after.SentBytes - after.SentBytesByType[wire.TypeHeartbeat]))
	r.spreadConverge, r.spreadBoot = spreadBoot(b, n)
	r.real = time.Since(start)
	return r
}

// spreadBoot starts n nodes evenly over 10 s and returns how long after
// the last start all knew each other, and the datagrams a node sent in
// the first 30 s.
func spreadBoot(b *testing.B, n int) (time.Duration, float64) {
	const spread = 10 * time.Second
	net := New(options(b, n))
	for i := range net.Nodes {
		net.StartAt(i, Epoch.Add(spread*time.Duration(i)/time.Duration(n)))
	}
	last := Epoch.Add(spread * time.Duration(n-1) / time.Duration(n))
	net.Run(last)
	if !net.RunUntil(last.Add(time.Minute), 10*time.Millisecond, net.Converged) {
		b.Fatalf("N=%d: starts spread over %v: not converged a minute after the last", n, spread)
	}
	took := net.Now().Sub(last)
	net.Run(Epoch.Add(30 * time.Second))
	return took, float64(net.Total().SentDatagrams) / float64(n)
}

// cpuTime is the process's CPU time, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
