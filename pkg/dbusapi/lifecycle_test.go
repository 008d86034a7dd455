package dbusapi

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/godbus/dbus/v5"

	contract "github.com/diskd/diskd/dbus"
	"github.com/diskd/diskd/pkg/disk"
)

// managedObjects asks the service (by name) for everything it exports.
func (e *env) managedObjects(c *dbus.Conn) map[dbus.ObjectPath]map[string]map[string]dbus.Variant {
	e.t.Helper()
	var objs map[dbus.ObjectPath]map[string]map[string]dbus.Variant
	if err := c.Object(contract.BusName, contract.RootPath).Call(contract.ObjectManagerInterface+".GetManagedObjects", 0).Store(&objs); err != nil {
		e.t.Fatalf("GetManagedObjects: %v", err)
	}
	return objs
}

// TestNameTaken: when another process owns the name, the service says so
// once, waits in the queue, and takes over when the name is released.
func TestNameTaken(t *testing.T) {
	e := newEnv(t)
	squatter := e.client()
	if r, err := squatter.RequestName(contract.BusName, dbus.NameFlagDoNotQueue); err != nil || r != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("squatter RequestName: %v %v", r, err)
	}
	e.fixture()
	e.runService(Config{})
	waitFor(t, "the service to report the name taken", func() bool {
		return strings.Contains(e.svc.State(), "org.diskd.Diskd1 is owned by another process (pid ")
	})
	if _, err := squatter.ReleaseName(contract.BusName); err != nil {
		t.Fatal(err)
	}
	e.waitConnected()
	if n := len(e.managedObjects(e.client())); n != 6 {
		t.Errorf("after taking the name: %d objects, want 6", n)
	}
	if n := strings.Count(e.logs.String(), "is owned by another process"); n != 1 {
		t.Errorf("name taken logged %d times, want once:\n%s", n, e.logs)
	}
}

// TestNoBusThenBus: without a bus the service says so once and keeps
// trying; when the bus appears it connects and exports the table.
func TestNoBusThenBus(t *testing.T) {
	e := newEnv(t)
	e.bus.Stop()
	e.fixture()
	e.runService(Config{})
	waitFor(t, "the service to report no bus", func() bool { return strings.HasPrefix(e.svc.State(), "no bus ") })
	e.bus.Start()
	e.waitConnected()
	if n := len(e.managedObjects(e.client())); n != 6 {
		t.Errorf("%d objects, want 6", n)
	}
	// However often it retried meanwhile (TestNoBusRetries counts), it
	// complained once.
	if n := strings.Count(e.logs.String(), "no bus "); n != 1 {
		t.Errorf("no bus logged %d times, want once:\n%s", n, e.logs)
	}
}

// TestNoBusRetries runs Run's retry loop on synctest's clock, against an
// address where no bus is (dialling a missing socket fails at once, so
// nothing waits on I/O): a minute of retries with backoff 20 ms..100 ms
// passes at once, the service says "no bus" once, keeps that state, dials
// again after each backoff, and stops when its context ends.
func TestNoBusRetries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		logs := &logBuffer{}
		addr := "unix:path=" + filepath.Join(t.TempDir(), "no-bus-here")
		svc := New(Config{Bus: addr, Version: "test-1", RetryMin: 20 * time.Millisecond, RetryMax: 100 * time.Millisecond},
			newStore(), &fakeBackend{}, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
		dials := 0
		svc.beforeDial = func() { dials++ }
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- svc.Run(ctx) }()
		time.Sleep(time.Minute)
		synctest.Wait()
		if st := svc.State(); !strings.HasPrefix(st, "no bus ") {
			t.Errorf("state after a minute without a bus: %q", st)
		}
		// 20+40+80 ms, then every 100 ms: 603 attempts in the minute.
		if dials < 600 || dials > 605 {
			t.Errorf("%d dials in a minute with backoff 20 ms..100 ms, want about 603", dials)
		}
		if n := strings.Count(logs.String(), "no bus "); n != 1 {
			t.Errorf("no bus logged %d times in %d attempts, want once:\n%s", n, dials, logs)
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v, want nil when its context ends", err)
		}
		if st := svc.State(); st != "stopped" {
			t.Errorf("state after the end: %q", st)
		}
	})
}

// TestReconnect: the bus restarts under a running service; it notices,
// says so once, reconnects, and serves and signals as before.
func TestReconnect(t *testing.T) {
	e := startEnv(t, Config{})
	e.fixture()
	e.bus.Stop()
	waitFor(t, "the service to notice", func() bool { return !strings.HasPrefix(e.svc.State(), "connected") })
	e.bus.Start()
	e.waitConnected()
	c := e.client()
	if n := len(e.managedObjects(c)); n != 6 {
		t.Errorf("after reconnecting: %d objects, want 6", n)
	}
	ch := e.signals()
	e.st.SetLocal([]disk.Disk{{Name: "loop7", Device: "/dev/loop7"}})
	p := blockAt(localID, disk.Disk{Name: "loop7"})
	if s := next(t, ch, p); s.Name != contract.ObjectManagerInterface+".InterfacesAdded" {
		t.Errorf("after reconnecting, first signal for loop7 is %s", s.Name)
	}
	if n := strings.Count(e.logs.String(), "lost the connection"); n != 1 {
		t.Errorf("lost connection logged %d times, want once:\n%s", n, e.logs)
	}
}

// TestResyncAfterFallingBehind: when the adapter falls behind the store
// (its subscription overflows), it re-reads the table and signals the
// difference, so a client following the signals still ends up right.
func TestResyncAfterFallingBehind(t *testing.T) {
	e := newEnv(t)
	hold := make(chan struct{})
	held := make(chan struct{}, 1)
	e.runService(Config{BatchDelay: -1}, func(s *Service) {
		s.subBuffer = 4
		s.beforeApply = func() {
			select {
			case held <- struct{}{}:
				<-hold // only the first batch is held
			default:
			}
		}
	})
	e.waitConnected()
	ch := e.signals()
	e.st.SetLocal([]disk.Disk{{Name: "loop0", Device: "/dev/loop0"}})
	<-held
	var many []disk.Disk
	for i := range 50 {
		n := fmt.Sprintf("loop%d", i)
		many = append(many, disk.Disk{Name: n, Device: "/dev/" + n})
	}
	e.st.SetLocal(many) // 49 events into a buffer of 4: the store drops us
	close(hold)
	added := map[dbus.ObjectPath]bool{}
	timeout := time.After(10 * time.Second)
	for len(added) < 50 {
		select {
		case s := <-ch:
			if s.Name == contract.ObjectManagerInterface+".InterfacesAdded" {
				if p := s.Body[0].(dbus.ObjectPath); strings.HasPrefix(string(p), contract.BlockDevicesPath) {
					added[p] = true
				}
			}
		case <-timeout:
			t.Fatalf("saw InterfacesAdded for %d of 50 disks", len(added))
		}
	}
	if !strings.Contains(e.logs.String(), "fell behind the store") {
		t.Errorf("the overflow was not noticed:\n%s", e.logs)
	}
}
