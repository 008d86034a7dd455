package dbusclient_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	contract "github.com/diskd/diskd/dbus"
	"github.com/diskd/diskd/pkg/api"
	"github.com/diskd/diskd/pkg/control"
	"github.com/diskd/diskd/pkg/ctlclient"
	"github.com/diskd/diskd/pkg/dbusapi"
	"github.com/diskd/diskd/pkg/dbusclient"
	"github.com/diskd/diskd/pkg/disk"
	"github.com/diskd/diskd/pkg/localsock"
	"github.com/diskd/diskd/pkg/store"
	"github.com/diskd/diskd/pkg/testutil"
)

const (
	localID = disk.NodeID("a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1")
	peerID  = disk.NodeID("b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2")
)

type backend struct{ refreshes atomic.Int32 }

func (b *backend) Refresh(context.Context) error { b.refreshes.Add(1); return nil }
func (b *backend) Ping(context.Context) (int, error) {
	return 3, nil
}
func (b *backend) Announce() error { return nil }
func (b *backend) Mount(_ context.Context, q string, rw bool, _ uint32) (api.MountResult, error) {
	return api.MountResult{Disk: q, Host: "alpha", Path: "/media/diskd/" + q, RW: rw}, nil
}
func (b *backend) Unmount(_ context.Context, q string, _ bool, _ uint32) (api.MountResult, error) {
	return api.MountResult{Disk: q, Host: "alpha"}, nil
}
func (b *backend) Status() api.Status {
	return api.Status{Version: "t1", NodeID: localID, NodeName: "alpha", StartTime: time.UnixMicro(1_700_000_000_000_000),
		UptimeSec: 12.5, DBus: "connected", Counts: api.Counts{Nodes: 2, Disks: 4},
		Network: &api.NetStatus{Groups: []string{"239.255.42.1"}, Counters: map[string]uint64{"sent": 4}}}
}

// both is one store served over the socket and over D-Bus, and a client
// of each.
type both struct {
	st   *store.Store
	bus  *testutil.DBus
	sock *ctlclient.Client
	dbus *dbusclient.Client
	be   *backend
}

func start(t *testing.T, cfg dbusapi.Config) *both {
	t.Helper()
	testutil.RequiresTool(t, "dbus-daemon", "dbus-send")
	bus := testutil.StartDBus(t)
	bus.InstallPolicy(filepath.Join(testutil.RepoRoot(t), "dbus", "org.diskd.Diskd1.conf"))
	// The D-Bus API carries times in microseconds; a store whose clock
	// has that resolution gives identical JSON both ways.
	st := store.New(store.Options{
		Local: disk.Node{ID: localID, Name: "alpha", Addresses: []string{"10.0.0.1"}},
		Now:   func() time.Time { return time.Now().Truncate(time.Microsecond) },
	})
	be := &backend{}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })

	l, err := localsock.Listen(filepath.Join(t.TempDir(), "diskd.sock"))
	if err != nil {
		t.Fatal(err)
	}
	srv := control.New(control.Config{Listener: l, Store: st, Backend: be, Version: "t1"})
	wg.Add(1)
	go func() { defer wg.Done(); srv.Serve(ctx) }()

	cfg.Bus, cfg.Version = bus.Address, "t1"
	svc := dbusapi.New(cfg, st, be, slog.New(slog.DiscardHandler))
	wg.Add(1)
	go func() { defer wg.Done(); svc.Run(ctx) }()
	testutil.Eventually(t, 10*time.Second, "the D-Bus service", func() bool { return strings.HasPrefix(svc.State(), "connected") })

	b := &both{st: st, bus: bus, be: be}
	if b.sock, err = ctlclient.Dial(ctx, l.Addr().String()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.sock.Close() })
	if b.dbus, err = dbusclient.Dial(ctx, bus.Address); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.dbus.Close() })
	return b
}

func fixture(st *store.Store) {
	st.SetLocal([]disk.Disk{
		{Name: "loop3", Device: "/dev/loop3", MajMin: "7:3", UUID: "1111-2222", Label: "BACKUP",
			Type: "ext4", Usage: "filesystem", Size: 64 << 20, Mounts: []string{"/mnt/backup", "/srv/b"}},
		{Name: "dm-0", Device: "/dev/dm-0", MajMin: "253:0", Type: "crypto_LUKS", Usage: "crypto", Size: 1 << 30, ReadOnly: true},
		{Name: "sdc1", Device: "/dev/sdc1", MajMin: "8:33", PartUUID: "PU-1", PartLabel: "old", Removable: true},
	})
	// sdc1 goes: history.
	st.SetLocal([]disk.Disk{
		{Name: "loop3", Device: "/dev/loop3", MajMin: "7:3", UUID: "1111-2222", Label: "BACKUP",
			Type: "ext4", Usage: "filesystem", Size: 64 << 20, Mounts: []string{"/mnt/backup", "/srv/b"}},
		{Name: "dm-0", Device: "/dev/dm-0", MajMin: "253:0", Type: "crypto_LUKS", Usage: "crypto", Size: 1 << 30, ReadOnly: true},
	})
	st.ApplyPeer(disk.Node{ID: peerID, Name: "beta", Addresses: []string{"10.0.0.2", "fe80::2"}}, []disk.Disk{
		{Name: "sdb1", Device: "/dev/sdb1", UUID: "3333-4444", Label: "BACKUP", Type: "xfs", Size: 2 << 30},
	})
}

// same fails t unless both answers, as JSON and as printed for a person,
// are identical.
func same[T any](t *testing.T, what string, sock, bus T, serr, berr error, human func(*bytes.Buffer, T)) {
	t.Helper()
	if (serr == nil) != (berr == nil) || (serr != nil && serr.Error() != berr.Error()) {
		t.Errorf("%s: errors differ: socket %v, D-Bus %v", what, serr, berr)
		return
	}
	sj, _ := json.MarshalIndent(sock, "", " ")
	bj, _ := json.MarshalIndent(bus, "", " ")
	if string(sj) != string(bj) {
		t.Errorf("%s: JSON differs:\nsocket %s\nD-Bus  %s", what, sj, bj)
	}
	if human != nil {
		var sh, bh bytes.Buffer
		human(&sh, sock)
		human(&bh, bus)
		if sh.String() != bh.String() {
			t.Errorf("%s: output differs:\nsocket\n%s\nD-Bus\n%s", what, sh.String(), bh.String())
		}
	}
}

// TestSameAnswersAsSocket: every command gives the same values, and so the
// same output, over D-Bus as over the socket.
func TestSameAnswersAsSocket(t *testing.T) {
	b := start(t, dbusapi.Config{})
	fixture(b.st)
	ctx := context.Background()
	// The bus serves the state its signals have described, a batch behind
	// the store; the peer's disk is the fixture's last change.
	testutil.Eventually(t, 10*time.Second, "the fixture on the bus", func() bool {
		d, err := b.dbus.List(ctx, api.ListFilter{Host: "beta"})
		return err == nil && len(d) == 1
	})
	writeDisks := func(w *bytes.Buffer, ds []disk.Disk) { api.WriteDisks(w, ds) }

	for _, host := range []string{"", "alpha", "beta", string(peerID), "nosuch"} {
		for _, f := range []api.ListFilter{{Host: host}, {Host: host, Present: true}, {Host: host, Label: "B*"},
			{Host: host, Label: "*", Present: true}, {Host: host, Label: "[B"}} {
			s, serr := b.sock.List(ctx, f)
			d, derr := b.dbus.List(ctx, f)
			same(t, fmt.Sprintf("list %+v", f), s, d, serr, derr, writeDisks)
		}
	}
	for _, q := range []string{"BACKUP", "1111-2222", "pu-1", "/dev/dm-0", "NOSUCH", ""} {
		s, serr := b.sock.Where(ctx, q)
		d, derr := b.dbus.Where(ctx, q)
		same(t, "where "+q, s, d, serr, derr, func(w *bytes.Buffer, ds []disk.Disk) { api.WriteWhere(w, q, ds) })
	}
	sn, serr := b.sock.Peers(ctx)
	dn, derr := b.dbus.Peers(ctx)
	same(t, "peers", sn, dn, serr, derr, func(w *bytes.Buffer, ns []disk.Node) { api.WriteNodes(w, ns) })
	sl, serr := b.sock.Localhost(ctx)
	dl, derr := b.dbus.Localhost(ctx)
	same(t, "localhost", sl, dl, serr, derr, func(w *bytes.Buffer, l api.Localhost) { api.WriteLocalhost(w, l) })
	ss, serr := b.sock.Status(ctx)
	ds, derr := b.dbus.Status(ctx)
	same(t, "status", ss, ds, serr, derr, func(w *bytes.Buffer, s api.Status) { api.WriteStatus(w, s) })
	sp, serr := b.sock.Ping(ctx)
	dp, derr := b.dbus.Ping(ctx)
	same(t, "ping", sp, dp, serr, derr, nil)
	if err := b.dbus.Refresh(ctx); err != nil || b.be.refreshes.Load() != 1 {
		t.Errorf("refresh over D-Bus: %v (backend saw %d)", err, b.be.refreshes.Load())
	}

	// Many disks: past fewObjects the client fetches everything at once.
	var many []disk.Disk
	for i := range 40 {
		n := fmt.Sprintf("vd%02d", i)
		many = append(many, disk.Disk{Name: n, Device: "/dev/" + n, Label: "MANY", Size: uint64(i)})
	}
	b.st.ApplyPeer(disk.Node{ID: peerID, Name: "beta"}, many)
	testutil.Eventually(t, 10*time.Second, "40 disks on the bus", func() bool {
		d, err := b.dbus.List(ctx, api.ListFilter{Host: "beta"})
		return err == nil && len(d) == 41 // and sdb1, now history
	})
	s, serr := b.sock.List(ctx, api.ListFilter{})
	d, derr := b.dbus.List(ctx, api.ListFilter{})
	same(t, "list (many)", s, d, serr, derr, writeDisks)
	s, serr = b.sock.Where(ctx, "MANY")
	d, derr = b.dbus.Where(ctx, "MANY")
	same(t, "where (many)", s, d, serr, derr, nil)
}

// eventLine is an event as diskctl watch prints it, without its time.
func eventLine(ev api.WatchEvent) string {
	var w bytes.Buffer
	api.WriteEvent(&w, ev)
	_, rest, _ := strings.Cut(w.String(), " ")
	return rest
}

// TestWatchSameAsSocket: the D-Bus watch reports the socket's events, in
// order, for disks coming, changing, going, a peer appearing, going
// offline and being forgotten.
func TestWatchSameAsSocket(t *testing.T) {
	b := start(t, dbusapi.Config{BatchDelay: -1})
	fixture(b.st)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type stream struct {
		mu    sync.Mutex
		lines []string
	}
	collect := func(s *stream) func(api.WatchEvent) {
		return func(ev api.WatchEvent) {
			s.mu.Lock()
			s.lines = append(s.lines, eventLine(ev))
			s.mu.Unlock()
		}
	}
	var sockS, busS stream
	errs := make(chan error, 2)
	go func() { errs <- b.sock.Watch(ctx, collect(&sockS)) }()
	go func() { errs <- b.dbus.Watch(ctx, collect(&busS)) }()
	// A marker (a peer renamed) shows where each stream is: sync waits
	// until both have printed it.
	marker := 0
	has := func(s *stream, line string) bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return slices.Contains(s.lines, line)
	}
	sync1 := func() {
		marker++
		line := fmt.Sprintf("node-changed marker%d online\n", marker)
		b.st.ApplyPeer(disk.Node{ID: "c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3", Name: fmt.Sprintf("marker%d", marker)}, nil)
		testutil.Eventually(t, 10*time.Second, "the marker on both watches", func() bool {
			return has(&sockS, line) && has(&busS, line)
		})
	}
	// Both watching (a watch may start after a marker): then drop what
	// came before the last marker.
	var first string
	testutil.Eventually(t, 10*time.Second, "both watches to start", func() bool {
		marker++
		first = fmt.Sprintf("node-changed marker%d online\n", marker)
		b.st.ApplyPeer(disk.Node{ID: "c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3", Name: fmt.Sprintf("marker%d", marker)}, nil)
		time.Sleep(50 * time.Millisecond)
		return has(&sockS, first) && has(&busS, first)
	})
	for _, s := range []*stream{&sockS, &busS} {
		s.mu.Lock()
		s.lines = s.lines[slices.Index(s.lines, first)+1:]
		s.mu.Unlock()
	}

	loop5 := disk.Disk{Name: "loop5", Device: "/dev/loop5", Label: "NEW", Type: "ext4", UUID: "5555"}
	local := func(extra ...disk.Disk) []disk.Disk {
		return append([]disk.Disk{
			{Name: "loop3", Device: "/dev/loop3", MajMin: "7:3", UUID: "1111-2222", Label: "BACKUP",
				Type: "ext4", Usage: "filesystem", Size: 64 << 20, Mounts: []string{"/mnt/backup", "/srv/b"}},
			{Name: "dm-0", Device: "/dev/dm-0", MajMin: "253:0", Type: "crypto_LUKS", Usage: "crypto", Size: 1 << 30, ReadOnly: true},
		}, extra...)
	}
	steps := []func(){
		func() { b.st.SetLocal(local(loop5)) },
		func() { l := loop5; l.Mounts = []string{"/mnt/new"}; b.st.SetLocal(local(l)) },
		func() { b.st.SetLocal(local()) },
		func() {
			b.st.ApplyPeer(disk.Node{ID: "d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4", Name: "delta"},
				[]disk.Disk{{Name: "sdz", Device: "/dev/sdz", Label: "FAR"}})
		},
		func() { b.st.SetPeerOffline("d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4") },
	}
	for _, step := range steps {
		step()
		sync1()
	}
	cancel()
	for range 2 {
		if err := <-errs; err != nil {
			t.Errorf("watch: %v", err)
		}
	}
	if sockS.lines == nil || strings.Join(sockS.lines, "") != strings.Join(busS.lines, "") {
		t.Errorf("watch output differs:\nsocket:\n%s\nD-Bus:\n%s", strings.Join(sockS.lines, ""), strings.Join(busS.lines, ""))
	}
	if !regexp.MustCompile(`(?m)^added alpha /dev/loop5 present label="NEW"`).MatchString(strings.Join(busS.lines, "")) {
		t.Errorf("D-Bus watch lacks the added disk:\n%s", strings.Join(busS.lines, ""))
	}
}

// TestWatchEndsWhenDaemonLeaves: the watch says so when diskd goes.
func TestWatchEndsWhenDaemonLeaves(t *testing.T) {
	testutil.RequiresTool(t, "dbus-daemon", "dbus-send")
	bus := testutil.StartDBus(t)
	bus.InstallPolicy(filepath.Join(testutil.RepoRoot(t), "dbus", "org.diskd.Diskd1.conf"))
	st := store.New(store.Options{Local: disk.Node{ID: localID, Name: "alpha"}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	svcCtx, stopSvc := context.WithCancel(ctx)
	svc := dbusapi.New(dbusapi.Config{Bus: bus.Address}, st, &backend{}, nil)
	done := make(chan struct{})
	go func() { svc.Run(svcCtx); close(done) }()
	testutil.Eventually(t, 10*time.Second, "the D-Bus service", func() bool { return strings.HasPrefix(svc.State(), "connected") })
	c, err := dbusclient.Dial(ctx, bus.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	watching := make(chan error, 1)
	var events atomic.Int32
	go func() { watching <- c.Watch(ctx, func(api.WatchEvent) { events.Add(1) }) }()
	// Watching once an event comes through.
	i := 0
	testutil.Eventually(t, 10*time.Second, "the watch to see an event", func() bool {
		i++
		st.SetLocal([]disk.Disk{{Name: fmt.Sprintf("loop%d", i), Device: "/dev/loop"}})
		time.Sleep(20 * time.Millisecond)
		return events.Load() > 0
	})
	stopSvc()
	<-done
	select {
	case err := <-watching:
		if err == nil || !strings.Contains(err.Error(), "diskd left the bus") {
			t.Errorf("watch ended with %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("watch did not end when the daemon left")
	}
}

// TestDialWithoutDaemon: no bus, or no daemon on it, is ErrNoDaemon with
// a reason.
func TestDialWithoutDaemon(t *testing.T) {
	testutil.RequiresTool(t, "dbus-daemon", "dbus-send")
	bus := testutil.StartDBus(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := dbusclient.Dial(ctx, bus.Address)
	if !errors.Is(err, dbusclient.ErrNoDaemon) || !strings.Contains(err.Error(), "nothing owns org.diskd.Diskd1") {
		t.Errorf("Dial with no daemon: %v", err)
	}
	bus.Stop()
	_, err = dbusclient.Dial(ctx, bus.Address)
	if !errors.Is(err, dbusclient.ErrNoDaemon) || !strings.Contains(err.Error(), "cannot connect to the bus unix:path=") {
		t.Errorf("Dial with no bus: %v", err)
	}
	_, err = dbusclient.Dial(ctx, "sytem")
	if !errors.Is(err, dbusclient.ErrNoDaemon) || !strings.Contains(err.Error(), `bus "sytem"`) {
		t.Errorf("Dial with a bad bus name: %v", err)
	}
}

// TestLinksNothingOfTheDaemon: diskctl links this package; it must not
// pull in the store, the D-Bus adapter or anything that scans or talks to
// peers.
func TestLinksNothingOfTheDaemon(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/diskd/diskd/pkg/dbusclient").Output()
	if err != nil {
		t.Fatal(err)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list -deps printed %d packages", len(deps))
	}
	for _, dep := range deps {
		for _, bad := range []string{"/pkg/store", "/pkg/dbusapi", "/pkg/scanner", "/pkg/control", "/pkg/blkid", "/pkg/wire", "go-udev", "bbolt"} {
			if strings.Contains(dep, bad) {
				t.Errorf("dbusclient depends on %s", dep)
			}
		}
	}
	_ = contract.BusName
}

// TestHistorySameAsSocket: history gives the same values and output over
// D-Bus as over the socket, for a disk that moved (two places), two disks
// with one label, nothing, and no argument.
func TestHistorySameAsSocket(t *testing.T) {
	b := start(t, dbusapi.Config{})
	fixture(b.st)
	// BACKUP (1111-2222) moves from loop3 to loop5.
	b.st.SetLocal(nil)
	b.st.SetLocal([]disk.Disk{{Name: "loop5", Device: "/dev/loop5", MajMin: "7:5", UUID: "1111-2222", Label: "BACKUP",
		Type: "ext4", Usage: "filesystem", Size: 64 << 20}})
	ctx := context.Background()
	// The bus is a batch behind the store: wait for the move to be signalled.
	testutil.Eventually(t, 10*time.Second, "the move on the bus", func() bool {
		d, err := b.dbus.List(ctx, api.ListFilter{Host: "alpha"})
		for _, x := range d {
			if x.Name == "loop5" && x.Present {
				return err == nil
			}
		}
		return false
	})
	for _, q := range []string{"BACKUP", "1111-2222", "pu-1", "NOSUCH", ""} {
		s, serr := b.sock.History(ctx, q)
		d, derr := b.dbus.History(ctx, q)
		same(t, "history "+q, s, d, serr, derr, func(w *bytes.Buffer, hs []disk.History) { api.WriteHistory(w, q, hs) })
		if q == "1111-2222" && (len(s) != 1 || len(s[0].Sightings) != 2 || s[0].Sightings[0].Name != "loop5") {
			t.Errorf("history of the moved disk = %+v", s)
		}
	}
}
