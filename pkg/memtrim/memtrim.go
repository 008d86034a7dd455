// Package memtrim returns to the system the heap a burst of work left
// behind, once the process has been quiet for a moment.
//
// Go's runtime keeps the heap it grew for a burst (loading 100,000 rows,
// lists filtered over them, a desktop reading every object on the bus):
// the garbage collector frees the objects, but its background scavenger
// gives the free pages back only down to about 110% of the next
// collection's goal, which is twice the live heap at the default GOGC. A
// daemon that holds 40 MiB of live data could therefore stay near 90 MiB
// at rest after one such burst. The Trimmer watches the runtime's
// own figures (runtime/metrics) and, when the heap held beyond the live
// data has grown by more than a threshold since it was last this small,
// and no more than a trickle has been allocated for a while, calls
// debug.FreeOSMemory once: one forced collection, then every free page
// returned. It never trims more than once per MinGap, so at worst it
// costs one collection of the live heap per MinGap; at rest it costs one
// read of a few counters per Every.
//
// Alternatives measured against it (100,000 disks, 20 lists, before whole
// lists stopped allocating; see the README): a lower GOGC shrinks the heap during bursts as well as after
// them but keeps what a burst grew all the same, and a memory limit near
// the live heap doubles the CPU of each list (the collector runs
// continuously near the limit) and must follow the live heap as it grows.
package memtrim

import (
	"context"
	"log/slog"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// Sample is what the policy reads of the runtime.
type Sample struct {
	// Live is the heap the last collection found reachable
	// (/gc/heap/live:bytes).
	Live uint64
	// Held is the heap memory taken from the system and not returned:
	// objects, free slots in used spans, and free spans
	// (/memory/classes/heap/{objects,unused,free}:bytes).
	Held uint64
	// Allocs is the heap allocated since the process started
	// (/gc/heap/allocs:bytes); its rate tells a burst from rest.
	Allocs uint64
}

// Excess is the held heap beyond the live heap: what a collection and a
// release could give back (less what fragmentation keeps).
func (s Sample) Excess() uint64 {
	if s.Held < s.Live {
		return 0
	}
	return s.Held - s.Live
}

// Config holds the policy's parameters and its dependencies.
type Config struct {
	// Every is how often the runtime's figures are read.
	Every time.Duration
	// Quiet is how long allocation must stay at or below QuietRate before
	// a trim: a burst is over, not paused between two requests.
	Quiet time.Duration
	// QuietRate is the allocation rate, in bytes a second, of a process
	// at rest.
	QuietRate uint64
	// MinExcess and Fraction: a trim is worth it when the excess has
	// grown by more than MinExcess bytes, or Fraction of the live heap if
	// that is more, over the smallest excess seen since the last trim.
	MinExcess uint64
	Fraction  float64
	// MinGap is the least time between two trims: each costs a full
	// collection of the live heap.
	MinGap time.Duration
	// Read fills a Sample; nil reads runtime/metrics.
	Read func(*Sample)
	// Release returns the free heap to the system; nil is
	// debug.FreeOSMemory.
	Release func()
	Logger  *slog.Logger
}

// Defaults are the daemon's parameters: reads once a second, trims 3 s
// after the last burst when the excess grew by 8 MiB or a quarter of the
// live heap, at most once every 30 s.
func Defaults() Config {
	return Config{
		Every:     time.Second,
		Quiet:     3 * time.Second,
		QuietRate: 1 << 20,
		MinExcess: 8 << 20,
		Fraction:  0.25,
		MinGap:    30 * time.Second,
	}
}

// Trimmer runs the policy; see the package doc.
type Trimmer struct {
	cfg    Config
	policy policy
	trims  uint64
}

// New returns a Trimmer with cfg's parameters; zero fields take Defaults'.
func New(cfg Config) *Trimmer {
	d := Defaults()
	if cfg.Every <= 0 {
		cfg.Every = d.Every
	}
	if cfg.Quiet <= 0 {
		cfg.Quiet = d.Quiet
	}
	if cfg.QuietRate == 0 {
		cfg.QuietRate = d.QuietRate
	}
	if cfg.MinExcess == 0 {
		cfg.MinExcess = d.MinExcess
	}
	if cfg.Fraction <= 0 {
		cfg.Fraction = d.Fraction
	}
	if cfg.MinGap <= 0 {
		cfg.MinGap = d.MinGap
	}
	if cfg.Read == nil {
		cfg.Read = newRuntimeReader()
	}
	if cfg.Release == nil {
		cfg.Release = debug.FreeOSMemory
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Trimmer{cfg: cfg, policy: policy{cfg: cfg}}
}

// Run reads the runtime's figures every cfg.Every and trims when the
// policy says so, until ctx ends (then it returns nil).
func (t *Trimmer) Run(ctx context.Context) error {
	tick := time.NewTicker(t.cfg.Every)
	defer tick.Stop()
	var s Sample
	t.cfg.Read(&s)
	t.policy.observe(time.Now(), s)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		t.cfg.Read(&s)
		now := time.Now()
		if !t.policy.observe(now, s) {
			continue
		}
		before := s
		t0 := time.Now()
		t.cfg.Release()
		took := time.Since(t0)
		t.cfg.Read(&s)
		t.policy.trimmed(time.Now(), s)
		t.trims++
		t.cfg.Logger.Debug("returned the heap a burst left to the system",
			"live_mib", mib(s.Live), "held_mib_before", mib(before.Held), "held_mib_after", mib(s.Held),
			"took", took.Round(time.Microsecond), "trims", t.trims)
	}
}

func mib(b uint64) float64 { return float64(b*100>>20) / 100 }

// policy is the decision, apart from clocks and the runtime so that a
// test drives it with made-up samples.
type policy struct {
	cfg      Config
	started  bool
	prev     Sample
	prevAt   time.Time
	busyAt   time.Time // the last reading that saw a burst's allocation rate
	lastTrim time.Time
	floor    uint64 // the smallest excess since the last trim (or the start)
}

// observe takes a reading at now and says whether to trim.
func (p *policy) observe(now time.Time, s Sample) bool {
	if !p.started {
		p.started = true
		p.prev, p.prevAt, p.floor = s, now, s.Excess()
		p.busyAt = now // not known to be quiet before the first interval
		return false
	}
	if dt := now.Sub(p.prevAt); dt > 0 && s.Allocs >= p.prev.Allocs {
		if float64(s.Allocs-p.prev.Allocs) > float64(p.cfg.QuietRate)*dt.Seconds() {
			p.busyAt = now
		}
	}
	p.prev, p.prevAt = s, now
	ex := s.Excess()
	p.floor = min(p.floor, ex)
	threshold := max(p.cfg.MinExcess, uint64(p.cfg.Fraction*float64(s.Live)))
	return ex > p.floor+threshold &&
		now.Sub(p.busyAt) >= p.cfg.Quiet &&
		(p.lastTrim.IsZero() || now.Sub(p.lastTrim) >= p.cfg.MinGap)
}

// trimmed records a trim ended at now, s read right after it: what a
// trim leaves (fragmentation) is the new floor, so that heap it could not
// return does not call for another trim.
func (p *policy) trimmed(now time.Time, s Sample) {
	p.lastTrim = now
	p.floor = s.Excess()
	p.prev, p.prevAt = s, now
}

// newRuntimeReader returns a Read over runtime/metrics that allocates
// nothing per call.
func newRuntimeReader() func(*Sample) {
	samples := []metrics.Sample{
		{Name: "/gc/heap/live:bytes"},
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/heap/unused:bytes"},
		{Name: "/memory/classes/heap/free:bytes"},
		{Name: "/gc/heap/allocs:bytes"},
	}
	return func(s *Sample) {
		metrics.Read(samples)
		v := func(i int) uint64 {
			if samples[i].Value.Kind() != metrics.KindUint64 {
				return 0 // unknown to this runtime: reads as nothing held
			}
			return samples[i].Value.Uint64()
		}
		*s = Sample{Live: v(0), Held: v(1) + v(2) + v(3), Allocs: v(4)}
	}
}
