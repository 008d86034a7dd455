// Package scanner keeps the store's local inventory true: it decides what
// to probe when. Kernel uevents probe just the device they name (a remove
// drops it without running blkid); events for a device already waiting for
// its probe fold into that one probe; single-device probes draw on a token
// bucket (ProbeBudget a second, with a burst of as many), and once it is
// empty the devices still waiting are covered by a full scan, at most one
// per MinFullGap. Mount-table changes update mount points without blkid,
// and a periodic full scan catches anything events missed. blkid runs
// on worker goroutines (two probe jobs at once, a full scan alone), so a
// hanging blkid never stops the scanner from hearing events, and while one
// hangs the other worker goes on probing; a failing one leaves the last
// good inventory. An event wins over a scan or probe that started before
// it: what blkid read of that device is set aside, so a device removed
// during a slow full scan is not brought back by the scan's result.
package scanner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/diskd/diskd/pkg/blkid"
	"github.com/diskd/diskd/pkg/disk"
	"github.com/diskd/diskd/pkg/mountinfo"
	"github.com/diskd/diskd/pkg/sysfs"
	"github.com/diskd/diskd/pkg/uevent"
)

// Prober runs blkid; *blkid.Runner is the real one.
type Prober interface {
	ScanAll(ctx context.Context) ([]blkid.Record, error)
	Probe(ctx context.Context, dev string) (rec blkid.Record, found bool, err error)
}

// Sink receives the composed local inventory; *store.Store is the real one.
type Sink interface {
	SetLocal(disks []disk.Disk)
}

// Config configures a Scanner.
type Config struct {
	Prober  Prober
	Sink    Sink
	SysRoot string        // "/sys" unless testing
	Filter  disk.Filter   // which device paths this node reports
	Every   time.Duration // periodic full scan; 0 means 5 minutes
	// MinFullGap is the least time between the starts of two full scans;
	// bursts and refreshes wait for it. 0 means one second.
	MinFullGap time.Duration
	// MaxProbeBatch: the most devices one probe job holds; devices that
	// wait beyond it go in the next job, oldest event first. 0 means 8.
	MaxProbeBatch int
	// ProbeBudget: single-device probes a second, as a token bucket that
	// holds as many (a burst of changes runs at once; a flapping device or
	// a udev storm runs at most 2 x ProbeBudget probes in its first second
	// and ProbeBudget a second after). Once the bucket is empty, the
	// devices still waiting are covered by a full scan when MinFullGap
	// allows, or wait for a token. 0 means 64.
	ProbeBudget  int
	BlkidPath    string        // for status only
	BlkidTimeout time.Duration // for status only
	Logger       *slog.Logger
}

// Scanner composes blkid, sysfs and the mount table into disks.
type Scanner struct {
	cfg Config
	log *slog.Logger

	refreshC  chan chan error
	callC     chan func() // run on the event loop (Alive)
	firstDone chan struct{}

	mu     sync.Mutex // guards status, read by Status from other goroutines
	status Status
	// Error lines: what a device's content makes blkid say is not ours to
	// choose, so a new message is logged at most once per errorLogEvery
	// while errors go on (the rest counted), not once per message.
	lastErrLog    time.Time
	errSuppressed int
}

// New returns a Scanner; Run starts it.
func New(cfg Config) *Scanner {
	if cfg.SysRoot == "" {
		cfg.SysRoot = "/sys"
	}
	if cfg.Every <= 0 {
		cfg.Every = 5 * time.Minute
	}
	if cfg.MinFullGap <= 0 {
		cfg.MinFullGap = time.Second
	}
	if cfg.MaxProbeBatch <= 0 {
		cfg.MaxProbeBatch = 8
	}
	if cfg.ProbeBudget <= 0 {
		cfg.ProbeBudget = 64
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Scanner{
		cfg:       cfg,
		log:       cfg.Logger,
		refreshC:  make(chan chan error),
		callC:     make(chan func()),
		firstDone: make(chan struct{}),
		status: Status{
			Blkid:        cfg.BlkidPath,
			BlkidTimeout: cfg.BlkidTimeout,
		},
	}
}

// FirstScanDone is closed when the first full scan has finished or failed.
func (s *Scanner) FirstScanDone() <-chan struct{} { return s.firstDone }

// Refresh runs a full scan (or joins one about to run) and returns its
// error. Calls closer together than MinFullGap share scans, which is what
// rate-limits the socket's and D-Bus's refresh.
func (s *Scanner) Refresh(ctx context.Context) error {
	reply := make(chan error, 1)
	select {
	case s.refreshC <- reply:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Alive returns nil once the event loop has answered: a cheap liveness
// probe for the service manager's watchdog. It runs no blkid (that runs
// off the loop, under its own timeout).
func (s *Scanner) Alive(ctx context.Context) error {
	return s.onLoop(ctx, func() {})
}

// onLoop runs fn on the event loop and waits for it.
func (s *Scanner) onLoop(ctx context.Context, fn func()) error {
	done := make(chan struct{})
	select {
	case s.callC <- func() { fn(); close(done) }:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Status is the local inventory's freshness: the last scan, the last
// error, and the scanner's counters.
type Status struct {
	LastScan      time.Time     // when the last full scan started
	LastDuration  time.Duration // how long it took
	LastError     string        // "" once blkid works again
	LastErrorTime time.Time
	FullScans     uint64
	DeviceProbes  uint64 // devices probed one by one
	Uevents       uint64
	MountUpdates  uint64
	Blkid         string // the blkid program run
	BlkidTimeout  time.Duration
	UeventsActive bool // the uevent source is running
}

// Status reports the last scan and the scanner's counters.
func (s *Scanner) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status
}

// device is what the scanner knows of one device.
type device struct {
	rec blkid.Record
	sys sysfs.Info
}

// job is work for a blkid worker: a full scan, or probes of some devices.
type job struct {
	id    uint64
	full  bool
	names []string
}

// maxDrain is how many queued uevents the loop takes at once before it
// hands out work and answers its other inputs again.
const maxDrain = 256

// probeWorkers is how many probe jobs run at once: an event that comes
// while one blkid runs (a slow device, a loaded host) is probed beside it
// rather than after it. A full scan runs alone.
const probeWorkers = 2

type result struct {
	job     job
	full    map[string]device // full scan: every device found
	probed  map[string]*device
	err     error
	started time.Time
	took    time.Duration
}

// Run scans until ctx ends. uevents and mounts may be nil (that source is
// then off); each mounts value is the whole table.
func (s *Scanner) Run(ctx context.Context, uevents <-chan uevent.Event, mounts <-chan []mountinfo.Mount) error {
	jobs := make(chan job)
	results := make(chan result)
	var wg sync.WaitGroup
	for range probeWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.worker(ctx, jobs, results)
		}()
	}
	defer wg.Wait()

	var (
		devices  = make(map[string]device)
		mountsBy = map[string][]string{}
		// Device names with events not yet probed, each with the sequence
		// number of its first such event: probes go oldest first, so a
		// storm on some devices cannot starve the others.
		pending    = make(map[string]uint64)
		seq        uint64
		fullWanted = true       // the first scan
		waiters    []chan error // Refresh callers waiting for the next full scan
		inflight   int          // jobs handed to the workers and not yet merged
		fullBusy   bool         // one of them is a full scan
		jobID      uint64
		lastFull   time.Time
		gapTimer   *time.Timer
		gapC       <-chan time.Time
		tokTimer   *time.Timer
		tokC       <-chan time.Time
		tokens     = newBucket(s.cfg.ProbeBudget, time.Now())
		// By job in flight: the devices that had an event since it was
		// handed to a worker; what it read of them may predate the event.
		newer = make(map[uint64]map[string]bool)
		first = true
		// Nothing is published before the first successful full scan: until
		// then the store serves the inventory loaded from the state file.
		baseline bool
	)
	ticker := time.NewTicker(s.cfg.Every)
	defer ticker.Stop()
	publish := func() {
		if baseline {
			s.cfg.Sink.SetLocal(s.compose(devices, mountsBy))
		}
	}
	armGap := func(wait time.Duration) {
		if gapC == nil {
			gapTimer = time.NewTimer(wait)
			gapC = gapTimer.C
		}
	}

	// dispatch hands the next job to a worker, if one is due and may run,
	// and reports whether it did.
	dispatch := func() bool {
		if fullBusy || inflight == probeWorkers {
			return false
		}
		now := time.Now()
		gapWait := time.Duration(0)
		if !lastFull.IsZero() {
			gapWait = s.cfg.MinFullGap - now.Sub(lastFull)
		}
		// Waiting devices are shared among the free workers.
		free := probeWorkers - inflight
		n := min((len(pending)+free-1)/free, s.cfg.MaxProbeBatch, tokens.available(now))
		if !fullWanted && len(pending) > 0 && gapWait <= 0 && (len(pending) > s.cfg.MaxProbeBatch || n == 0) {
			// More devices than a probe job holds, or the budget spent (a
			// flapping device, a udev storm): one full scan covers them all.
			fullWanted = true
		}
		var j job
		switch {
		case fullWanted:
			if gapWait > 0 {
				armGap(gapWait)
				return false
			}
			if inflight > 0 {
				return false // a full scan runs alone; the probes end soon
			}
			j = job{full: true}
			lastFull = now
			fullWanted = false
			clear(pending)
		case n > 0:
			j.names = oldest(pending, n)
			for _, name := range j.names {
				delete(pending, name)
			}
			tokens.take(n)
		case len(pending) > 0:
			// The budget is spent and the gap not yet over: the next full
			// scan covers what waits, unless a token comes first for a
			// batch small enough to probe.
			armGap(gapWait)
			if tokC == nil && len(pending) <= s.cfg.MaxProbeBatch {
				tokTimer = time.NewTimer(tokens.wait(now))
				tokC = tokTimer.C
			}
			return false
		default:
			return false
		}
		jobID++
		j.id = jobID
		inflight++
		fullBusy = j.full
		newer[j.id] = make(map[string]bool)
		select {
		case jobs <- j:
			return true
		case <-ctx.Done():
			return false
		}
	}

	// event handles one uevent on the loop.
	event := func(ev uevent.Event) {
		s.countUevent()
		if ev.Name == "" || !s.cfg.Filter.Allows("/dev/"+ev.Name) {
			return
		}
		for _, m := range newer {
			m[ev.Name] = true
		}
		if ev.Action == "remove" {
			if _, ok := devices[ev.Name]; ok {
				delete(devices, ev.Name)
				publish()
			}
			delete(pending, ev.Name)
			return
		}
		if _, ok := pending[ev.Name]; !ok {
			seq++
			pending[ev.Name] = seq
		}
	}

	for {
		for dispatch() {
		}
		select {
		case <-ctx.Done():
			for _, w := range waiters {
				w <- ctx.Err()
			}
			for _, t := range []*time.Timer{gapTimer, tokTimer} {
				if t != nil {
					t.Stop()
				}
			}
			return nil
		case r := <-results:
			inflight--
			fullBusy = fullBusy && !r.job.full
			if r.job.full && r.err == nil {
				baseline = true
			}
			stale := merge(devices, r, newer[r.job.id])
			delete(newer, r.job.id)
			if len(stale) > 0 {
				s.log.Debug("kept newer events over a scan's result", "devices", stale, "full", r.job.full)
			}
			publish()
			// Status and waiters learn of the scan once its result is
			// published, so a refreshed client reads it.
			if !r.job.full {
				s.finishProbes(r)
			} else {
				s.finishFull(r)
				for _, w := range waiters {
					w <- r.err
				}
				waiters = nil
				if first {
					first = false
					close(s.firstDone)
				}
			}
		case ev, ok := <-uevents:
			if !ok {
				uevents = nil
				s.log.Warn("uevent source ended; relying on periodic scans")
				continue
			}
			event(ev)
			// Take the events already queued before probing: a detach
			// sends two changes at once, and both fold into one probe. At
			// most maxDrain, so that a flood cannot hold the loop.
			for i, drained := 0, false; !drained && i < maxDrain; i++ {
				select {
				case ev, ok := <-uevents:
					if !ok {
						drained = true
						break
					}
					event(ev)
				default:
					drained = true
				}
			}
		case ms, ok := <-mounts:
			if !ok {
				mounts = nil
				continue
			}
			by := mountinfo.ByDevice(ms)
			if !mapsEqual(by, mountsBy) {
				mountsBy = by
				s.countMountUpdate()
				publish()
			}
		case <-ticker.C:
			fullWanted = true
		case w := <-s.refreshC:
			fullWanted = true
			waiters = append(waiters, w)
		case fn := <-s.callC:
			fn()
		case <-gapC:
			gapC = nil
		case <-tokC:
			tokC = nil
		}
	}
}

// merge applies a finished job's result to devices and returns, sorted,
// the devices it left alone: those in newer, which had a uevent after the
// job was handed to the worker. blkid may have read such a device before
// the event (a partition removed during a slow full scan would otherwise
// come back as present and stay so until the next periodic scan), and the
// event's own handling is newer: a remove already dropped the device, any
// other event left it pending for a probe of its own. A failed full scan
// changes nothing; a failed probe keeps what was known of that device.
func merge(devices map[string]device, r result, newer map[string]bool) []string {
	var stale []string
	keep := func(name string) bool {
		if newer[name] {
			stale = append(stale, name)
			return true
		}
		return false
	}
	switch {
	case r.job.full && r.err != nil:
	case r.job.full:
		for name := range devices {
			if _, ok := r.full[name]; !ok && !keep(name) {
				delete(devices, name)
			}
		}
		for name, d := range r.full {
			if !keep(name) {
				devices[name] = d
			}
		}
	default:
		for name, d := range r.probed {
			switch {
			case keep(name):
			case d == nil:
				delete(devices, name)
			default:
				devices[name] = *d
			}
		}
	}
	slices.Sort(stale)
	return slices.Compact(stale)
}

// worker runs blkid jobs one at a time, off the event loop; probeWorkers
// of them run.
func (s *Scanner) worker(ctx context.Context, jobs <-chan job, results chan<- result) {
	for {
		var j job
		select {
		case <-ctx.Done():
			return
		case j = <-jobs:
		}
		r := result{job: j, started: time.Now()}
		if j.full {
			r.full, r.err = s.scanAll(ctx)
		} else {
			r.probed = make(map[string]*device, len(j.names))
			for _, n := range j.names {
				d, found, err := s.probe(ctx, n)
				switch {
				case err != nil:
					r.err = err // keep what we knew of n
				case found:
					r.probed[n] = &d
				default:
					r.probed[n] = nil
				}
			}
		}
		r.took = time.Since(r.started)
		select {
		case results <- r:
		case <-ctx.Done():
			return
		}
	}
}

func (s *Scanner) scanAll(ctx context.Context) (map[string]device, error) {
	recs, err := s.cfg.Prober.ScanAll(ctx)
	if err != nil {
		return nil, fmt.Errorf("full scan: %w", err)
	}
	out := make(map[string]device, len(recs))
	for _, rec := range recs {
		if !s.cfg.Filter.Allows(rec.Device) {
			continue
		}
		name, err := sysfs.KernelName(rec.Device)
		if err != nil {
			name = filepath.Base(rec.Device)
		}
		sys, err := sysfs.Read(s.cfg.SysRoot, name)
		if err != nil {
			// Gone between blkid and now, or sysfs not mounted: report
			// what blkid said rather than nothing.
			s.log.Debug("sysfs", "device", rec.Device, "err", err)
			sys.Name = name
		}
		out[name] = device{rec: rec, sys: sys}
	}
	return out, nil
}

func (s *Scanner) probe(ctx context.Context, name string) (device, bool, error) {
	dev := "/dev/" + name
	rec, found, err := s.cfg.Prober.Probe(ctx, dev)
	if err != nil {
		return device{}, false, fmt.Errorf("probe %s: %w", dev, err)
	}
	if !found {
		return device{}, false, nil
	}
	sys, err := sysfs.Read(s.cfg.SysRoot, name)
	if err != nil {
		sys.Name = name
	}
	return device{rec: rec, sys: sys}, true, nil
}

func (s *Scanner) finishFull(r result) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status.FullScans++
	s.status.LastScan = r.started
	s.status.LastDuration = r.took
	s.noteErrorLocked(r.err, r.started)
}

func (s *Scanner) finishProbes(r result) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status.DeviceProbes += uint64(len(r.job.names))
	if r.err != nil {
		s.noteErrorLocked(r.err, r.started)
	} else if s.status.LastError != "" && !strings.HasPrefix(s.status.LastError, "full scan") {
		s.noteErrorLocked(nil, r.started)
	}
}

// errorLogEvery spaces the log lines of a run of changing scan errors.
const errorLogEvery = time.Minute

// noteErrorLocked records err for status and logs it when the message
// changes (at most once per errorLogEvery while errors go on), and once
// when it clears, so a broken blkid or hostile media cannot flood the log.
func (s *Scanner) noteErrorLocked(err error, at time.Time) {
	if err == nil {
		if s.status.LastError != "" {
			s.log.Info("blkid works again", "previous_error", s.status.LastError, "suppressed_errors", s.errSuppressed)
		}
		s.status.LastError = ""
		s.lastErrLog, s.errSuppressed = time.Time{}, 0
		return
	}
	msg := err.Error()
	if msg != s.status.LastError {
		if !s.lastErrLog.IsZero() && time.Since(s.lastErrLog) < errorLogEvery {
			s.errSuppressed++
		} else {
			level := slog.LevelError
			if errors.Is(err, context.Canceled) {
				level = slog.LevelDebug
			}
			s.log.Log(context.Background(), level, "scan failed; serving the last good inventory", "err", err, "suppressed_since_last", s.errSuppressed)
			s.lastErrLog, s.errSuppressed = time.Now(), 0
		}
	}
	s.status.LastError = msg
	s.status.LastErrorTime = at
}

func (s *Scanner) countUevent() {
	s.mu.Lock()
	s.status.Uevents++
	s.mu.Unlock()
}

func (s *Scanner) countMountUpdate() {
	s.mu.Lock()
	s.status.MountUpdates++
	s.mu.Unlock()
}

// SetUeventsActive records whether the uevent source is running, for status.
func (s *Scanner) SetUeventsActive(on bool) {
	s.mu.Lock()
	s.status.UeventsActive = on
	s.mu.Unlock()
}

// compose turns what the scanner knows into the local inventory.
func (s *Scanner) compose(devices map[string]device, mountsBy map[string][]string) []disk.Disk {
	out := make([]disk.Disk, 0, len(devices))
	for name, d := range devices {
		out = append(out, disk.Disk{
			Name:      name,
			Device:    d.rec.Device,
			MajMin:    d.sys.MajMin,
			UUID:      d.rec.UUID,
			PartUUID:  d.rec.PartUUID,
			Label:     d.rec.Label,
			PartLabel: d.rec.PartLabel,
			Type:      d.rec.Type,
			Usage:     d.rec.Usage,
			Size:      d.sys.Size,
			ReadOnly:  d.sys.ReadOnly,
			Removable: d.sys.Removable,
			Mounts:    mountsBy[d.sys.MajMin],
		})
	}
	return out
}

func mapsEqual(a, b map[string][]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || !slices.Equal(v, w) {
			return false
		}
	}
	return true
}
