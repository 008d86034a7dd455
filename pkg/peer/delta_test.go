package peer

import (
	"fmt"
	"testing"
	"time"

	"github.com/diskd/diskd/pkg/disk"
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
