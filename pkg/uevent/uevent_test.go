package uevent

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/diskd/diskd/pkg/testutil"
	"github.com/pilebones/go-udev/netlink"
	"golang.org/x/sys/unix"
)

var (
	capture = flag.Bool("capture", false, "rewrite testdata/*.uevent from real kernel uevents (root), then run with -update")
)

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func blockMatcher() netlink.Matcher {
	return &netlink.RuleDefinitions{Rules: []netlink.RuleDefinition{{Env: map[string]string{"SUBSYSTEM": "^block$"}}}}
}

func formatEvent(ev Event) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Action  %q\nName    %q\nDevType %q\n", ev.Action, ev.Name, ev.DevType)
	for _, k := range slices.Sorted(maps.Keys(ev.Env)) {
		fmt.Fprintf(&b, "Env     %s=%q\n", k, ev.Env[k])
	}
	return b.String()
}

// TestToEventGolden runs raw kernel messages captured from a loop device's
// life (see TestCaptureFixtures) through go-udev's parser, the same block
// matcher as Run, and toEvent.
func TestToEventGolden(t *testing.T) {
	inputs, _ := filepath.Glob("testdata/*.uevent")
	if len(inputs) < 4 {
		t.Fatalf("only %d fixtures", len(inputs))
	}
	for _, in := range inputs {
		t.Run(filepath.Base(in), func(t *testing.T) {
			raw, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			ue, err := netlink.ParseUEvent(raw)
			if err != nil {
				t.Fatalf("ParseUEvent: %v", err)
			}
			var got string
			if !blockMatcher().Evaluate(*ue) {
				got = "# not a block device event: dropped by the matcher\n"
			} else if ev, ok := toEvent(*ue); !ok {
				got = "# no device name: dropped\n"
			} else {
				got = formatEvent(ev)
			}
			golden := strings.TrimSuffix(in, ".uevent") + ".golden"
			testutil.Golden(t, golden, got)
		})
	}
}

func TestToEvent(t *testing.T) {
	tests := []struct {
		name string
		in   netlink.UEvent
		want string // Name; "" = dropped
	}{
		{"devpath wins", netlink.UEvent{Env: map[string]string{"DEVPATH": "/devices/virtual/block/loop3", "DEVNAME": "loop3"}}, "loop3"},
		{"slash in devname", netlink.UEvent{Env: map[string]string{"DEVPATH": "/devices/x/block/cciss!c0d0", "DEVNAME": "cciss/c0d0"}}, "cciss!c0d0"},
		{"kobj when no DEVPATH", netlink.UEvent{KObj: "/devices/virtual/block/dm-1", Env: map[string]string{}}, "dm-1"},
		{"devname only", netlink.UEvent{Env: map[string]string{"DEVNAME": "/dev/cciss/c0d1"}}, "cciss!c0d1"},
		{"nothing", netlink.UEvent{Env: map[string]string{}}, ""},
		{"root devpath", netlink.UEvent{Env: map[string]string{"DEVPATH": "/"}}, ""},
	}
	for _, tt := range tests {
		ev, ok := toEvent(tt.in)
		if ok != (tt.want != "") || ev.Name != tt.want {
			t.Errorf("%s: toEvent = %q, %v; want %q", tt.name, ev.Name, ok, tt.want)
		}
	}
}

func loopEvent(name string) netlink.UEvent {
	return netlink.UEvent{Action: netlink.CHANGE, KObj: "/devices/virtual/block/" + name,
		Env: map[string]string{"ACTION": "change", "DEVPATH": "/devices/virtual/block/" + name, "SUBSYSTEM": "block", "DEVNAME": name, "DEVTYPE": "disk"}}
}

func TestPumpForwardsAndStops(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	queue := make(chan netlink.UEvent, 2)
	errs := make(chan error, 2)
	out := make(chan Event) // unbuffered and, at the end, unread
	done := make(chan error, 1)
	go func() { done <- pump(ctx, queue, errs, out, testLogger(t)) }()

	queue <- loopEvent("loop1")
	errs <- errors.New("forged message") // non-fatal: logged, pump goes on
	queue <- loopEvent("loop2")
	for _, want := range []string{"loop1", "loop2"} {
		if ev := <-out; ev.Name != want || ev.Action != "change" || ev.DevType != "disk" {
			t.Errorf("got %+v, want a change of %s", ev, want)
		}
	}
	// Nobody reads out any more: once the pump has taken loop3 it is stuck
	// sending it, and must still stop on cancel.
	queue <- loopEvent("loop3")
	for len(queue) > 0 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("pump = %v after cancel, want nil", err)
	}
}

func TestPumpMonitorFailure(t *testing.T) {
	queue := make(chan netlink.UEvent)
	errs := make(chan error, 1)
	fatal := errors.New("unable to read uevent, err: EBADF")
	errs <- fatal
	close(queue) // what MonitorWithContext does after reporting a fatal error
	err := pump(t.Context(), queue, errs, make(chan Event), testLogger(t))
	if !errors.Is(err, fatal) {
		t.Errorf("pump = %v, want it to wrap %v", err, fatal)
	}

	queue = make(chan netlink.UEvent)
	close(queue)
	if err := pump(t.Context(), queue, make(chan error), make(chan Event), testLogger(t)); err == nil {
		t.Error("pump returned nil when the monitor stopped by itself")
	}
}

// runListener starts a Listener and returns its events; cleanup stops it
// and checks it returned nil.
func runListener(t *testing.T) <-chan Event {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	out := make(chan Event, 256)
	done := make(chan error, 1)
	go func() { done <- (&Listener{Logger: testLogger(t)}).Run(ctx, out) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v after cancel, want nil", err)
		}
	})
	return out
}

// TestRealListener: a change written to a loop device's uevent file, then
// a loop attach, each reach the listener as a block event for that name.
func TestRealListener(t *testing.T) {
	testutil.RequiresRoot(t)
	testutil.RequiresTool(t, "losetup")
	first := filepath.Base(testutil.AttachLoop(t, testutil.LoopImage(t, 8)))
	out := runListener(t)

	// The listener binds asynchronously: trigger until it hears one.
	trigger := filepath.Join("/sys/class/block", first, "uevent")
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
	for heard := false; !heard; {
		select {
		case ev := <-out:
			heard = ev.Name == first && ev.Action == "change" && ev.DevType == "disk" &&
				ev.Env["SUBSYSTEM"] == "block" && ev.Env["DEVNAME"] == first
		case <-tick.C:
			if err := os.WriteFile(trigger, []byte("change"), 0o200); err != nil {
				t.Fatalf("trigger: %v", err)
			}
		case <-deadline:
			t.Fatalf("no change event for %s", first)
		}
	}

	// Now bound: a real attach must be heard.
	second := filepath.Base(testutil.AttachLoop(t, testutil.LoopImage(t, 8)))
	deadline = time.After(10 * time.Second)
	for {
		select {
		case ev := <-out:
			if ev.Name == second && ev.Action == "change" {
				return
			}
		case <-deadline:
			t.Fatalf("no event for attaching %s", second)
		}
	}
}

// TestCaptureFixtures records the raw kernel messages of a loop device's
// life: attach, partitions added, detach. Only with -capture.
func TestCaptureFixtures(t *testing.T) {
	if !*capture {
		t.Skip("run with -capture to rewrite the fixtures from real uevents")
	}
	testutil.RequiresRoot(t)
	testutil.RequiresTool(t, "losetup", "sfdisk", "partx")
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1}); err != nil {
		t.Fatal(err)
	}
	tv := unix.NsecToTimeval((300 * time.Millisecond).Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}

	img := testutil.LoopImage(t, 64)
	sfdisk := exec.Command("sfdisk", "-q", img)
	sfdisk.Stdin = strings.NewReader("label: gpt\nsize=16MiB, type=L\n")
	if out, err := sfdisk.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v: %s", err, out)
	}
	dev, _ := testutil.AttachLoopParts(t, img)
	testutil.DetachLoop(t, img)
	name := filepath.Base(dev)

	buf := make([]byte, 64*1024)
	n := 0
	for {
		k, _, err := unix.Recvfrom(fd, buf, 0)
		if errors.Is(err, unix.EAGAIN) {
			break // quiet for 300 ms: the sequence is over
		}
		if err != nil {
			t.Fatal(err)
		}
		msg := buf[:k]
		if !bytes.Contains(msg, []byte("/"+name)) {
			continue // another engineer's device
		}
		head, _, _ := bytes.Cut(msg, []byte("@"))
		sub := "other"
		if i := bytes.Index(msg, []byte("\x00SUBSYSTEM=")); i >= 0 {
			rest := msg[i+len("\x00SUBSYSTEM="):]
			sub = string(rest[:bytes.IndexByte(rest, 0)])
		}
		n++
		file := fmt.Sprintf("testdata/%02d-%s-%s.uevent", n, head, sub)
		if err := os.WriteFile(file, msg, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("captured %d messages for %s", n, name)
}
