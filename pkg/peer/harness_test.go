package peer_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/diskd/diskd/pkg/disk"
	"github.com/diskd/diskd/pkg/peer"
	"github.com/diskd/diskd/pkg/store"
	"github.com/diskd/diskd/pkg/testutil"
)

// node is one in-process daemon's peer network on a test host: a real
// store and a Service whose sockets live in the host's namespace.
type node struct {
	t      *testing.T
	h      *testutil.Host
	st     *store.Store
	svc    *peer.Service
	cancel context.CancelFunc
	done   chan error
}

func newNodeID() disk.NodeID {
	var b [16]byte
	rand.Read(b[:])
	return disk.NodeID(hex.EncodeToString(b[:]))
}

// testConfig is the default config with a 1 s heartbeat, so that offline
// detection takes 3 s.
func testConfig(h *testutil.Host) peer.Config {
	c := peer.DefaultConfig()
	c.HeartbeatInterval = time.Second
	c.Enter = h.Do
	return c
}

func logger(t *testing.T, name string) *slog.Logger {
	if os.Getenv("PEER_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("host", name)
}

// startNode starts a peer service on h; it is stopped at cleanup.
func startNode(t *testing.T, h *testutil.Host, mod func(*peer.Config)) *node {
	t.Helper()
	cfg := testConfig(h)
	if mod != nil {
		mod(&cfg)
	}
	st := store.New(store.Options{Local: disk.Node{ID: newNodeID(), Name: h.Hostname}})
	svc, err := peer.New(cfg, st, logger(t, h.Hostname))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &node{t: t, h: h, st: st, svc: svc, cancel: cancel, done: make(chan error, 1)}
	go func() { n.done <- svc.Run(ctx) }()
	t.Cleanup(n.stop)
	// Interfaces are listed once the sockets are open and joined.
	testutil.Eventually(t, 5*time.Second, "service up", func() bool {
		return len(svc.Status().Interfaces) > 0
	})
	return n
}

// stop stops the service cleanly (it says goodbye); safe to call twice.
func (n *node) stop() {
	n.cancel()
	select {
	case err, ok := <-n.done:
		if ok && err != nil {
			n.t.Errorf("%s: Run: %v", n.h.Hostname, err)
		}
		close(n.done)
	case <-time.After(5 * time.Second):
		n.t.Errorf("%s: Run did not return", n.h.Hostname)
	}
}

func (n *node) id() disk.NodeID { return n.st.LocalNode().ID }

// disksOf returns the present disks n's store lists for node id.
func (n *node) disksOf(id disk.NodeID) []disk.Disk {
	return n.st.Disks(func(d *disk.Disk) bool { return d.Node == id && d.Present })
}

func (n *node) peer(id disk.NodeID) (disk.Node, bool) { return n.st.Node(id) }

func (n *node) online(id disk.NodeID) bool {
	p, ok := n.st.Node(id)
	return ok && p.Online
}

// loopDisks makes k fake local disks named after the host.
func loopDisks(host string, k int) []disk.Disk {
	ds := make([]disk.Disk, k)
	for i := range ds {
		ds[i] = disk.Disk{Name: fmt.Sprintf("loop%d", i), Device: fmt.Sprintf("/dev/loop%d", i),
			MajMin: fmt.Sprintf("7:%d", i), UUID: fmt.Sprintf("%08x-1111-4000-8000-%012x", i, i),
			Label: fmt.Sprintf("%s_%d", host, i), Type: "ext4", Usage: "filesystem", Size: 64 << 20}
	}
	return ds
}
