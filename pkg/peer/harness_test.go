package peer_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
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
	t       *testing.T
	h       *testutil.Host
	st      *store.Store
	svc     *peer.Service
	ctx     context.Context
	cancel  context.CancelFunc
	done    chan error
	stopped bool
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

// startNode starts a peer service on h with a new node ID; it is stopped
// at cleanup.
func startNode(t *testing.T, h *testutil.Host, mod func(*peer.Config)) *node {
	t.Helper()
	cfg := testConfig(h)
	if mod != nil {
		mod(&cfg)
	}
	n := startNodeWithStore(t, h, cfg, newNodeID())
	testutil.Eventually(t, wait, "service joined", func() bool { return len(n.svc.Status().Interfaces) > 0 })
	return n
}

// startNodeWithStore starts a service for node id with cfg and waits until
// it has said hello (joined whatever interfaces there are).
func startNodeWithStore(t *testing.T, h *testutil.Host, cfg peer.Config, id disk.NodeID) *node {
	t.Helper()
	st := store.New(store.Options{Local: disk.Node{ID: id, Name: h.Hostname}})
	svc, err := peer.New(cfg, st, logger(t, h.Hostname))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &node{t: t, h: h, st: st, svc: svc, cancel: cancel, done: make(chan error, 1)}
	go func() { n.done <- svc.Run(ctx) }()
	t.Cleanup(n.stop)
	testutil.Eventually(t, wait, "service up", func() bool { return svc.Status().Counters["heartbeats_sent"] > 0 })
	return n
}

// stop stops the service cleanly (it says goodbye); safe to call twice.
func (n *node) stop() {
	n.cancel()
	if n.stopped {
		return
	}
	select {
	case err := <-n.done:
		n.stopped = true
		if err != nil {
			n.t.Errorf("%s: Run: %v", n.h.Hostname, err)
		}
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

var group4 = netip.MustParseAddr(peer.DefaultGroup4)

// newTap records the peer network's IPv4 group on h, and injects.
func newTap(t *testing.T, h *testutil.Host) *testutil.Tap {
	return testutil.NewTap(t, h, netip.AddrPortFrom(group4, peer.DefaultPort))
}

func counter(n *node, name string) uint64 {
	v, ok := n.svc.Status().Counters[name]
	if !ok {
		n.t.Fatalf("no counter %q", name)
	}
	return v
}

func writeKeys(t *testing.T, text string) string {
	p := filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
