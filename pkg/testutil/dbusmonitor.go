package testutil

import (
	"bufio"
	"context"
	"io"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
)

// Monitor is dbus-monitor on a test bus, its output kept line by line.
type Monitor struct {
	mu    sync.Mutex
	lines []string
}

// Signal is one message dbus-monitor printed: its header line and body.
type Signal struct {
	Head string
	Body string
}

// Monitor starts dbus-monitor with match rule match and returns once it
// listens (it shows a probe signal sent to check). It is stopped, by PID,
// when the test ends; what it saw is logged if the test failed.
func (b *DBus) Monitor(t testing.TB, match string) *Monitor {
	t.Helper()
	RequiresTool(t, "dbus-monitor")
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, "dbus-monitor", "--address", b.Address, match)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	m := &Monitor{}
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
		cancel()
		<-done
		cmd.Wait()
		if t.Failed() {
			t.Logf("dbus-monitor saw:\n%s", m.Text())
		}
	})
	probe, err := dbus.Connect(b.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close()
	Eventually(t, 10*time.Second, "dbus-monitor to listen", func() bool {
		probe.Emit("/org/diskd/Diskd1/probe", "org.diskd.Test.Probe")
		return m.Find("member=Probe") != nil
	})
	return m
}

// Text is everything the monitor printed so far.
func (m *Monitor) Text() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return strings.Join(m.lines, "\n")
}

// Find returns the first signal whose header contains head and whose body
// (the lines up to the next message) contains each of body.
func (m *Monitor) Find(head string, body ...string) *Signal {
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
		s := &Signal{Head: l, Body: strings.Join(m.lines[i+1:end], "\n")}
		ok := true
		for _, b := range body {
			ok = ok && strings.Contains(s.Body, b)
		}
		if ok {
			return s
		}
	}
	return nil
}

// Wait waits (at most 20 s) for a signal as Find describes it.
func (m *Monitor) Wait(t testing.TB, what, head string, body ...string) *Signal {
	t.Helper()
	var s *Signal
	Eventually(t, 20*time.Second, what, func() bool {
		s = m.Find(head, body...)
		return s != nil
	})
	return s
}
