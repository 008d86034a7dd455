package store

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/diskd/diskd/pkg/disk"
	"github.com/diskd/diskd/pkg/testutil"
)

// bigStore holds n disks spread over peers of 4000 disks each.
func bigStore(b *testing.B, n int) *Store {
	s := New(Options{Local: disk.Node{ID: localID, Name: "here"}, MaxPeers: 1000})
	for p := 0; p*4000 < n; p++ {
		id := disk.NodeID(fmt.Sprintf("%032x", p+100))
		var ds []disk.Disk
		for i := p * 4000; i < min(n, (p+1)*4000); i++ {
			ds = append(ds, disk.Disk{Name: fmt.Sprintf("sd%d", i), Device: fmt.Sprintf("/dev/sd%d", i),
				Label: fmt.Sprintf("LABEL-%d", i), UUID: fmt.Sprintf("%08x-0000-4000-8000-000000000000", i),
				Type: "ext4", Size: 1 << 30, Mounts: []string{fmt.Sprintf("/srv/%d", i)}})
		}
		s.ApplyPeer(disk.Node{ID: id, Name: fmt.Sprintf("peer%d", p)}, ds)
	}
	return s
}

// BenchmarkSaveOneChange: the cost of persisting one changed disk when
// 100,000 are known, with bbolt's per-record writes (what diskd does)
// against rewriting the whole table atomically as one JSON file (the
// baseline this design replaced).
func BenchmarkSaveOneChange(b *testing.B) {
	const n = 100_000
	s := bigStore(b, n)
	dir := b.TempDir()
	db, _, err := OpenDB(filepath.Join(dir, "state.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	if err := s.Flush(db); err != nil {
		b.Fatal(err)
	}
	b.Run("bbolt-dirty-records", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			s.SetLocal([]disk.Disk{{Name: "loop0", Device: "/dev/loop0", Label: fmt.Sprint(i)}})
			if err := s.Flush(db); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("baseline-json-full-rewrite", func(b *testing.B) {
		path := filepath.Join(dir, "state.json")
		for i := 0; b.Loop(); i++ {
			s.SetLocal([]disk.Disk{{Name: "loop0", Device: "/dev/loop0", Label: fmt.Sprint(i)}})
			all, err := json.Marshal(s.Disks(nil))
			if err != nil {
				b.Fatal(err)
			}
			if err := WriteFileAtomic(path, all, 0o600); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkListAll: reading the whole table, as `list` does.
func BenchmarkListAll(b *testing.B) {
	s := bigStore(b, 100_000)
	for b.Loop() {
		if len(s.Disks(nil)) != 100_000 {
			b.Fatal("short")
		}
	}
}

// BenchmarkWhere100k: `where` with 100,000 remembered disks (25 peers of
// 4000, testutil.FillPeers), for one label and for one UUID, against
// listing the whole table (what `where` walks) as the baseline.
func BenchmarkWhere100k(b *testing.B) {
	s := New(Options{Local: disk.Node{ID: localID, Name: "here"}, MaxPeers: 100})
	testutil.FillPeers(s, 100_000)
	if c := s.Counts(); c.Disks != 100_000 {
		b.Fatalf("filled %d disks", c.Disks)
	}
	for _, q := range []string{"LABEL-54321", fmt.Sprintf("%08x-0000-4000-8000-000000000000", 54321)} {
		name := "label"
		if len(q) > 20 {
			name = "uuid"
		}
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				if len(s.Where(q)) != 1 {
					b.Fatal("not found")
				}
			}
		})
	}
	b.Run("baseline-list-all", func(b *testing.B) {
		for b.Loop() {
			s.Disks(nil)
		}
	})
}

// BenchmarkRememberedPerMiB: how many disks one MiB of state file and of
// memory holds, with one sighting each (never moved) and with a full
// history (DefaultHistoryPerDisk sightings each). Reported as metrics;
// the loop itself only re-reads the counts.
func BenchmarkRememberedPerMiB(b *testing.B) {
	const n = 100_000
	for _, tc := range []struct {
		name      string
		sightings int
	}{{"one-place", 1}, {"full-history", DefaultHistoryPerDisk}} {
		b.Run(tc.name, func(b *testing.B) {
			heap0, rss0 := memNow()
			s := New(Options{Local: disk.Node{ID: localID, Name: "here"}, MaxPeers: 100})
			testutil.FillPeers(s, n)
			s.mu.Lock()
			for _, r := range s.rows {
				for i := 1; i < tc.sightings; i++ {
					r.setPast(append(r.past(), disk.Sighting{Node: r.nodeID(), Host: r.disk().Host, Name: fmt.Sprintf("sdx%d", i),
						Device: fmt.Sprintf("/dev/sdx%d", i), FirstSeen: r.d.FirstSeen, LastSeen: r.d.LastSeen}))
				}
				s.dirty.rows[r.key()] = true
			}
			s.mu.Unlock()
			heap1, rss1 := memNow()
			path := filepath.Join(b.TempDir(), "state.db")
			db, _, err := OpenDB(path)
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			if err := s.Flush(db); err != nil {
				b.Fatal(err)
			}
			fi, err := os.Stat(path)
			if err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				s.Counts()
			}
			const mib = 1 << 20
			b.ReportMetric(float64(n)/(float64(fi.Size())/mib), "disks/MiB-file")
			b.ReportMetric(float64(n)/(float64(heap1-heap0)/mib), "disks/MiB-heap")
			if rss1 > rss0 {
				b.ReportMetric(float64(n)/(float64(rss1-rss0)/mib), "disks/MiB-RSS")
			}
			runtime.KeepAlive(s)
		})
	}
}

// memNow returns the live heap after a collection and the process RSS.
func memNow() (heap, rss uint64) {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b, _ := os.ReadFile("/proc/self/statm")
	var size, res uint64
	fmt.Sscan(string(b), &size, &res)
	return ms.HeapAlloc, res * uint64(os.Getpagesize())
}

// BenchmarkHeapPerDisk: the live heap a disk costs with 100,000 remembered
// (testutil.FillPeers, then saved) after one list has been written (its
// nodes packed), and the time of a streamed `list --json` (DisksJSON
// written to io.Discard).
func BenchmarkHeapPerDisk(b *testing.B) {
	const n = 100_000
	heap0, _ := memNow()
	s := New(Options{Local: disk.Node{ID: localID, Name: "here"}, MaxPeers: 100})
	testutil.FillPeers(s, n)
	s.takeDirty() // as a save does (the daemon saves within seconds)
	var size int64
	for b.Loop() {
		m, err := s.DisksJSON(nil, nil).WriteTo(io.Discard)
		if err != nil {
			b.Fatal(err)
		}
		size = m
	}
	heap1, _ := memNow()
	b.ReportMetric(float64(heap1-heap0)/n, "B-heap/disk")
	b.ReportMetric(float64(size)/n, "B-json/disk")
	runtime.KeepAlive(s)
}

// BenchmarkListLoaded100k: a streamed `list --json` of 100,000 disks
// loaded from the state file, as the daemon lists them after a restart
// (testutil.FillPeers, flushed, loaded into a new store): the rows laid
// out in the heap as the load made them, not as FillPeers did.
func BenchmarkListLoaded100k(b *testing.B) {
	s := New(Options{Local: disk.Node{ID: localID, Name: "here"}, MaxPeers: 100})
	testutil.FillPeers(s, 100_000)
	db, _, err := OpenDB(saveState(b, s))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	s = New(Options{Local: disk.Node{ID: localID, Name: "here"}, MaxPeers: 100})
	if err := s.Load(db); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := s.DisksJSON(nil, nil).WriteTo(io.Discard); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkListAfterChange100k: a streamed list of 100,000 disks when one
// disk of a peer of 4000 changed since the last list, so that peer's
// pack is made again first (under the write lock); beside the same list
// with nothing changed, the baseline.
func BenchmarkListAfterChange100k(b *testing.B) {
	s := New(Options{Local: disk.Node{ID: localID, Name: "here"}, MaxPeers: 100})
	testutil.FillPeers(s, 100_000)
	peer := disk.Node{ID: disk.NodeID(fmt.Sprintf("%032x", 0x100)), Name: "peer00"}
	var ds []disk.Disk
	for _, d := range s.Disks(nil) {
		if d.Node == peer.ID {
			ds = append(ds, d)
		}
	}
	if len(ds) != 4000 {
		b.Fatalf("peer00 has %d disks", len(ds))
	}
	list := func(b *testing.B) {
		if _, err := s.DisksJSON(nil, nil).WriteTo(io.Discard); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("one-change", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			ds[0].Label = fmt.Sprint("CHANGED-", i)
			s.ApplyPeer(peer, ds)
			list(b)
		}
	})
	b.Run("baseline-no-change", func(b *testing.B) {
		for b.Loop() {
			list(b)
		}
	})
	b.Run("baseline-the-change-alone", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			ds[0].Label = fmt.Sprint("ALONE-", i)
			s.ApplyPeer(peer, ds)
		}
	})
}

// BenchmarkOpenLoad100k: a daemon's start with 100,000 disks remembered
// (testutil.FillPeers, saved): OpenStore, the state file loaded into a
// new store, as run does. Reports the process CPU (user and system, the
// collections on other cores included) beside the wall time.
func BenchmarkOpenLoad100k(b *testing.B) {
	s := New(Options{Local: disk.Node{ID: localID, Name: "here"}, MaxPeers: 100})
	testutil.FillPeers(s, 100_000)
	path := saveState(b, s)
	s = nil
	runtime.GC()
	b.ReportAllocs()
	cpu0 := cpuTime()
	for b.Loop() {
		s, db, aside, err := OpenStore(path, Options{Local: disk.Node{ID: localID, Name: "here"}, MaxPeers: 100})
		if err != nil || aside != "" {
			b.Fatal(err, aside)
		}
		db.Close()
		if c := s.Counts(); c.Disks != 100_000 {
			b.Fatalf("loaded %d disks", c.Disks)
		}
	}
	b.ReportMetric(float64((cpuTime()-cpu0).Milliseconds())/float64(b.N), "cpu-ms/op")
}

// cpuTime is the process's user and system CPU so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
