package control

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/diskd/diskd/pkg/api"
	"github.com/diskd/diskd/pkg/ctlclient"
	"github.com/diskd/diskd/pkg/disk"
	"github.com/diskd/diskd/pkg/localsock"
	"github.com/diskd/diskd/pkg/store"
	"github.com/diskd/diskd/pkg/testutil"
)

// serve100k serves a store of 100,000 disks (testutil.FillPeers) on a
// socket at path until the benchmark ends, with ctx.
func serve100k(b *testing.B) (ctx context.Context, path string, st *store.Store) {
	st = store.New(store.Options{Local: disk.Node{ID: "00000000000000000000000000000001", Name: "here"}, MaxPeers: 100})
	testutil.FillPeers(st, 100_000)
	path = filepath.Join(b.TempDir(), "s")
	l, err := localsock.Listen(path)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	go New(Config{Listener: l, Store: st, Backend: &fakeBackend{}}).Serve(ctx)
	return ctx, path, st
}

// BenchmarkList100k: one `list` JSON round trip over the socket with
// 100,000 disks in the store, in-process (no diskctl start-up).
func BenchmarkList100k(b *testing.B) {
	ctx, path, _ := serve100k(b)
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

// BenchmarkWhereSession: what a `diskctl where` costs beyond its process
// start: connect, one where among 100,000 disks, close, in-process, with
// both clients. Here the netpoller is running already, so the session
// client (Dial) is the faster; the short-lived one pays off in a fresh
// process (BenchmarkDiskctlStart in ./test).
func BenchmarkWhereSession(b *testing.B) {
	ctx, path, st := serve100k(b)
	label := st.Disks(nil)[50_000].Label
	for _, dial := range []struct {
		name string
		dial func(context.Context, string) (*ctlclient.Client, error)
	}{{"Dial", ctlclient.Dial}, {"DialShortLived", ctlclient.DialShortLived}} {
		b.Run(dial.name, func(b *testing.B) {
			for b.Loop() {
				c, err := dial.dial(ctx, path)
				if err != nil {
					b.Fatal(err)
				}
				if ds, err := c.Where(ctx, label); err != nil || len(ds) == 0 {
					b.Fatalf("where %s: %d disks, %v", label, len(ds), err)
				}
				c.Close()
			}
		})
	}
}

// worstGlob makes path.Match work hardest on worstGlobStore's labels: one
// star, then a chunk of MaxGlobBytes-1 bytes that matches almost
// everywhere and fails at its last byte.
var worstGlob = "*" + strings.Repeat("a", api.MaxGlobBytes-2) + "b"

// worstGlobStore holds n disks whose labels are as long as the peer
// protocol lets in (256 bytes).
func worstGlobStore(n int) *store.Store {
	st := store.New(store.Options{Local: disk.Node{ID: "00000000000000000000000000000001", Name: "here"}, MaxPeers: 100})
	label := strings.Repeat("a", 256)
	for p := 0; p*4000 < n; p++ {
		var ds []disk.Disk
		for k := p * 4000; k < min(n, (p+1)*4000); k++ {
			ds = append(ds, disk.Disk{Name: fmt.Sprintf("sd%d", k), Device: fmt.Sprintf("/dev/sd%d", k), Label: label,
				UUID: fmt.Sprintf("%08x-0000-4000-8000-000000000000", k)})
		}
		st.ApplyPeer(disk.Node{ID: disk.NodeID(fmt.Sprintf("%032x", p+0x100)), Name: fmt.Sprintf("peer%02d", p)}, ds)
	}
	return st
}

// BenchmarkLabelGlobWorstCase: `list --label` with the costliest glob over
// 100,000 disks with the longest labels, against a plain --label BACKUP-*
// over the same table (the baseline).
func BenchmarkLabelGlobWorstCase(b *testing.B) {
	st := worstGlobStore(100_000)
	for _, g := range []struct{ name, glob string }{{"worst-glob", worstGlob}, {"baseline-plain-glob", "BACKUP-*"}} {
		b.Run(g.name, func(b *testing.B) {
			byLabel := api.ListFilter{Label: g.glob}.KeepLabel()
			for b.Loop() {
				if st.DisksJSON(nil, byLabel).Len() != 0 {
					b.Fatal("matched")
				}
			}
		})
	}
}
