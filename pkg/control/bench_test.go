package control

import (
	"context"
	"io"
	"path/filepath"
	"testing"

	"github.com/diskd/diskd/pkg/api"
	"github.com/diskd/diskd/pkg/ctlclient"
	"github.com/diskd/diskd/pkg/disk"
	"github.com/diskd/diskd/pkg/store"
	"github.com/diskd/diskd/pkg/testutil"
)

// BenchmarkList100k: one `list` JSON round trip over the socket with
// 100,000 disks in the store, in-process (no diskctl start-up).
func BenchmarkList100k(b *testing.B) {
	st := store.New(store.Options{Local: disk.Node{ID: "00000000000000000000000000000001", Name: "here"}, MaxPeers: 100})
	testutil.FillPeers(st, 100_000)
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
			if err := c.ListJSONTo(ctx, api.ListFilter{}, io.Discard); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("List-decoded", func(b *testing.B) {
		for b.Loop() {
			if _, err := c.List(ctx, api.ListFilter{}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
