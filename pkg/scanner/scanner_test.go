package scanner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/diskd/diskd/pkg/blkid"
	"github.com/diskd/diskd/pkg/disk"
	"github.com/diskd/diskd/pkg/mountinfo"
	"github.com/diskd/diskd/pkg/store"
	"github.com/diskd/diskd/pkg/uevent"
)

// fakeBlkid serves a mutable device table and counts runs.
type fakeBlkid struct {
	mu      sync.Mutex
	devs    map[string]blkid.Record // by /dev path
	err     error
	full    atomic.Int64
	probes  atomic.Int64
	hold    chan struct{} // when set, ScanAll waits on it
	scanned chan struct{}
	// When late is set, ScanAll and Probe read the table, say so on read,
	// then wait on late before answering: blkid that has read the devices
	// but not yet printed.
	late chan struct{}
	read chan struct{}
	// When each run started (under mu): the storm tests count them per
	// second of synctest's clock.
	fullAt, probeAt []time.Time
	// A probe of stallDev waits on stall (a hung device).
	stallDev string
	stall    chan struct{}
}

// readLate makes the next runs read, report, and wait for the returned
// release function.
func (f *fakeBlkid) readLate() (read <-chan struct{}, release func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.late, f.read = make(chan struct{}), make(chan struct{}, 100)
	late := f.late
	return f.read, func() { close(late) }
}

// answerLate waits for the release when readLate is on; call it after
// reading, without f.mu held.
func (f *fakeBlkid) answerLate(late, read chan struct{}) {
	if late != nil {
		read <- struct{}{}
		<-late
	}
}

func newFake(names ...string) *fakeBlkid {
	f := &fakeBlkid{devs: map[string]blkid.Record{}, scanned: make(chan struct{}, 100)}
	for _, n := range names {
		f.set(n, "L-"+n)
	}
	return f
}

func (f *fakeBlkid) set(name, label string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.devs["/dev/"+name] = blkid.Record{Device: "/dev/" + name, Label: label, UUID: "u-" + name, Type: "ext4"}
}

func (f *fakeBlkid) del(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.devs, "/dev/"+name)
}

func (f *fakeBlkid) ScanAll(ctx context.Context) ([]blkid.Record, error) {
	f.full.Add(1)
	defer func() { f.scanned <- struct{}{} }()
	if f.hold != nil {
		<-f.hold
	}
	f.mu.Lock()
	f.fullAt = append(f.fullAt, time.Now())
	if f.err != nil {
		f.mu.Unlock()
		return nil, f.err
	}
	var out []blkid.Record
	for _, r := range f.devs {
		out = append(out, r)
	}
	late, read := f.late, f.read
	f.mu.Unlock()
	f.answerLate(late, read)
	return out, nil
}

func (f *fakeBlkid) Probe(ctx context.Context, dev string) (blkid.Record, bool, error) {
	f.probes.Add(1)
	f.mu.Lock()
	f.probeAt = append(f.probeAt, time.Now())
	if dev == f.stallDev {
		stall := f.stall
		f.mu.Unlock()
		<-stall
		f.mu.Lock()
	}
	if f.err != nil {
		f.mu.Unlock()
		return blkid.Record{}, false, f.err
	}
	r, ok := f.devs[dev]
	late, read := f.late, f.read
	f.mu.Unlock()
	f.answerLate(late, read)
	return r, ok, nil
}

type rig struct {
	st      *store.Store
	sc      *Scanner
	fake    *fakeBlkid
	uevents chan uevent.Event
	mounts  chan []mountinfo.Mount
	cancel  context.CancelFunc
	done    chan error
}

func start(t *testing.T, fake *fakeBlkid, cfg Config) *rig {
	t.Helper()
	r := &rig{
		st:      store.New(store.Options{Local: disk.Node{ID: "00000000000000000000000000000001", Name: "here"}}),
		fake:    fake,
		uevents: make(chan uevent.Event, 4096),
		mounts:  make(chan []mountinfo.Mount, 1),
		done:    make(chan error, 1),
	}
	cfg.Prober, cfg.Sink = fake, r.st
	if cfg.SysRoot == "" {
		cfg.SysRoot = t.TempDir()
	}
	r.sc = New(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.done <- r.sc.Run(ctx, r.uevents, r.mounts) }()
	t.Cleanup(func() {
		cancel()
		if err := <-r.done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return r
}

func (r *rig) names(present bool) []string {
	var out []string
	for _, d := range r.st.Disks(nil) {
		if d.Present == present {
			out = append(out, d.Name)
		}
	}
	slices.Sort(out)
	return out
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestEventsProbeOnlyTheirDevice(t *testing.T) {
	fake := newFake("loop0", "loop1")
	r := start(t, fake, Config{})
	<-r.sc.FirstScanDone()
	if got := r.names(true); !slices.Equal(got, []string{"loop0", "loop1"}) {
		t.Fatalf("after first scan: %v", got)
	}

	fake.set("loop2", "NEW")
	r.uevents <- uevent.Event{Action: "change", Name: "loop2"}
	waitFor(t, "loop2 listed", func() bool { return slices.Contains(r.names(true), "loop2") })

	fake.del("loop1")
	r.uevents <- uevent.Event{Action: "change", Name: "loop1"} // a loop detach is a change
	waitFor(t, "loop1 gone", func() bool { return slices.Equal(r.names(false), []string{"loop1"}) })

	probes := fake.probes.Load()
	r.uevents <- uevent.Event{Action: "remove", Name: "loop0"}
	waitFor(t, "loop0 gone", func() bool { return slices.Contains(r.names(false), "loop0") })
	if fake.probes.Load() != probes {
		t.Errorf("a remove event ran blkid")
	}
	if n := fake.full.Load(); n != 1 {
		t.Errorf("full scans = %d, want only the first one", n)
	}
	if got := r.sc.Status(); got.DeviceProbes != 2 || got.Uevents != 3 {
		t.Errorf("status counters = %+v", got)
	}
}

// TestBurstCoalescesIntoFewFullScans runs on synctest's clock: the quiet
// period after the burst passes at once, and synctest.Wait says when the
// scanner has nothing left to do.
func TestBurstCoalescesIntoFewFullScans(t *testing.T) {
	synctest.Test(t, testBurstCoalescesIntoFewFullScans)
}

func testBurstCoalescesIntoFewFullScans(t *testing.T) {
	names := make([]string, 1000)
	for i := range names {
		names[i] = fmt.Sprintf("loop%d", i)
	}
	fake := newFake()
	r := start(t, fake, Config{})
	<-r.sc.FirstScanDone()
	for _, n := range names {
		fake.set(n, "B")
	}
	before := fake.full.Load()
	for _, n := range names {
		r.uevents <- uevent.Event{Action: "change", Name: n}
	}
	// Quiet for longer than the gap: nothing else may be pending.
	time.Sleep(1500 * time.Millisecond)
	synctest.Wait()
	if got := len(r.names(true)); got != 1000 {
		t.Fatalf("%d of 1000 listed after the burst", got)
	}
	if got := fake.full.Load() - before; got > 2 {
		t.Errorf("1000 uevents caused %d full scans, want at most 2", got)
	}
	// Until the gap after the first scan is over, the oldest devices are
	// probed in jobs of MaxProbeBatch, but never more than the bucket holds.
	if got := fake.probes.Load(); got > 64 {
		t.Errorf("1000 uevents caused %d single probes, over the budget of 64", got)
	}
}

func TestFailingBlkidKeepsLastGoodInventory(t *testing.T) {
	fake := newFake("loop0")
	r := start(t, fake, Config{MinFullGap: time.Millisecond})
	<-r.sc.FirstScanDone()
	fake.mu.Lock()
	fake.err = fmt.Errorf("blkid: %w", blkid.ErrTimeout)
	fake.mu.Unlock()
	if err := r.sc.Refresh(context.Background()); !errors.Is(err, blkid.ErrTimeout) {
		t.Fatalf("Refresh = %v, want the timeout", err)
	}
	if got := r.names(true); !slices.Equal(got, []string{"loop0"}) {
		t.Errorf("inventory after failed scan = %v, want the last good one", got)
	}
	if st := r.sc.Status(); st.LastError == "" || st.FullScans != 2 {
		t.Errorf("status = %+v, want the error recorded", st)
	}
	fake.mu.Lock()
	fake.err = nil
	fake.mu.Unlock()
	if err := r.sc.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := r.sc.Status(); st.LastError != "" {
		t.Errorf("error not cleared after a good scan: %q", st.LastError)
	}
}

func TestFirstScanFailureDoesNotEraseLoadedState(t *testing.T) {
	fake := newFake()
	fake.err = errors.New("exec: blkid: not found")
	st := store.New(store.Options{Local: disk.Node{ID: "00000000000000000000000000000001", Name: "here"}})
	st.SetLocal([]disk.Disk{{Name: "sda1", Device: "/dev/sda1", Label: "KEPT"}}) // as if loaded
	sc := New(Config{Prober: fake, Sink: st, SysRoot: t.TempDir()})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- sc.Run(ctx, nil, nil) }()
	<-sc.FirstScanDone()
	cancel()
	<-done
	if w := st.Where("KEPT"); len(w) != 1 || !w[0].Present {
		t.Errorf("loaded inventory after failed first scan = %+v", w)
	}
}

func TestMountChangesNeedNoBlkid(t *testing.T) {
	fake := newFake("loop0")
	sys := t.TempDir()
	dir := filepath.Join(sys, "class", "block", "loop0")
	os.MkdirAll(dir, 0o755)
	for f, v := range map[string]string{"dev": "7:250\n", "size": "2048\n", "ro": "0\n", "removable": "0\n"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	r := start(t, fake, Config{SysRoot: sys})
	<-r.sc.FirstScanDone()
	full, probes := fake.full.Load(), fake.probes.Load()
	r.mounts <- []mountinfo.Mount{{MajMin: "7:250", MountPoint: "/mnt/x"}, {MajMin: "8:1", MountPoint: "/"}}
	waitFor(t, "mount point", func() bool {
		w := r.st.Where("L-loop0")
		return len(w) == 1 && slices.Equal(w[0].Mounts, []string{"/mnt/x"})
	})
	if w := r.st.Where("L-loop0"); w[0].Size != 2048*512 || w[0].MajMin != "7:250" {
		t.Errorf("sysfs facts not composed: %+v", w[0])
	}
	if fake.full.Load() != full || fake.probes.Load() != probes {
		t.Errorf("a mount change ran blkid")
	}
}

func TestFilter(t *testing.T) { synctest.Test(t, testFilter) }

func testFilter(t *testing.T) {
	fake := newFake("loop0", "loop1", "sda1")
	r := start(t, fake, Config{Filter: disk.Filter{Include: []string{"/dev/loop*"}, Exclude: []string{"/dev/loop1"}}})
	<-r.sc.FirstScanDone()
	if got := r.names(true); !slices.Equal(got, []string{"loop0"}) {
		t.Errorf("filtered inventory = %v", got)
	}
	r.uevents <- uevent.Event{Action: "change", Name: "sda1"}
	r.uevents <- uevent.Event{Action: "change", Name: "loop0"}
	// Every event handled, every timer they set run out.
	time.Sleep(time.Second)
	synctest.Wait()
	if got := fake.probes.Load(); got != 1 {
		t.Errorf("probes = %d: a filtered-out device was probed", got)
	}
}

// TestStormIsBounded: a udev storm (an event every millisecond for three
// seconds) on a flapping device, on 4 devices and on 100, runs at most
// 2 x ProbeBudget single probes in any second (the bucket's burst and its
// refill), ProbeBudget a second over the whole storm, and at most one full
// scan per MinFullGap (2 in any second), and still ends with every
// device's last state.
func TestStormIsBounded(t *testing.T) {
	for _, devs := range []int{1, 4, 100} {
		t.Run(fmt.Sprintf("%d devices", devs), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) { testStormIsBounded(t, devs) })
		})
	}
}

func testStormIsBounded(t *testing.T, devs int) {
	const budget, storm = 16, 3 * time.Second
	fake := newFake()
	r := start(t, fake, Config{ProbeBudget: budget})
	<-r.sc.FirstScanDone()
	t0 := time.Now()
	for i := 0; time.Since(t0) < storm; i++ {
		name := fmt.Sprintf("loop%d", i%devs)
		fake.set(name, fmt.Sprintf("L%d", i))
		r.uevents <- uevent.Event{Action: "change", Name: name}
		time.Sleep(time.Millisecond)
	}
	last := make(map[string]string)
	fake.mu.Lock()
	for dev, rec := range fake.devs {
		last[strings.TrimPrefix(dev, "/dev/")] = rec.Label
	}
	fake.mu.Unlock()
	time.Sleep(1500 * time.Millisecond)
	synctest.Wait()
	for _, d := range r.st.Disks(nil) {
		if d.Present && d.Label != last[d.Name] {
			t.Errorf("%s listed as %q after the storm, last set %q", d.Name, d.Label, last[d.Name])
		}
	}
	if got := len(r.names(true)); got != devs {
		t.Errorf("%d of %d devices listed after the storm", got, devs)
	}
	fake.mu.Lock()
	probeAt, fullAt := fake.probeAt, fake.fullAt[1:] // the first scan is not the storm's
	fake.mu.Unlock()
	if worst := busiestSecond(probeAt); worst > 2*budget {
		t.Errorf("%d single probes in one second, want at most 2 x %d", worst, budget)
	}
	if worst := busiestSecond(fullAt); worst > 2 {
		t.Errorf("%d full scans in one second, want at most 2", worst)
	}
	secs := int(storm/time.Second) + 2 // the storm and the quiet after it
	if n := len(probeAt); n > budget*(secs+1) {
		t.Errorf("%d single probes in %d s, want at most %d", n, secs, budget*(secs+1))
	}
	if n := len(fullAt); n > secs {
		t.Errorf("%d full scans in %d s, want at most %d", n, secs, secs)
	}
	t.Logf("%d devices: %d probes (busiest second %d), %d full scans", devs, len(probeAt), busiestSecond(probeAt), len(fullAt))
}

// busiestSecond returns the most of ts (in order) within any one second.
func busiestSecond(ts []time.Time) int {
	worst, lo := 0, 0
	for hi := range ts {
		for ts[hi].Sub(ts[lo]) >= time.Second {
			lo++
		}
		worst = max(worst, hi-lo+1)
	}
	return worst
}

// TestBurstOfChangesIsProbedAtOnce: 100 changes 20 ms apart on 10 devices
// (an attach is one uevent, a loop detach two at once) are each probed
// when they happen, none folded into a later scan: the bucket holds such
// a burst.
func TestBurstOfChangesIsProbedAtOnce(t *testing.T) {
	synctest.Test(t, testBurstOfChangesIsProbedAtOnce)
}

func testBurstOfChangesIsProbedAtOnce(t *testing.T) {
	fake := newFake()
	r := start(t, fake, Config{})
	<-r.sc.FirstScanDone()
	full := fake.full.Load()
	attached := make([]bool, 10)
	for i := range 100 {
		d := i % 10
		name := fmt.Sprintf("loop%d", d)
		attached[d] = !attached[d]
		if attached[d] {
			fake.set(name, "BURST")
			r.uevents <- uevent.Event{Action: "change", Name: name}
		} else {
			fake.del(name)
			r.uevents <- uevent.Event{Action: "change", Name: name}
			r.uevents <- uevent.Event{Action: "change", Name: name, Env: map[string]string{"DISK_MEDIA_CHANGE": "1"}}
		}
		synctest.Wait() // no time passes: the change must be listed now
		if got := slices.Contains(r.names(true), name); got != attached[d] {
			t.Fatalf("change %d: %s listed = %v right after its event, want %v", i, name, got, attached[d])
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := fake.full.Load() - full; n != 0 {
		t.Errorf("%d full scans during the burst, want none", n)
	}
}

// TestHungProbeDoesNotHoldOthers: while blkid hangs on one device, an
// event for another is probed beside it, and the hung device's probe
// lands once blkid answers.
func TestHungProbeDoesNotHoldOthers(t *testing.T) { synctest.Test(t, testHungProbeDoesNotHoldOthers) }

func testHungProbeDoesNotHoldOthers(t *testing.T) {
	fake := newFake()
	r := start(t, fake, Config{})
	<-r.sc.FirstScanDone()
	fake.mu.Lock()
	fake.stallDev, fake.stall = "/dev/loop0", make(chan struct{})
	fake.mu.Unlock()
	fake.set("loop0", "SLOW")
	r.uevents <- uevent.Event{Action: "change", Name: "loop0"}
	synctest.Wait()
	fake.set("loop1", "FAST")
	r.uevents <- uevent.Event{Action: "change", Name: "loop1"}
	synctest.Wait()
	if got := r.names(true); !slices.Equal(got, []string{"loop1"}) {
		t.Fatalf("listed %v while loop0's probe hangs, want [loop1]", got)
	}
	close(fake.stall)
	synctest.Wait()
	if got := r.names(true); !slices.Equal(got, []string{"loop0", "loop1"}) {
		t.Fatalf("listed %v once loop0's probe answered", got)
	}
}

// TestEventsWinOverEarlierScans: a device that had an event while a full
// scan or a probe was running keeps what the event said, not what blkid
// read before it.
func TestEventsWinOverEarlierScans(t *testing.T) {
	for _, tc := range []struct {
		name string
		full bool // a full scan is running, else a probe of the partition
	}{
		{"removed during a full scan", true},
		{"removed during a probe", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake := newFake("loop0", "loop1", "loop1p1")
			r := start(t, fake, Config{MinFullGap: time.Millisecond})
			<-r.sc.FirstScanDone()
			read, release := fake.readLate()
			refreshed := make(chan error, 1)
			if tc.full {
				go func() { refreshed <- r.sc.Refresh(context.Background()) }()
			} else {
				// A probe of the partition (a change event) is in flight.
				r.uevents <- uevent.Event{Action: "change", Name: "loop1p1"}
			}
			<-read
			fake.del("loop1p1")
			r.uevents <- uevent.Event{Action: "remove", Name: "loop1p1"}
			waitFor(t, "the event applied", func() bool { return slices.Contains(r.names(false), "loop1p1") })
			full, probes := fake.full.Load(), fake.probes.Load()
			release()
			if tc.full {
				if err := <-refreshed; err != nil {
					t.Fatal(err)
				}
			} else {
				waitFor(t, "the probe to finish", func() bool { return r.sc.Status().DeviceProbes == 1 })
			}
			if got, want := r.names(true), []string{"loop0", "loop1"}; !slices.Equal(got, want) {
				t.Errorf("present after the scan = %v, want %v", got, want)
			}
			if fake.full.Load() != full || fake.probes.Load() != probes {
				t.Errorf("blkid ran again: the stale answer was not what decided")
			}
		})
	}
}

// TestMerge: which of a finished job's findings are applied.
func TestMerge(t *testing.T) {
	dev := func(label string) device { return device{rec: blkid.Record{Label: label}} }
	pd := func(label string) *device { d := dev(label); return &d }
	for _, tc := range []struct {
		name   string
		before map[string]device
		r      result
		newer  []string
		after  map[string]string // name -> label
		stale  []string
	}{
		{"full scan replaces all", map[string]device{"a": dev("A"), "b": dev("B")},
			result{job: job{full: true}, full: map[string]device{"a": dev("A2"), "c": dev("C")}},
			nil, map[string]string{"a": "A2", "c": "C"}, nil},
		{"full scan: a device removed during it stays removed", map[string]device{"a": dev("A")},
			result{job: job{full: true}, full: map[string]device{"a": dev("A"), "b": dev("B")}},
			[]string{"b"}, map[string]string{"a": "A"}, []string{"b"}},
		{"full scan: a device changed during it keeps its state until probed", map[string]device{"a": dev("A"), "b": dev("B")},
			result{job: job{full: true}, full: map[string]device{"a": dev("A2")}},
			[]string{"a", "b"}, map[string]string{"a": "A", "b": "B"}, []string{"a", "b"}},
		{"full scan that failed changes nothing", map[string]device{"a": dev("A")},
			result{job: job{full: true}, err: errors.New("boom")},
			nil, map[string]string{"a": "A"}, nil},
		{"probe: found and gone", map[string]device{"a": dev("A"), "b": dev("B")},
			result{job: job{names: []string{"a", "b"}}, probed: map[string]*device{"a": pd("A2"), "b": nil}},
			nil, map[string]string{"a": "A2"}, nil},
		{"probe: a device with a newer event keeps its state", map[string]device{"b": dev("B")},
			result{job: job{names: []string{"a", "b"}}, probed: map[string]*device{"a": pd("A"), "b": nil}},
			[]string{"a", "b"}, map[string]string{"b": "B"}, []string{"a", "b"}},
		{"events for devices the job did not read change nothing", map[string]device{"a": dev("A")},
			result{job: job{names: []string{"a"}}, probed: map[string]*device{"a": pd("A2")}},
			[]string{"z"}, map[string]string{"a": "A2"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			devices := maps.Clone(tc.before)
			newer := map[string]bool{}
			for _, n := range tc.newer {
				newer[n] = true
			}
			stale := merge(devices, tc.r, newer)
			got := map[string]string{}
			for n, d := range devices {
				got[n] = d.rec.Label
			}
			if !maps.Equal(got, tc.after) {
				t.Errorf("devices = %v, want %v", got, tc.after)
			}
			if !slices.Equal(stale, tc.stale) {
				t.Errorf("stale = %v, want %v", stale, tc.stale)
			}
		})
	}
}

// TestChangingErrorsAreLoggedOncePerMinute: a device's content shapes what
// blkid says, so 20 failed scans with 20 different messages give one log
// line, not 20; the line when blkid works again counts the rest.
func TestChangingErrorsAreLoggedOncePerMinute(t *testing.T) {
	var buf strings.Builder
	var mu sync.Mutex
	log := slog.New(slog.NewTextHandler(lockedWriter{&mu, &buf}, nil))
	fake := newFake("loop0")
	r := start(t, fake, Config{MinFullGap: time.Millisecond, Logger: log})
	<-r.sc.FirstScanDone()
	for i := range 20 {
		fake.mu.Lock()
		fake.err = fmt.Errorf("blkid export line 1: not KEY=value: %q", strings.Repeat("x", i))
		fake.mu.Unlock()
		if err := r.sc.Refresh(context.Background()); err == nil {
			t.Fatal("refresh succeeded")
		}
	}
	fake.mu.Lock()
	fake.err = nil
	fake.mu.Unlock()
	if err := r.sc.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	out := buf.String()
	mu.Unlock()
	if n := strings.Count(out, "scan failed"); n != 1 {
		t.Errorf("%d scan-failed lines for 20 distinct errors, want 1:\n%s", n, out)
	}
	if !strings.Contains(out, "blkid works again") || !strings.Contains(out, "suppressed_errors=19") {
		t.Errorf("recovery line does not count the suppressed errors:\n%s", out)
	}
}

// TestAliveAnswersThroughTheLoop: Alive returns once the event loop ran,
// and times out while the loop is busy elsewhere.
func TestAliveAnswersThroughTheLoop(t *testing.T) {
	r := start(t, newFake("loop0"), Config{})
	<-r.sc.FirstScanDone()
	if err := r.sc.Alive(context.Background()); err != nil {
		t.Fatal(err)
	}
	release, blocked := make(chan struct{}), make(chan struct{})
	go r.sc.onLoop(context.Background(), func() { close(blocked); <-release })
	<-blocked
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := r.sc.Alive(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Alive with the loop blocked = %v, want the deadline", err)
	}
	close(release)
	if err := r.sc.Alive(context.Background()); err != nil {
		t.Errorf("Alive after the loop is free again = %v", err)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
