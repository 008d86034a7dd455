package api

import (
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/diskd/diskd/pkg/disk"
)

// BenchmarkWriteDisks100k: the table of 100,000 disks, as `diskctl list`
// prints it.
func BenchmarkWriteDisks100k(b *testing.B) {
	ds := make([]disk.Disk, 100_000)
	for i := range ds {
		ds[i] = disk.Disk{Host: fmt.Sprintf("peer%02d", i/4000), Name: fmt.Sprintf("sd%d", i), Device: fmt.Sprintf("/dev/sd%d", i),
			Label: fmt.Sprintf("LABEL-%d", i), UUID: fmt.Sprintf("%08x-0000-4000-8000-000000000000", i), Type: "ext4",
			Size: 1 << 30, Mounts: []string{fmt.Sprintf("/srv/%d", i)}, Present: i%3 != 0, LastSeen: time.Now()}
	}
	for b.Loop() {
		WriteDisks(io.Discard, ds)
	}
}
