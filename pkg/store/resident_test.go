package store

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/diskd/diskd/pkg/disk"
	"github.com/diskd/diskd/pkg/testutil"
)

// TestStateFileNotKeptResident: after a load of 20,000 disks and after a
// write, none of the state file is counted in the process's RSS (bbolt
// maps it; the store lets go of the pages it touched).
func TestStateFileNotKeptResident(t *testing.T) {
	s := New(Options{Local: disk.Node{ID: localID, Name: "here"}, MaxPeers: 100})
	testutil.FillPeers(s, 20_000)
	path := saveState(t, s)
	db, _, err := OpenDB(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s = New(Options{Local: disk.Node{ID: localID, Name: "here"}, MaxPeers: 100})
	if err := s.Load(db); err != nil {
		t.Fatal(err)
	}
	if c := s.Counts(); c.Disks != 20_000 {
		t.Fatalf("loaded %d disks", c.Disks)
	}
	if kib := testutil.MappedRssKiB(t, "/proc/self/smaps", path); kib != 0 {
		t.Errorf("after the load %d KiB of the state file are resident (mapped: %v)", kib, kib >= 0)
	}
	s.SetLocal([]disk.Disk{{Name: "loop0", Device: "/dev/loop0", Label: "NEW"}})
	if err := s.Flush(db); err != nil {
		t.Fatal(err)
	}
	if kib := testutil.MappedRssKiB(t, "/proc/self/smaps", path); kib != 0 {
		t.Errorf("after a write %d KiB of the state file are resident", kib)
	}
	if got := s.Where("NEW"); len(got) != 1 {
		t.Errorf("where NEW = %v", got)
	}
}

// TestLoadNeverHoldsTheFile: opening (which checks every record) and
// loading a state file of 40,000 disks never holds more than a quarter of
// it resident at once: the pages are dropped as the read goes, not only
// at its end (where they were all resident together, 56 MiB of the
// daemon's peak RSS with 100,000 disks). A goroutine samples this
// process's mapping of the file while the store reads it.
func TestLoadNeverHoldsTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	db, _, err := OpenDB(path)
	if err != nil {
		t.Fatal(err)
	}
	s := New(Options{Local: disk.Node{ID: localID, Name: "here"}, MaxPeers: 100})
	testutil.FillPeers(s, 40_000)
	if err := s.Flush(db); err != nil {
		t.Fatal(err)
	}
	var span uintptr
	_, span = db.mappedSpan()
	db.Close()

	stop, sampled := make(chan struct{}), make(chan [2]int)
	go func() {
		peak, n := 0, 0
		for {
			select {
			case <-stop:
				sampled <- [2]int{peak, n}
				return
			default:
			}
			if kib, err := testutil.ReadMappedRssKiB("/proc/self/smaps", path); err == nil {
				peak, n = max(peak, kib), n+1
			}
			time.Sleep(time.Millisecond)
		}
	}()
	db, _, err = OpenDB(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s = New(Options{Local: disk.Node{ID: localID, Name: "here"}, MaxPeers: 100})
	err = s.Load(db)
	close(stop)
	r := <-sampled
	if err != nil {
		t.Fatal(err)
	}
	peak, n := r[0], r[1]
	t.Logf("%d samples; at most %d KiB of %d resident", n, peak, span>>10)
	if n < 10 {
		t.Fatalf("only %d samples of the mapping during the open and the load", n)
	}
	if peak > int(span>>10)/4 {
		t.Errorf("%d KiB of the state file (%d KiB in use) were resident at once during the open and the load", peak, span>>10)
	}
}

// mappingOf returns the start and end of this process's mapping of path
// that starts at addr, from /proc/self/maps.
func mappingOf(t *testing.T, path string, addr uintptr) (start, end uintptr) {
	t.Helper()
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Skipf("no maps: %v", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		fs := strings.Fields(l)
		if len(fs) < 6 || fs[len(fs)-1] != path {
			continue
		}
		se := strings.SplitN(fs[0], "-", 2)
		s, err1 := strconv.ParseUint(se[0], 16, 64)
		e, err2 := strconv.ParseUint(se[1], 16, 64)
		if err1 == nil && err2 == nil && uintptr(s) == addr {
			return uintptr(s), uintptr(e)
		}
	}
	t.Fatalf("%s is not mapped at %#x", path, addr)
	return 0, 0
}

// TestDropResidentStaysInsideTheMapping: bbolt grows the state file ahead
// of its mapping, so the span whose pages are dropped (MADV_DONTNEED, which
// zeroes anonymous memory) must end where the mapping ends, not where the
// file does: past it lies other memory, the Go heap included.
func TestDropResidentStaysInsideTheMapping(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	db, _, err := OpenDB(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s := New(Options{Local: disk.Node{ID: localID, Name: "here"}, MaxPeers: 100})
	testutil.FillPeers(s, 40_000)
	if err := s.Flush(db); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	addr, n := db.mappedSpan()
	start, end := mappingOf(t, path, addr)
	if addr+n > end {
		t.Errorf("dropping %d bytes from %#x runs past the mapping's end %#x", n, addr, end)
	}
	if uintptr(fi.Size()) <= end-start {
		t.Logf("file %d bytes, mapping %d: the file is not ahead of the mapping here", fi.Size(), end-start)
	}
}
