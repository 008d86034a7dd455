package test

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"testing"
	"time"

	"github.com/diskd/diskd/pkg/disk"
	"github.com/diskd/diskd/pkg/testutil"
	"github.com/diskd/diskd/pkg/wire"
)

// The peer network's figures (issue 4), measured between real diskd
// processes on namespace hosts of this machine. `make bench` runs each
// once and reports them as custom metrics.

// listJSONB is `diskctl list --json` against d, timed by the caller.
func listJSONB(b *testing.B, diskctl string, d *testutil.Daemon) []disk.Disk {
	out, err := exec.Command(diskctl, "--socket", d.Socket, "list", "--json").Output()
	if err != nil {
		b.Fatalf("diskctl list: %v", err)
	}
	var ds []disk.Disk
	if err := json.Unmarshal(out, &ds); err != nil {
		b.Fatal(err)
	}
	return ds
}

func benchStart(b *testing.B, h *testutil.Host, args ...string) *testutil.Daemon {
	return testutil.StartDaemon(b, testutil.DaemonOptions{Prefix: h.Prefix(),
		Args: append([]string{"--heartbeat-interval", "10s"}, args...)})
}

// BenchmarkPeerPropagation: `losetup` returning on host 1 → the device
// listed by `diskctl list --json` on host 2, over 50 attaches. Host 1 runs
// with --announce-limit 600 so that 100 changes (attach and detach) fit in
// a minute; each attach comes after a pause, so it is the first change of
// its burst, which the default limit also sends at once.
func BenchmarkPeerPropagation(b *testing.B) {
	testutil.RequiresRoot(b)
	hosts := testutil.Hosts(b, 2)
	benchPropagation(b, hosts[0], hosts[1])
}

// benchPropagation measures, over 50 attaches, `losetup` returning on src
// → the device listed by `diskctl list --json` on dst, each daemon started
// with args.
func benchPropagation(b *testing.B, src, dst *testutil.Host, args ...string) {
	benchPropagationArgs(b, src, dst, args, args)
}

// benchPropagationArgs is benchPropagation with each side's own flags.
func benchPropagationArgs(b *testing.B, src, dst *testutil.Host, srcArgs, dstArgs []string) {
	testutil.RequiresTool(b, "losetup", "mkfs.ext4", "blkid")
	_, diskctl := testutil.Binaries(b)
	dev := newLoopDev(b)
	img := testutil.LoopImage(b, 32, "mkfs.ext4", "-q", "-L", "PROPAGATE")
	benchStart(b, src, append([]string{"--devices", dev, "--announce-limit", "600"}, srcArgs...)...)
	h2 := benchStart(b, dst, append([]string{"--devices", "/dev/nothing"}, dstArgs...)...)
	listed := func(present bool) bool {
		g := find(listJSONB(b, diskctl, h2), "PROPAGATE")
		return g != nil && g.Present == present || g == nil && !present
	}
	var lat []time.Duration
	for i := 0; i < 50; i++ {
		time.Sleep(150 * time.Millisecond)
		if out, err := exec.Command("losetup", dev, img).CombinedOutput(); err != nil {
			b.Fatalf("losetup: %v %s", err, out)
		}
		t0 := time.Now()
		for !listed(true) {
			if time.Since(t0) > 10*time.Second {
				b.Fatal("not listed on the other host within 10 s")
			}
		}
		lat = append(lat, time.Since(t0))
		if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
			b.Fatalf("losetup -d: %v %s", err, out)
		}
		for t1 := time.Now(); !listed(false); {
			if time.Since(t1) > 10*time.Second {
				b.Fatal("not marked absent on the other host within 10 s")
			}
		}
	}
	// Polling resolution: one diskctl round trip.
	t0 := time.Now()
	listJSONB(b, diskctl, h2)
	b.ReportMetric(ms(percentile(lat, 50)), "p50-ms")
	b.ReportMetric(ms(percentile(lat, 99)), "p99-ms")
	b.ReportMetric(ms(time.Since(t0)), "diskctl-roundtrip-ms")
}

// BenchmarkPeerJoin: a 17th host joining 16 running hosts (10 disks
// each): from starting its diskd to its `diskctl list --json` listing
// all 160 of their disks.
func BenchmarkPeerJoin(b *testing.B) {
	testutil.RequiresRoot(b)
	_, diskctl := testutil.Binaries(b)
	hosts := testutil.Hosts(b, 17)
	blkid := fakeBlkid(b, 10)
	for _, h := range hosts[:16] {
		benchStart(b, h, "--devices", "/dev/fake*", "--blkid", blkid, "--uevents=false")
	}
	time.Sleep(time.Second) // let the 16 settle
	t0 := time.Now()
	late := testutil.StartDaemon(b, testutil.DaemonOptions{Prefix: hosts[16].Prefix(), NoWait: true,
		Args: []string{"--devices", "/dev/nothing"}})
	late.WaitReady()
	ready := time.Since(t0)
	for {
		n := 0
		for _, d := range listJSONB(b, diskctl, late) {
			if d.Present {
				n++
			}
		}
		if n == 160 {
			break
		}
		if time.Since(t0) > 20*time.Second {
			b.Fatalf("late joiner lists %d of 160 disks after 20 s", n)
		}
	}
	b.ReportMetric(ms(time.Since(t0)), "join-ms")
	b.ReportMetric(ms(ready), "daemon-ready-ms")
}

// BenchmarkPeerIdleTraffic: bytes per minute sent by one idle peer with
// 100 disks (default 10 s heartbeat, authenticated), per address family,
// as UDP payload and with IP and UDP headers.
func BenchmarkPeerIdleTraffic(b *testing.B) {
	testutil.RequiresRoot(b)
	hosts := testutil.Hosts(b, 2)
	key := writeKeyFile(b, "1 0123456789abcdef0123456789abcdef\n") // the tag counts too
	d := benchStart(b, hosts[0], "--devices", "/dev/fake*", "--blkid", fakeBlkid(b, 100), "--uevents=false", "--key-file", key)
	benchStart(b, hosts[1], "--devices", "/dev/nothing", "--key-file", key)
	time.Sleep(3 * time.Second) // past the start-up exchange
	counters := func() map[string]uint64 {
		var s struct {
			Network struct{ Counters map[string]uint64 } `json:"network"`
		}
		if err := json.Unmarshal([]byte(d.MustCtl("status", "--json")), &s); err != nil {
			b.Fatal(err)
		}
		return s.Network.Counters
	}
	c0 := counters()
	time.Sleep(time.Minute)
	c1 := counters()
	for _, fam := range []struct {
		name string
		hdr  uint64
	}{{"ipv4", 28}, {"ipv6", 48}} {
		bytes := c1["sent_bytes_"+fam.name] - c0["sent_bytes_"+fam.name]
		dgs := c1["sent_datagrams_"+fam.name] - c0["sent_datagrams_"+fam.name]
		b.ReportMetric(float64(bytes), fam.name+"-payload-B/min")
		b.ReportMetric(float64(bytes+dgs*fam.hdr), fam.name+"-wire-B/min")
		b.ReportMetric(float64(dgs), fam.name+"-datagrams/min")
	}
}

// BenchmarkPeerLargeInventory: datagrams needed for 1000 devices and the
// largest datagram seen on the wire.
func BenchmarkPeerLargeInventory(b *testing.B) {
	testutil.RequiresRoot(b)
	_, diskctl := testutil.Binaries(b)
	hosts := testutil.Hosts(b, 3)
	tap := newWireTap(b, hosts[2])
	benchStart(b, hosts[0], "--devices", "/dev/fake*", "--blkid", fakeBlkid(b, 1000), "--uevents=false")
	other := benchStart(b, hosts[1], "--devices", "/dev/nothing")
	t0 := time.Now()
	for {
		n := 0
		for _, d := range listJSONB(b, diskctl, other) {
			if d.Present && d.Host == "dkd-h1" {
				n++
			}
		}
		if n == 1000 {
			break
		}
		if time.Since(t0) > 20*time.Second {
			b.Fatalf("%d of 1000 disks after 20 s", n)
		}
	}
	largest, chunks := 0, 0
	for _, dg := range tap.Datagrams() {
		largest = max(largest, len(dg))
		if p, err := wire.NewDecoder(nil).Decode(dg); err == nil && p.Type == wire.TypeAnnounce && p.Announce.Name == "dkd-h1" {
			chunks = max(chunks, p.Announce.Chunks)
		}
	}
	b.ReportMetric(float64(largest), "largest-datagram-B")
	b.ReportMetric(float64(chunks), "datagrams/1000-devices")
}

// snapshot is a daemon's view of host 1's devices at one moment: by
// device, whether one of its disks is present (an attach probed before
// blkid could read the filesystem lists the device without its label).
type snapshot struct {
	at time.Time // when diskctl answered
	v  map[string]bool
}

// poller records a daemon's view of the rig as often as diskctl answers,
// until stop.
type poller struct {
	snaps []snapshot
	stop  chan struct{}
	done  chan struct{}
}

func (r *burstRig) poll(d *testutil.Daemon) *poller {
	p := &poller{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for {
			select {
			case <-p.stop:
				return
			default:
			}
			out, err := exec.Command(r.diskctl, "--socket", d.Socket, "list", "--json").Output()
			at := time.Now()
			var ds []disk.Disk
			if err != nil || json.Unmarshal(out, &ds) != nil {
				continue
			}
			v := map[string]bool{}
			for _, d := range ds {
				if d.Host == "dkd-h1" {
					v[d.Device] = v[d.Device] || d.Present
				}
			}
			p.snaps = append(p.snaps, snapshot{at, v})
		}
	}()
	return p
}

func (p *poller) end() []snapshot {
	close(p.stop)
	<-p.done
	return p.snaps
}

// change is one toggle of a rig's device: to attached or not, at when
// losetup returned.
type change struct {
	dev int
	to  bool
	at  time.Time
}

// seen returns when snaps first show each change (zero: never), looking
// from the change to the next change of the same device, so that a
// change missed is not credited with a later one's arrival.
func (r *burstRig) seen(changes []change, snaps []snapshot) []time.Time {
	out := make([]time.Time, len(changes))
	for k, c := range changes {
		until := time.Time{}
		for _, n := range changes[k+1:] {
			if n.dev == c.dev {
				until = n.at
				break
			}
		}
		for _, s := range snaps {
			if s.at.Before(c.at) {
				continue
			}
			if !until.IsZero() && s.at.After(until) {
				break
			}
			if s.v[r.devs[c.dev]] == c.to {
				out[k] = s.at
				break
			}
		}
	}
	return out
}

// BenchmarkPeerBurst: how late the changes of a burst reach a peer, with
// the daemons' defaults, for three shapes: a lone change (10 attaches
// 1.2 s apart: each is the first of its burst), 10 attaches 200 ms apart,
// and 100 changes 20 ms apart (10 devices attached and detached in turn).
// Each shape runs on fresh daemons, so that none pays for another's
// traffic. Both daemons are polled with `diskctl list --json` as fast as
// it answers; per change:
//   - peer-p50/p99-ms: host 1 listing it → host 2 listing it (the peer
//     network's part);
//   - e2e-p50/p99-ms: `losetup` returning → host 2 listing it (local
//     detection included);
//   - local-missed, peer-missed: changes host 1 never listed (its scanner
//     folded them into the next), and changes it listed that host 2 never
//     did (superseded before they arrived, or lost).
//
// The polling resolution, one diskctl round trip, is reported beside them.
func BenchmarkPeerBurst(b *testing.B) {
	for _, shape := range []struct {
		name string
		n    int
		gap  time.Duration
		devs int
	}{
		{"lone", 10, 1200 * time.Millisecond, 10},
		{"10x200ms", 10, 200 * time.Millisecond, 10},
		{"100x20ms", 100, 20 * time.Millisecond, 10},
	} {
		b.Run(shape.name, func(b *testing.B) {
			r := newBurstRig(b, shape.devs, nil, nil)
			time.Sleep(time.Second) // past the start-up exchange
			pd, ps := r.poll(r.dst), r.poll(r.src)
			var changes []change
			start := time.Now()
			every(shape.n, shape.gap, func(i int) {
				d := i % shape.devs
				at := r.toggle(b, d)
				changes = append(changes, change{d, r.attached[d], at})
			})
			spacing := time.Since(start) / time.Duration(shape.n)
			for t0 := time.Now(); !r.converged(b); {
				// 90 s: without delta announces, changes beyond 10 a minute wait.
				if time.Since(t0) > 90*time.Second {
					b.Fatal("host 2 does not show host 1's devices after 90 s")
				}
				time.Sleep(10 * time.Millisecond)
			}
			time.Sleep(100 * time.Millisecond)
			atSrc, atDst := r.seen(changes, ps.end()), r.seen(changes, pd.end())
			var peer, e2e []time.Duration
			localMissed, peerMissed := 0, 0
			for k, c := range changes {
				switch {
				case atSrc[k].IsZero():
					localMissed++
				case atDst[k].IsZero():
					peerMissed++
				default:
					peer = append(peer, max(0, atDst[k].Sub(atSrc[k])))
					e2e = append(e2e, atDst[k].Sub(c.at))
				}
			}
			if len(peer) == 0 {
				b.Fatal("no change seen on both hosts")
			}
			t0 := time.Now()
			r.view(b)
			b.ReportMetric(ms(percentile(peer, 50)), "peer-p50-ms")
			b.ReportMetric(ms(percentile(peer, 99)), "peer-p99-ms")
			b.ReportMetric(ms(percentile(e2e, 50)), "e2e-p50-ms")
			b.ReportMetric(ms(percentile(e2e, 99)), "e2e-p99-ms")
			b.ReportMetric(float64(localMissed), "local-missed")
			b.ReportMetric(float64(peerMissed), "peer-missed")
			b.ReportMetric(ms(spacing), "spacing-ms")
			b.ReportMetric(ms(time.Since(t0)), "diskctl-roundtrip-ms")
		})
	}
}

// BenchmarkPeerFlapping: one device attached and detached every 20 ms
// (or as fast as losetup allows) for two minutes, with the daemons'
// defaults: the bytes host 1 sends in each minute per address family (UDP
// payload, heartbeats included: the first minute holds the byte budget's
// burst, the second shows its rate), the changes it made, and that host 2
// still ends with the device's last state.
func BenchmarkPeerFlapping(b *testing.B) {
	r := newBurstRig(b, 1, nil, nil)
	time.Sleep(time.Second)
	n := 0
	for minute := 1; minute <= 2; minute++ {
		c0, start := counters(b, r.src), time.Now()
		for time.Since(start) < time.Minute {
			r.toggle(b, 0)
			n++
			time.Sleep(20 * time.Millisecond)
		}
		mins := time.Since(start).Minutes()
		c1 := counters(b, r.src)
		for _, fam := range []string{"ipv4", "ipv6"} {
			b.ReportMetric(float64(c1["sent_bytes_"+fam]-c0["sent_bytes_"+fam])/mins, fmt.Sprintf("min%d-%s-payload-B", minute, fam))
		}
		b.ReportMetric(float64(c1["deltas_sent"]-c0["deltas_sent"])/mins, fmt.Sprintf("min%d-deltas", minute))
		b.ReportMetric(float64(c1["announces_sent"]-c0["announces_sent"])/mins, fmt.Sprintf("min%d-announces", minute))
	}
	for t0 := time.Now(); !r.converged(b); {
		if time.Since(t0) > 90*time.Second {
			b.Fatal("host 2 does not show the flapping device's last state after 90 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	b.ReportMetric(float64(n)/2, "changes/min")
}
