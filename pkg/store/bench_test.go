package store

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/diskd/diskd/pkg/disk"
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
