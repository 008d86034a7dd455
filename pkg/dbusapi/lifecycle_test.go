package dbusapi

import (
	"fmt"
	"strings"
	"testing"
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
	// Let it retry a few times (RetryMax is 100 ms here) before checking
	// that it complained only once.
	time.Sleep(400 * time.Millisecond)
	if n := strings.Count(e.logs.String(), "no bus "); n != 1 {
		t.Errorf("no bus logged %d times, want once:\n%s", n, e.logs)
	}
	e.bus.Start()
	e.waitConnected()
	if n := len(e.managedObjects(e.client())); n != 6 {
		t.Errorf("%d objects, want 6", n)
	}
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
