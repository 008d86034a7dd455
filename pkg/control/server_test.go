package control

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/diskd/diskd/pkg/api"
	"github.com/diskd/diskd/pkg/ctlclient"
	"github.com/diskd/diskd/pkg/disk"
	"github.com/diskd/diskd/pkg/localsock"
	"github.com/diskd/diskd/pkg/store"
	"github.com/diskd/diskd/pkg/testutil"
)

type fakeBackend struct {
	mu        sync.Mutex
	refreshes int
	mounts    []string // "mount|unmount Q rw|force uid"
}

func (f *fakeBackend) Mount(_ context.Context, q string, rw bool, uid uint32) (api.MountResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mounts = append(f.mounts, fmt.Sprintf("mount %q %v %d", q, rw, uid))
	return api.MountResult{Disk: q, Host: "there", Path: "/media/diskd/" + q, RW: rw}, nil
}

func (f *fakeBackend) Unmount(_ context.Context, q string, force bool, uid uint32) (api.MountResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mounts = append(f.mounts, fmt.Sprintf("unmount %q %v %d", q, force, uid))
	return api.MountResult{Disk: q, Host: "there", Path: "/media/diskd/" + q}, nil
}

func (f *fakeBackend) Status() api.Status { return api.Status{Version: "test", NodeName: "here"} }
func (f *fakeBackend) Refresh(ctx context.Context) error {
	f.mu.Lock()
	f.refreshes++
	f.mu.Unlock()
	return nil
}
func (f *fakeBackend) Ping(ctx context.Context) (int, error) { return 0, ErrNoNetwork }
func (f *fakeBackend) Announce() error                       { return ErrNoNetwork }

const peerID = disk.NodeID("00000000000000000000000000000002")

func serve(t *testing.T, idle time.Duration) (path string, st *store.Store) {
	t.Helper()
	st = store.New(store.Options{Local: disk.Node{ID: "00000000000000000000000000000001", Name: "here"}})
	st.SetLocal([]disk.Disk{{Name: "loop0", Device: "/dev/loop0", Label: "My Disk", UUID: "U0", Size: 1 << 30}})
	st.ApplyPeer(disk.Node{ID: peerID, Name: "there"}, []disk.Disk{{Name: "sdb1", Device: "/dev/sdb1", Label: "BACKUP"}})
	_, path = serveWith(t, st, Config{IdleTimeout: idle})
	return path, st
}

// serveWith serves st with cfg (listener, backend and version filled in).
func serveWith(t *testing.T, st *store.Store, cfg Config) (*Server, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "d.sock")
	l, err := localsock.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listener, cfg.Store, cfg.Version = l, st, "test"
	if cfg.Backend == nil {
		cfg.Backend = &fakeBackend{}
	}
	srv := New(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return srv, path
}

func dial(t *testing.T, path string) *ctlclient.Client {
	t.Helper()
	c, err := ctlclient.Dial(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// text drives the human form as socat would: send lines, read until the
// reply's closing blank line.
func text(t *testing.T, path string, lines ...string) []string {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	greeting, _ := r.ReadString('\n')
	var replies []string
	for _, l := range lines {
		c.Write([]byte(l + "\n"))
		var b strings.Builder
		for {
			s, err := r.ReadString('\n')
			if err != nil || s == "\n" {
				break
			}
			b.WriteString(s)
			if strings.HasPrefix(l, "{") {
				break // a JSON reply is one line
			}
		}
		replies = append(replies, b.String())
	}
	return append([]string{greeting}, replies...)
}

func TestTextCommands(t *testing.T) {
	path, _ := serve(t, time.Minute)
	got := text(t, path, "help", "list", "where My Disk", "where BACKUP", "where nothing", "frobnicate", "list there", "localhost")
	checks := []struct {
		i    int
		want []string
	}{
		{0, []string{"diskd test on here", "help"}},
		{1, []string{"list", "where", "refresh", "watch", "quit"}},
		{2, []string{"HOST", "MOUNTPOINTS", "here", "/dev/loop0", "My Disk", "1G", "there", "BACKUP"}},
		{3, []string{"My Disk is on here as /dev/loop0"}},
		{4, []string{"BACKUP is on there as /dev/sdb1"}},
		{5, []string{"nothing: not known"}},
		{6, []string{`error: unknown command "frobnicate"`}},
		{7, []string{"BACKUP"}},
		{8, []string{"here (node 00000000000000000000000000000001)"}},
	}
	for _, c := range checks {
		for _, w := range c.want {
			if !strings.Contains(got[c.i], w) {
				t.Errorf("reply %d = %q, want it to contain %q", c.i, got[c.i], w)
			}
		}
	}
	if strings.Contains(got[7], "My Disk") {
		t.Errorf("list there shows another host's disk: %q", got[7])
	}
}

func TestJSONCommands(t *testing.T) {
	path, _ := serve(t, time.Minute)
	c := dial(t, path)
	ctx := context.Background()
	ds, err := c.List(ctx, api.ListFilter{})
	if err != nil || len(ds) != 2 || ds[0].Host != "here" || ds[0].Mounts == nil {
		t.Fatalf("List = %+v, %v", ds, err)
	}
	ds, err = c.List(ctx, api.ListFilter{Host: "there"})
	if err != nil || len(ds) != 1 || ds[0].Label != "BACKUP" {
		t.Errorf("List(there) = %+v, %v", ds, err)
	}
	if _, err := c.List(ctx, api.ListFilter{Host: "nowhere"}); err == nil || !strings.Contains(err.Error(), "no host") {
		t.Errorf("List(nowhere) err = %v", err)
	}
	w, err := c.Where(ctx, "My Disk")
	if err != nil || len(w) != 1 || w[0].Device != "/dev/loop0" {
		t.Errorf("Where = %+v, %v", w, err)
	}
	if err := c.Refresh(ctx); err != nil {
		t.Error(err)
	}
	if _, err := c.Ping(ctx); err == nil || !strings.Contains(err.Error(), "network is off") {
		t.Errorf("Ping err = %v", err)
	}
	// An unknown command is an error and the session goes on.
	if err := c.Do(ctx, api.Request{Cmd: "nope"}, nil); err == nil {
		t.Error("unknown command accepted")
	}
	if _, err := c.Status(ctx); err != nil {
		t.Errorf("session did not survive an unknown command: %v", err)
	}
}

func TestLimitsCloseOnlyTheOffendingSession(t *testing.T) {
	path, _ := serve(t, 200*time.Millisecond)
	good := dial(t, path)

	long, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer long.Close()
	long.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(long)
	r.ReadString('\n')
	long.Write([]byte(strings.Repeat("x", api.MaxLineBytes+10) + "\n"))
	msg, _ := r.ReadString('\n')
	if !strings.Contains(msg, "line longer than") {
		t.Errorf("long line reply = %q", msg)
	}
	if _, err := r.ReadString('\n'); err == nil {
		t.Error("session with a too-long line stayed open")
	}

	idle, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	idle.SetDeadline(time.Now().Add(5 * time.Second))
	ri := bufio.NewReader(idle)
	ri.ReadString('\n')
	msg, _ = ri.ReadString('\n') // nothing sent: the idle timeout fires
	if !strings.Contains(msg, "idle") {
		t.Errorf("idle reply = %q", msg)
	}

	// The well-behaved session is unaffected (it was idle too, so redial).
	good.Close()
	if _, err := dial(t, path).Status(context.Background()); err != nil {
		t.Errorf("server stopped answering: %v", err)
	}
}

func TestManyConcurrentClients(t *testing.T) {
	path, _ := serve(t, time.Minute)
	const n = 200
	var wg sync.WaitGroup
	errs := make(chan error, n)
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			c, err := ctlclient.Dial(ctx, path)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			ds, err := c.List(ctx, api.ListFilter{})
			if err == nil && len(ds) != 2 {
				err = errors.New("short list")
			}
			errs <- err
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	failed := 0
	for err := range errs {
		if err != nil {
			failed++
			t.Log(err)
		}
	}
	if failed > 0 {
		t.Errorf("%d of %d concurrent clients failed", failed, n)
	}
}

func TestWatchStreamsChanges(t *testing.T) {
	path, st := serve(t, time.Minute)
	c := dial(t, path)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan api.WatchEvent, 10)
	go c.Watch(ctx, func(ev api.WatchEvent) { got <- ev })
	// The subscription starts when the server handles the request; retry
	// the change until an event arrives.
	deadline := time.After(5 * time.Second)
	for i := 0; ; i++ {
		st.SetLocal([]disk.Disk{{Name: "loop0", Device: "/dev/loop0", Label: "My Disk", UUID: "U0", Size: uint64(1<<30 + i)}})
		select {
		case ev := <-got:
			if ev.Kind != "changed" || ev.Disk == nil || ev.Disk.Name != "loop0" {
				t.Fatalf("event = %+v", ev)
			}
			return
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			t.Fatal("no watch event")
		}
	}
}

// TestMountCommands: the text form takes the label as the rest of the
// line after an optional --rw / --force; the JSON form takes fields.
// (Who may mount is tested through the real binary, as root and nobody.)
func TestMountCommands(t *testing.T) {
	testutil.RequiresRoot(t)
	st := store.New(store.Options{Local: disk.Node{ID: "00000000000000000000000000000001", Name: "here"}})
	path := filepath.Join(t.TempDir(), "d.sock")
	l, err := localsock.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	be := &fakeBackend{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go New(Config{Listener: l, Store: st, Backend: be, Version: "test"}).Serve(ctx)
	got := text(t, path, "mount My Disk", "mount --rw My Disk", "unmount --force  My Disk", "unmount --rw X", "mount")
	wantText := []string{"", "My Disk mounted read-only on there at /media/diskd/My Disk",
		"My Disk mounted read-write on there at /media/diskd/My Disk", "My Disk unmounted on there", "--rw X unmounted", "usage: mount [--rw] LABEL|UUID"}
	for i := 1; i < len(wantText); i++ {
		if !strings.Contains(got[i], wantText[i]) {
			t.Errorf("reply %d = %q, want %q", i, got[i], wantText[i])
		}
	}
	var r api.MountResult
	if err := dial(t, path).Do(ctx, api.Request{Cmd: "mount", Arg: "BACKUP", RW: true}, &r); err != nil || r.Path != "/media/diskd/BACKUP" || !r.RW {
		t.Errorf("JSON mount: %+v, %v", r, err)
	}
	want := []string{`mount "My Disk" false 0`, `mount "My Disk" true 0`, `unmount "My Disk" true 0`, `unmount "--rw X" false 0`, `mount "BACKUP" true 0`}
	be.mu.Lock()
	defer be.mu.Unlock()
	if !slices.Equal(be.mounts, want) {
		t.Errorf("backend saw %q, want %q", be.mounts, want)
	}
}

// TestHistory: the history command in both forms, after the local disk
// moved to the peer (one disk, two places, newest first), and the answer
// for nothing.
func TestHistory(t *testing.T) {
	path, st := serve(t, time.Minute)
	st.SetLocal(nil)
	st.ApplyPeer(disk.Node{ID: peerID, Name: "there"}, []disk.Disk{
		{Name: "sdb1", Device: "/dev/sdb1", Label: "BACKUP"},
		{Name: "sdc1", Device: "/dev/sdc1", Label: "My Disk", UUID: "u0", Size: 1 << 30},
	})
	got := text(t, path, "history My Disk", "history nothing", "history")
	for i, want := range [][]string{
		{"My Disk (uuid:u0), present", "HOST", "there  /dev/sdc1", "now", "here   /dev/loop0"},
		{"nothing: not known"},
		{"error: usage: history LABEL|UUID"},
	} {
		for _, w := range want {
			if !strings.Contains(got[i+1], w) {
				t.Errorf("reply %d = %q, want it to contain %q", i+1, got[i+1], w)
			}
		}
	}
	hs, err := dial(t, path).History(context.Background(), "U0")
	if err != nil || len(hs) != 1 || len(hs[0].Sightings) != 2 {
		t.Fatalf("History(U0) = %+v, %v", hs, err)
	}
	if s := hs[0].Sightings; s[0].Host != "there" || s[1].Host != "here" || s[1].Device != "/dev/loop0" {
		t.Errorf("sightings = %+v, want there then here", s)
	}
	if hs, err := dial(t, path).History(context.Background(), "nothing"); err != nil || hs == nil || len(hs) != 0 {
		t.Errorf("History(nothing) = %#v, %v; want an empty list", hs, err)
	}
}
