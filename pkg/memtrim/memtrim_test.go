package memtrim

import (
	"context"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

const mb = 1 << 20

// reading is one sample of a made-up runtime, t seconds after the first.
type reading struct {
	t                   float64
	live, held, allocMB uint64 // allocMB: cumulative MiB allocated
	trim                bool   // whether the policy must trim at this reading
	after               uint64 // if trim: the held heap the trim leaves (MiB)
}

// TestPolicy drives the decision with made-up readings: it trims once a
// burst has grown the heap beyond the live data and the process has been
// quiet for Quiet, never twice within MinGap, and not again for heap a
// trim could not return.
func TestPolicy(t *testing.T) {
	cfg := Config{Quiet: 3 * time.Second, QuietRate: mb, MinExcess: 8 * mb, Fraction: 0.25, MinGap: 30 * time.Second}
	tests := []struct {
		name string
		rs   []reading
	}{
		{"a burst, then quiet: one trim after Quiet", []reading{
			{t: 0, live: 40, held: 44, allocMB: 100},
			{t: 1, live: 40, held: 80, allocMB: 400}, // a list
			{t: 2, live: 40, held: 88, allocMB: 700},
			{t: 3, live: 40, held: 88, allocMB: 700}, // quiet from here
			{t: 4, live: 40, held: 88, allocMB: 700},
			{t: 5, live: 40, held: 88, allocMB: 700, trim: true, after: 45},
			{t: 6, live: 40, held: 45, allocMB: 700},
			{t: 60, live: 40, held: 45, allocMB: 700},
		}},
		{"no trim while the burst goes on", []reading{
			{t: 0, live: 40, held: 44, allocMB: 0},
			{t: 1, live: 40, held: 80, allocMB: 300},
			{t: 5, live: 40, held: 88, allocMB: 2000},
			{t: 10, live: 40, held: 88, allocMB: 4000},
			{t: 20, live: 40, held: 88, allocMB: 8000},
			{t: 22, live: 40, held: 88, allocMB: 8001}, // 0.5 MiB/s: quiet
			{t: 23, live: 40, held: 88, allocMB: 8001, trim: true, after: 44},
		}},
		{"a trickle is quiet, a pause between requests is not", []reading{
			{t: 0, live: 40, held: 44, allocMB: 0},
			{t: 1, live: 40, held: 80, allocMB: 300},
			{t: 2, live: 40, held: 80, allocMB: 300}, // a pause
			{t: 3, live: 40, held: 80, allocMB: 600}, // the next list
			{t: 4, live: 40, held: 80, allocMB: 600},
			{t: 5, live: 40, held: 80, allocMB: 600},
			{t: 6, live: 40, held: 80, allocMB: 600, trim: true, after: 44},
		}},
		{"growth below the threshold: no trim", []reading{
			{t: 0, live: 40, held: 44, allocMB: 0},
			{t: 1, live: 40, held: 53, allocMB: 100}, // 9 MiB over the floor; the threshold is 10 (a quarter of 40)
			{t: 10, live: 40, held: 53, allocMB: 100},
			{t: 100, live: 40, held: 53, allocMB: 100},
		}},
		{"MinExcess when the live heap is small", []reading{
			{t: 0, live: 4, held: 5, allocMB: 0},
			{t: 1, live: 4, held: 12, allocMB: 50}, // 7 MiB over: below 8
			{t: 5, live: 4, held: 12, allocMB: 50},
			{t: 6, live: 4, held: 14, allocMB: 53}, // 2 MiB/s: busy
			{t: 10, live: 4, held: 14, allocMB: 51, trim: true, after: 5},
		}},
		{"at most one trim per MinGap", []reading{
			{t: 0, live: 40, held: 44, allocMB: 0},
			{t: 1, live: 40, held: 88, allocMB: 300},
			{t: 4, live: 40, held: 88, allocMB: 300, trim: true, after: 44},
			{t: 5, live: 40, held: 88, allocMB: 600}, // another burst
			{t: 10, live: 40, held: 88, allocMB: 600},
			{t: 33, live: 40, held: 88, allocMB: 600},
			{t: 34, live: 40, held: 88, allocMB: 600, trim: true, after: 44},
		}},
		{"what a trim could not return does not call for another", []reading{
			{t: 0, live: 40, held: 44, allocMB: 0},
			{t: 1, live: 40, held: 88, allocMB: 300},
			{t: 4, live: 40, held: 88, allocMB: 300, trim: true, after: 70}, // fragmented
			{t: 40, live: 40, held: 70, allocMB: 300},
			{t: 80, live: 40, held: 75, allocMB: 301},
			{t: 200, live: 40, held: 75, allocMB: 301},
		}},
		{"the floor follows the excess down", []reading{
			{t: 0, live: 40, held: 60, allocMB: 0},   // excess 20
			{t: 1, live: 40, held: 42, allocMB: 1},   // a collection: excess 2
			{t: 2, live: 40, held: 55, allocMB: 100}, // 13 over the floor of 2
			{t: 6, live: 40, held: 55, allocMB: 100, trim: true, after: 42},
		}},
		{"the live heap grew: the excess is what counts", []reading{
			{t: 0, live: 40, held: 44, allocMB: 0},
			{t: 1, live: 80, held: 90, allocMB: 300}, // excess 10 of a threshold of 20
			{t: 10, live: 80, held: 90, allocMB: 300},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := policy{cfg: cfg}
			t0 := time.Unix(1_000_000, 0)
			for _, r := range tc.rs {
				now := t0.Add(time.Duration(r.t * float64(time.Second)))
				s := Sample{Live: r.live * mb, Held: r.held * mb, Allocs: r.allocMB * mb}
				if got := p.observe(now, s); got != r.trim {
					t.Fatalf("at %vs (live %d, held %d MiB): trim = %v, want %v", r.t, r.live, r.held, got, r.trim)
				}
				if r.trim {
					p.trimmed(now, Sample{Live: r.live * mb, Held: r.after * mb, Allocs: r.allocMB * mb})
				}
			}
		})
	}
}

// TestRunStopsAndTrims runs the Trimmer on a fake runtime and a fake clock
// (synctest): a burst is trimmed once, and Run returns when its context
// ends.
func TestRunStopsAndTrims(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var held, allocs atomic.Uint64
		held.Store(44 * mb)
		var released atomic.Int32
		tr := New(Config{
			Read: func(s *Sample) {
				*s = Sample{Live: 40 * mb, Held: held.Load(), Allocs: allocs.Load()}
			},
			Release: func() { released.Add(1); held.Store(42 * mb) },
		})
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- tr.Run(ctx) }()
		time.Sleep(1500 * time.Millisecond)
		held.Store(90 * mb) // a burst
		allocs.Add(500 * mb)
		time.Sleep(2 * time.Second)
		if n := released.Load(); n != 0 {
			t.Fatalf("released %d times during the burst", n)
		}
		time.Sleep(5 * time.Second)
		if n := released.Load(); n != 1 {
			t.Fatalf("released %d times after the burst, want 1", n)
		}
		time.Sleep(time.Minute)
		if n := released.Load(); n != 1 {
			t.Fatalf("released %d times at rest, want 1", n)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Run = %v", err)
		}
	})
}

var sink [][]byte

// TestRuntimeTrim runs the Trimmer on this process's own runtime: after a
// burst of 64 MiB of short-lived allocations the heap held beyond the live
// data comes back down (the runtime alone keeps it, as free pages up to
// its goal).
func TestRuntimeTrim(t *testing.T) {
	read := newRuntimeReader()
	runtime.GC() // the live heap is known after a collection
	var before Sample
	read(&before)
	if before.Live == 0 || before.Held < before.Live || before.Allocs == 0 {
		t.Fatalf("runtime/metrics read as %+v", before)
	}
	var trims atomic.Int32
	tr := New(Config{
		Every: 20 * time.Millisecond, Quiet: 100 * time.Millisecond, MinExcess: 16 * mb,
		MinGap: 10 * time.Millisecond, // a trim of other tests' garbage before the burst does not hold back the one after it
		Release: func() {
			debug.FreeOSMemory()
			trims.Add(1) // after: the test reads the heap once this is seen
		},
	})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- tr.Run(ctx) }()
	time.Sleep(100 * time.Millisecond) // its first reading is before the burst
	// The burst: 64 MiB kept live at once, then dropped.
	for range 64 {
		sink = append(sink, make([]byte, mb))
	}
	runtime.GC()
	sink = nil
	runtime.GC()
	var mid Sample
	read(&mid)
	if mid.Excess() < 32*mb {
		t.Fatalf("the burst left %d MiB beyond the live heap; the test needs it to leave more", mid.Excess()/mb)
	}
	// Only a trim after the burst counts: one before it (this process's
	// earlier garbage) released nothing of it.
	before0 := trims.Load()
	deadline := time.Now().Add(30 * time.Second)
	for trims.Load() == before0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if trims.Load() == before0 {
		t.Fatalf("no trim with %d MiB held beyond a live heap of %d", mid.Excess()/mb, mid.Live/mb)
	}
	var after Sample
	read(&after)
	free := func() uint64 {
		s := []metrics.Sample{{Name: "/memory/classes/heap/free:bytes"}}
		metrics.Read(s)
		return s[0].Value.Uint64()
	}
	if after.Excess() >= mid.Excess()/2 {
		t.Errorf("after the trim %d MiB beyond the live heap, was %d (free now %d MiB)", after.Excess()/mb, mid.Excess()/mb, free()/mb)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
