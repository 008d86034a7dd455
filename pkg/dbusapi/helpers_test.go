package dbusapi

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	contract "github.com/diskd/diskd/dbus"
	"github.com/diskd/diskd/pkg/api"
	"github.com/diskd/diskd/pkg/authz"
	"github.com/diskd/diskd/pkg/disk"
	"github.com/diskd/diskd/pkg/store"
	"github.com/diskd/diskd/pkg/testutil"
)

const (
	localID = disk.NodeID("a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1")
	peerID  = disk.NodeID("b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2")
)

// fakeBackend counts the actions; the store is real.
type fakeBackend struct {
	refreshes, pings, mounts atomic.Int32
	refreshErr               atomic.Pointer[error]
}

func (b *fakeBackend) Refresh(ctx context.Context) error {
	b.refreshes.Add(1)
	if e := b.refreshErr.Load(); e != nil {
		return *e
	}
	return nil
}

func (b *fakeBackend) Ping(ctx context.Context) (int, error) {
	b.pings.Add(1)
	return 2, nil
}

func (b *fakeBackend) Mount(_ context.Context, q string, rw bool, uid uint32) (api.MountResult, error) {
	b.mounts.Add(1)
	return api.MountResult{Disk: q, Path: "/media/diskd/" + q, RW: rw}, nil
}

func (b *fakeBackend) Unmount(_ context.Context, q string, force bool, uid uint32) (api.MountResult, error) {
	b.mounts.Add(1)
	return api.MountResult{Disk: q}, nil
}

func (b *fakeBackend) Status() api.Status {
	return api.Status{Version: "test-1", NodeID: localID, NodeName: "alpha", DBus: "connected",
		Counts: api.Counts{Nodes: 2, Disks: 3}, Problems: []string{"none really"}}
}

// logBuffer collects log output for assertions.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// env is a Service on a private system-like bus with diskd's policy
// installed, over a real store.
type env struct {
	t    testing.TB
	bus  *testutil.DBus
	st   *store.Store
	be   *fakeBackend
	svc  *Service
	logs *logBuffer
	stop func()
}

func newStore() *store.Store {
	return store.New(store.Options{Local: disk.Node{ID: localID, Name: "alpha", Addresses: []string{"10.0.0.1"}}})
}

func startEnv(t testing.TB, cfg Config) *env {
	t.Helper()
	return startEnvStore(t, cfg, store.Options{})
}

// startEnvStore is startEnv with store options (the local node is set).
func startEnvStore(t testing.TB, cfg Config, opts store.Options) *env {
	t.Helper()
	testutil.RequiresTool(t, "dbus-daemon", "dbus-send", "busctl")
	bus := testutil.StartDBus(t)
	bus.InstallPolicy(filepath.Join(testutil.RepoRoot(t), "dbus", "org.diskd.Diskd1.conf"))
	opts.Local = disk.Node{ID: localID, Name: "alpha", Addresses: []string{"10.0.0.1"}}
	e := &env{t: t, bus: bus, st: store.New(opts), be: &fakeBackend{}, logs: &logBuffer{}}
	e.runService(cfg)
	e.waitConnected()
	return e
}

func (e *env) waitConnected() {
	e.t.Helper()
	waitFor(e.t, "the service to own "+contract.BusName, func() bool {
		return strings.HasPrefix(e.svc.State(), "connected") && strings.HasSuffix(e.svc.State(), " as "+contract.BusName)
	})
}

// newEnv is startEnv without starting the service.
func newEnv(t testing.TB) *env {
	t.Helper()
	testutil.RequiresTool(t, "dbus-daemon", "dbus-send", "busctl")
	bus := testutil.StartDBus(t)
	bus.InstallPolicy(filepath.Join(testutil.RepoRoot(t), "dbus", "org.diskd.Diskd1.conf"))
	return &env{t: t, bus: bus, st: newStore(), be: &fakeBackend{}, logs: &logBuffer{}}
}

// runService starts the service; it is stopped at cleanup (or by e.stop).
func (e *env) runService(cfg Config, tweak ...func(*Service)) {
	if cfg.Bus == "" {
		cfg.Bus = e.bus.Address
	}
	if cfg.Version == "" {
		cfg.Version = "test-1"
	}
	if cfg.RetryMin == 0 {
		cfg.RetryMin, cfg.RetryMax = 20*time.Millisecond, 100*time.Millisecond
	}
	logger := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	// As cmd/diskd wires them: each component named by who builds it.
	if cfg.Policy == nil {
		cfg.Policy = authz.New(authz.Config{Logger: logger.With("component", "authz")})
	}
	e.svc = New(cfg, e.st, e.be, logger.With("component", "dbus"))
	for _, f := range tweak {
		f(e.svc)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.svc.Run(ctx) }()
	var once sync.Once
	e.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					e.t.Errorf("Run returned %v", err)
				}
			case <-time.After(10 * time.Second):
				e.t.Errorf("Run did not return within 10 s of cancel")
			}
		})
	}
	e.t.Cleanup(func() {
		e.stop()
		if e.t.Failed() {
			e.t.Logf("service log:\n%s", e.logs.String())
		}
	})
}

// client connects a plain godbus client to the bus.
func (e *env) client() *dbus.Conn {
	e.t.Helper()
	c, err := dbus.Connect(e.bus.Address)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	return c
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, what, cond)
}

// run runs a command and returns its stdout, failing the test on error.
func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := runErr(name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v", name, strings.Join(args, " "), err)
	}
	return out
}

func runErr(name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	if err := cmd.Run(); err != nil {
		return o.String(), errors.New(strings.TrimSpace(err.Error() + ": " + e.String()))
	}
	return o.String(), nil
}

// blockAt is the object path the store gives a disk reported as d on node
// when nothing else carries its identity: the identity itself.
func blockAt(node disk.NodeID, d disk.Disk) dbus.ObjectPath {
	d.Node = node
	return contract.BlockPath(disk.Key(disk.Identity(&d)))
}

// uuidPath is the object path of the disk with filesystem UUID u.
func uuidPath(u string) dbus.ObjectPath { return blockAt("", disk.Disk{UUID: u}) }

// fixture fills the store: two local disks and a peer with one.
func (e *env) fixture() {
	e.st.SetLocal([]disk.Disk{
		{Name: "loop3", Device: "/dev/loop3", MajMin: "7:3", UUID: "1111-2222", Label: "BACKUP",
			Type: "ext4", Usage: "filesystem", Size: 64 << 20, Mounts: []string{"/mnt/backup"}},
		{Name: "dm-0", Device: "/dev/dm-0", MajMin: "253:0", Type: "crypto_LUKS", Usage: "crypto", Size: 1 << 30},
	})
	e.st.ApplyPeer(disk.Node{ID: peerID, Name: "beta", Addresses: []string{"10.0.0.2"}}, []disk.Disk{
		{Name: "sdb1", Device: "/dev/sdb1", UUID: "3333-4444", Label: "PHOTOS", Type: "xfs", Size: 2 << 30},
	})
}
