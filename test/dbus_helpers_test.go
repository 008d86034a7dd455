package test

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	contract "github.com/diskd/diskd/dbus"
	"github.com/diskd/diskd/pkg/testutil"
)

// A private system-like bus with diskd's policy installed.
func startPolicyBus(t testing.TB) *testutil.DBus {
	t.Helper()
	testutil.RequiresTool(t, "dbus-daemon", "dbus-send", "busctl", "gdbus", "dbus-monitor")
	bus := testutil.StartDBus(t)
	bus.InstallPolicy(filepath.Join(testutil.RepoRoot(t), "dbus", "org.diskd.Diskd1.conf"))
	return bus
}

// waitBusName waits until something owns org.diskd.Diskd1 on the bus.
func waitBusName(t testing.TB, bus *testutil.DBus) {
	t.Helper()
	c, err := dbus.Connect(bus.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	testutil.Eventually(t, 20*time.Second, "diskd to own "+contract.BusName, func() bool {
		var has bool
		err := c.BusObject().Call("org.freedesktop.DBus.NameHasOwner", 0, contract.BusName).Store(&has)
		return err == nil && has
	})
}

// busctl runs busctl on the bus and returns its stdout.
func busctl(t testing.TB, bus *testutil.DBus, args ...string) string {
	t.Helper()
	out, err := busctlErr(bus, args...)
	if err != nil {
		t.Fatalf("busctl %s: %v", strings.Join(args, " "), err)
	}
	return out
}

func busctlErr(bus *testutil.DBus, args ...string) (string, error) {
	cmd := exec.Command("busctl", append([]string{"--address=" + bus.Address}, args...)...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	if err := cmd.Run(); err != nil {
		return o.String(), &cmdError{err, e.String()}
	}
	return o.String(), nil
}

type cmdError struct {
	err    error
	stderr string
}

func (e *cmdError) Error() string { return e.err.Error() + ": " + strings.TrimSpace(e.stderr) }

// busMonitor is dbus-monitor on the bus, its lines collected.
type busMonitor struct {
	mu    sync.Mutex
	lines []string
}

// monitorBus starts dbus-monitor for diskd's signals and waits until it
// listens (it shows a probe signal the test sends).
func monitorBus(t testing.TB, bus *testutil.DBus) *busMonitor {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, "dbus-monitor", "--address", bus.Address, "type='signal',path_namespace='/org/diskd/Diskd1'")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	m := &busMonitor{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			m.mu.Lock()
			m.lines = append(m.lines, sc.Text())
			m.mu.Unlock()
		}
		io.Copy(io.Discard, out)
	}()
	t.Cleanup(func() {
		cancel() // kills this dbus-monitor, by its PID
		<-done
		cmd.Wait()
		if t.Failed() {
			t.Logf("dbus-monitor saw:\n%s", strings.Join(m.lines, "\n"))
		}
	})
	probe, err := dbus.Connect(bus.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close()
	testutil.Eventually(t, 10*time.Second, "dbus-monitor to listen", func() bool {
		probe.Emit("/org/diskd/Diskd1/probe", "org.diskd.Test.Probe")
		return m.find("member=Probe") != nil
	})
	return m
}

// signal is one message dbus-monitor printed: its header line and body.
type signal struct {
	head string
	body string
}

// find returns the first signal whose header contains head and whose body
// contains each of body.
func (m *busMonitor) find(head string, body ...string) *signal {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, l := range m.lines {
		if !strings.HasPrefix(l, "signal ") || !strings.Contains(l, head) {
			continue
		}
		end := i + 1
		for end < len(m.lines) && !strings.HasPrefix(m.lines[end], "signal ") && !strings.HasPrefix(m.lines[end], "method ") {
			end++
		}
		s := &signal{head: l, body: strings.Join(m.lines[i+1:end], "\n")}
		ok := true
		for _, b := range body {
			ok = ok && strings.Contains(s.body, b)
		}
		if ok {
			return s
		}
	}
	return nil
}

// wait waits for a signal as find describes it.
func (m *busMonitor) wait(t testing.TB, what, head string, body ...string) *signal {
	t.Helper()
	var s *signal
	testutil.Eventually(t, 20*time.Second, what, func() bool {
		s = m.find(head, body...)
		return s != nil
	})
	return s
}
