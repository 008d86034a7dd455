package peer

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/diskd/diskd/pkg/disk"
	"github.com/diskd/diskd/pkg/store"
	"github.com/diskd/diskd/pkg/wire"
)

// fakeLoops returns n loop devices as the scanner would report them.
func fakeLoops(n int) []disk.Disk {
	ds := make([]disk.Disk, n)
	for i := range ds {
		ds[i] = disk.Disk{Name: fmt.Sprintf("loop%d", 3000+i), Device: fmt.Sprintf("/dev/loop%d", 3000+i),
			MajMin: fmt.Sprintf("7:%d", i), UUID: fmt.Sprintf("%08x-1111-4000-8000-%012x", i, i),
			Label: fmt.Sprintf("BURST_%d", i), Type: "ext4", Usage: "filesystem", Size: 32 << 20}
	}
	return ds
}

// sendResult is what a simulated sender put on the wire for a burst.
type sendResult struct {
	deltas, small, fulls int             // deltas, one-datagram announces, announces through the pacer
	bytes                int             // of deltas and one-datagram announces
	lag                  []time.Duration // change → the message carrying it
}

// simulateChanges runs a deltaSender over changes at the given offsets
// (each toggles disk i%pool: attached, then detached, ...), checking
// every millisecond, and reports what went out and how late each change
// was. A full announce is taken as sent at once (the pacer's first).
func simulateChanges(t *testing.T, offsets []time.Duration, pool int, until time.Duration) sendResult {
	t.Helper()
	enc := wire.NewEncoder(wire.NodeID{1}, 1, nil)
	all := fakeLoops(pool)
	present := make([]bool, pool)
	inv := func() *wire.Inventory {
		var ds []disk.Disk
		for i, p := range present {
			if p {
				ds = append(ds, all[i])
			}
		}
		return wire.NewInventory(ds)
	}
	var d deltaSender
	gen := uint64(1)
	cur := inv()
	d.sent(gen, cur)
	var r sendResult
	var waiting []time.Duration // changes not yet carried
	send := func(now time.Duration) {
		dgs, delta, full := d.change(ms(0).Add(now), enc, "h", gen, cur)
		switch {
		case full:
			r.fulls++
			d.sent(gen, cur)
		case dgs == nil:
			return
		case delta:
			r.deltas++
		default:
			r.small++
		}
		for _, b := range dgs {
			r.bytes += len(b)
		}
		for _, w := range waiting {
			r.lag = append(r.lag, now-w)
		}
		waiting = nil
	}
	next := 0
	for now := time.Duration(0); now <= until; now += time.Millisecond {
		for next < len(offsets) && offsets[next] <= now {
			present[next%pool] = !present[next%pool]
			gen++
			cur = inv()
			waiting = append(waiting, now)
			next++
			send(now)
		}
		if !d.at.IsZero() && !ms(0).Add(now).Before(d.at) {
			send(now)
		}
	}
	if len(waiting) > 0 {
		t.Fatalf("%d changes never sent", len(waiting))
	}
	return r
}

func spaced(n int, gap time.Duration) []time.Duration {
	out := make([]time.Duration, n)
	for i := range out {
		out[i] = time.Duration(i) * gap
	}
	return out
}

func TestDeltaSender(t *testing.T) {
	for _, tt := range []struct {
		name    string
		offsets []time.Duration
		pool    int
		maxLag  time.Duration
	}{
		{"10 changes 200 ms apart", spaced(10, 200*time.Millisecond), 10, 0},
		{"100 changes 20 ms apart", spaced(100, 20*time.Millisecond), 10, 0},
		{"100 changes at once", spaced(100, 0), 10, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := simulateChanges(t, tt.offsets, tt.pool, time.Minute)
			if r.fulls != 0 || r.deltas+r.small != len(tt.offsets) {
				t.Errorf("%d deltas, %d small announces, %d through the pacer; want %d messages", r.deltas, r.small, r.fulls, len(tt.offsets))
			}
			for _, l := range r.lag {
				if l > tt.maxLag {
					t.Fatalf("a change waited %v", l)
				}
			}
		})
	}
}

// TestFlappingDeviceIsBounded: a device attached and detached every 10 ms
// for ten minutes costs at most the burst plus the rate's worth of delta
// bytes, every change still reaches the wire (coalesced), and none waits
// longer than one refill of a delta's size.
func TestFlappingDeviceIsBounded(t *testing.T) {
	dur := 10 * time.Minute
	r := simulateChanges(t, spaced(int(dur/(10*time.Millisecond)), 10*time.Millisecond), 1, dur+time.Second)
	limit := changeBurst + changeRate*int(dur/time.Second) + wire.MaxDatagram
	if r.bytes > limit {
		t.Errorf("%d bytes of deltas in %v, budget %d", r.bytes, dur, limit)
	}
	if r.bytes < limit/2 {
		t.Errorf("only %d bytes of deltas in %v: the budget (%d) is not used", r.bytes, dur, limit)
	}
	worst := time.Duration(0)
	for _, l := range r.lag {
		worst = max(worst, l)
	}
	if worst > time.Second {
		t.Errorf("a change waited %v", worst)
	}
	if r.fulls != 0 {
		t.Errorf("%d announces through the pacer for a one-disk inventory", r.fulls)
	}
	t.Logf("%d deltas, %d small announces, %d bytes (%.0f B/min); worst wait %v", r.deltas, r.small, r.bytes, float64(r.bytes)/dur.Minutes(), worst)
}

// TestDeltaFallsBackToAnnounce: a change too big for one datagram is an
// announce, and the base follows whatever went out last.
func TestDeltaFallsBackToAnnounce(t *testing.T) {
	enc := wire.NewEncoder(wire.NodeID{1}, 1, nil)
	var d deltaSender
	if dgs, delta, full := d.change(ms(0), enc, "h", 1, wire.NewInventory(fakeLoops(1))); len(dgs) != 1 || delta || full {
		t.Fatal("no base yet, one disk: want a one-datagram announce")
	}
	if dgs, _, full := d.change(ms(1), enc, "h", 2, wire.NewInventory(fakeLoops(40))); dgs != nil || !full {
		t.Fatal("39 disks at once: want an announce through the pacer")
	}
	d.sent(2, wire.NewInventory(fakeLoops(40)))
	if dgs, _, full := d.change(ms(2), enc, "h", 2, wire.NewInventory(fakeLoops(40))); dgs != nil || full {
		t.Fatal("nothing new: want nothing")
	}
	dgs, delta, full := d.change(ms(3), enc, "h", 3, wire.NewInventory(fakeLoops(41)))
	if len(dgs) != 1 || !delta || full {
		t.Fatal("one disk more: want a delta")
	}
	p, err := wire.NewDecoder(nil).Decode(dgs[0])
	if err != nil || p.Delta.Base != 2 || len(p.Delta.Upserts) != 1 {
		t.Fatalf("delta %+v, %v", p, err)
	}
}

func TestByteBudget(t *testing.T) {
	b := newByteBudget(1000, 100)
	if !b.ready(ms(0)) {
		t.Fatal("a new budget is not ready")
	}
	b.spend(ms(0), 1500) // more than it holds: goes, into debt
	if b.ready(ms(0)) || b.ready(ms(4000)) {
		t.Fatal("ready while in debt")
	}
	at := b.readyAt(ms(4000))
	if at.Before(ms(5000)) || at.After(ms(5002)) || !b.ready(at) {
		t.Fatalf("ready at %v, want 5 s", at.Sub(t0))
	}
	// It never holds more than the burst, and time going backwards adds
	// nothing.
	b.ready(ms(1_000_000))
	if b.tokens != 1000 {
		t.Fatalf("%v tokens after a long idle", b.tokens)
	}
	b.spend(ms(1_000_000), 1000)
	if b.ready(ms(0)) {
		t.Fatal("a clock going backwards refilled the budget")
	}
}

// machineNamed returns a started machine over a real store, for node id.
func machineNamed(t *testing.T, id disk.NodeID, name string, seed uint64) testMachine {
	t.Helper()
	st := store.New(store.Options{Local: disk.Node{ID: id, Name: name}})
	self, err := wire.ParseNodeID(id)
	if err != nil {
		t.Fatal(err)
	}
	fx := &testFx{storeEffects: storeEffects{st}}
	m := NewMachine(MachineConfig{Self: self, Name: name, Instance: wire.NewInstance(t0) + seed,
		HeartbeatInterval: DefaultInterval, Rand: rand.New(rand.NewPCG(seed, 2))}, fx)
	m.Start(t0)
	return testMachine{Machine: m, fx: fx, st: st}
}

// deliver hands what from sent since it was last asked to to, at now,
// and reports how many datagrams of each type went.
func deliver(t *testing.T, from, to testMachine, now time.Time) map[wire.Type]int {
	t.Helper()
	n := map[wire.Type]int{}
	for _, b := range from.fx.sent {
		p, err := wire.NewDecoder(nil).Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		n[p.Type]++
		to.Receive(now, p, netip.MustParseAddr("10.99.0.1"))
	}
	from.fx.sent = nil
	return n
}

// TestMachinesRecoverAMissedDelta: two machines, datagrams handed over by
// hand. A delta the receiver never got leaves a gap the next delta shows
// (no_base); the receiver asks, the sender answers with a full announce,
// and the delta after that applies again.
func TestMachinesRecoverAMissedDelta(t *testing.T) {
	a := machineNamed(t, "0123456789abcdef0123456789abcdef", "a", 1)
	b := machineNamed(t, "fedcba9876543210fedcba9876543210", "b", 2)
	aID := disk.NodeID("0123456789abcdef0123456789abcdef")
	deliver(t, a, b, ms(1))
	deliver(t, b, a, ms(1))
	all := fakeLoops(10)
	change := func(at int, gen uint64, k int) {
		a.SetLocal(ms(at), gen, all[:k])
		a.LocalChanged(ms(at))
	}
	has := func(k int) bool {
		return len(b.st.Disks(func(d *disk.Disk) bool { return d.Node == aID && d.Present })) == k
	}
	change(10, 1, 5)
	if n := deliver(t, a, b, ms(11)); n[wire.TypeAnnounce] != 1 || !has(5) {
		t.Fatalf("first change: sent %v; b has 5 disks: %v", n, has(5))
	}
	change(20, 2, 6)
	if len(a.fx.sent) != 1 {
		t.Fatalf("second change: %d datagrams", len(a.fx.sent))
	}
	a.fx.sent = nil // lost
	change(30, 3, 7)
	if n := deliver(t, a, b, ms(31)); n[wire.TypeDelta] != 1 || has(7) || b.ctr.reason[wire.ReasonNoBase].Load() != 1 {
		t.Fatalf("third change: sent %v, no_base %d", n, b.ctr.reason[wire.ReasonNoBase].Load())
	}
	// b asks within 100-300 ms; a answers within 20-120 ms.
	for now := 32; now < 1000 && !has(7); now++ {
		b.Tick(ms(now))
		deliver(t, b, a, ms(now))
		a.Tick(ms(now))
		deliver(t, a, b, ms(now))
	}
	if !has(7) {
		t.Fatal("b did not recover the missed generation within a second")
	}
	if b.ctr.get(queriesSent) < 2 || a.ctr.get(answersSent) != 1 {
		t.Errorf("queries %d, answers %d", b.ctr.get(queriesSent), a.ctr.get(answersSent))
	}
	change(2000, 4, 8)
	if n := deliver(t, a, b, ms(2001)); n[wire.TypeDelta] != 1 || !has(8) || b.ctr.get(deltasApplied) != 1 {
		t.Fatalf("fourth change: sent %v, applied %d", n, b.ctr.get(deltasApplied))
	}
}
