// Package test holds diskd's root integration tests: the installed product
// (units, packages) under a real systemd. They drive real tools and clean up
// everything they create, also on failure.
package test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// run executes a command, fails the test when it fails, and returns its
// combined output.
func run(t testing.TB, args ...string) string {
	t.Helper()
	out, err := runCtx(context.Background(), args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// runCtx executes a command and returns its combined output; the error
// quotes the command and its output.
func runCtx(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	var buf bytes.Buffer
	cmd.Stdout = &buf
	cmd.Stderr = &buf
	if err := cmd.Run(); err != nil {
		return buf.String(), fmt.Errorf("%s: %w\n%s", strings.Join(args, " "), err, buf.String())
	}
	return buf.String(), nil
}

// attachLoop makes an ext4 image labelled label in dir, attaches it as a
// loop device and returns the device path. Cleanup detaches only devices
// backed by this image (never losetup -D).
func attachLoop(t testing.TB, dir, label string, size int64) string {
	t.Helper()
	img := filepath.Join(dir, label+".img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	run(t, "mkfs.ext4", "-q", "-L", label, img)
	dev := strings.TrimSpace(run(t, "losetup", "-f", "--show", img))
	t.Cleanup(func() { detachLoops(t, img) })
	return dev
}

// detachLoops detaches every loop device whose backing file is img.
func detachLoops(t testing.TB, img string) {
	out, err := runCtx(context.Background(), "losetup", "-n", "-O", "NAME", "-j", img)
	if err != nil {
		t.Errorf("list loop devices of %s: %v", img, err)
		return
	}
	for _, dev := range strings.Fields(out) {
		if _, err := runCtx(context.Background(), "losetup", "-d", dev); err != nil {
			t.Errorf("detach %s: %v", dev, err)
		}
	}
}
