package control

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/diskd/diskd/pkg/ctlclient"
	"github.com/diskd/diskd/pkg/disk"
	"github.com/diskd/diskd/pkg/store"
)

// BenchmarkList100k: one `list` JSON round trip over the socket with
// 100,000 disks in the store, in-process (no diskctl start-up).
func BenchmarkList100k(b *testing.B) {
	st := store.New(store.Options{Local: disk.Node{ID: "00000000000000000000000000000001", Name: "here"}, MaxPeers: 100})
	for p := 0; p < 25; p++ {
		var ds []disk.Disk
		for i := 0; i < 4000; i++ {
			k := p*4000 + i
			ds = append(ds, disk.Disk{Name: fmt.Sprintf("sd%d", k), Device: fmt.Sprintf("/dev/sd%d", k),
				Label: fmt.Sprintf("LABEL-%d", k), UUID: fmt.Sprintf("%08x-0000-4000-8000-000000000000", k),
				Type: "ext4", Size: 1 << 30, Mounts: []string{fmt.Sprintf("/srv/%d", k)}})
		}
		st.ApplyPeer(disk.Node{ID: disk.NodeID(fmt.Sprintf("%032x", p+2)), Name: fmt.Sprintf("peer%02d", p)}, ds)
	}
	path := filepath.Join(b.TempDir(), "s")
	l, err := Listen(path)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go New(Config{Listener: l, Store: st, Backend: &fakeBackend{}}).Serve(ctx)
	c, err := ctlclient.Dial(ctx, path)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	b.Run("ListJSON", func(b *testing.B) {
		for b.Loop() {
			if _, err := c.ListJSON(ctx, ""); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("List-decoded", func(b *testing.B) {
		for b.Loop() {
			if _, err := c.List(ctx, ""); err != nil {
				b.Fatal(err)
			}
		}
	})
}
