package mountinfo

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/diskd/diskd/pkg/testutil"
	"golang.org/x/sys/unix"
)

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// startWatcher runs w in the background and returns the tables it reports.
// Cleanup stops it and checks it returned nil.
func startWatcher(t *testing.T, w *Watcher) <-chan []Mount {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	tables := make(chan []Mount, 100)
	done := make(chan error, 1)
	go func() {
		done <- w.Run(ctx, func(ms []Mount) {
			select {
			case tables <- ms:
			case <-ctx.Done():
			}
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run returned %v after cancel, want nil", err)
		}
	})
	return tables
}

// waitFor reads tables until one satisfies ok, failing after a generous
// deadline (a missed notification, not a slow one).
func waitFor(t *testing.T, tables <-chan []Mount, what string, ok func([]Mount) bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case ms := <-tables:
			if ok(ms) {
				return
			}
		case <-deadline:
			t.Fatalf("no mount table with %s was reported", what)
		}
	}
}

func TestWatcherInitialTableAndStop(t *testing.T) {
	w := &Watcher{Path: "testdata/optional.mountinfo", Logger: testLogger(t)}
	tables := startWatcher(t, w)
	ms := <-tables
	if len(ms) != 6 || ms[5].MountPoint != "/srv" {
		t.Errorf("initial table = %+v", ms)
	}
	// Cleanup cancels and checks Run returns nil: a regular file never
	// signals, so only the wake-up can end it.
}

func TestWatcherErrors(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad")
	if err := os.WriteFile(bad, []byte("garbage\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{
		filepath.Join(t.TempDir(), "missing"): "no such file",
		bad:                                   "line 1:",
	} {
		err := (&Watcher{Path: path}).Run(t.Context(), func([]Mount) { t.Error("onChange called") })
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Run(%s) = %v, want an error containing %q", path, err, want)
		}
	}
}

// TestRealWatcherSeesMount mounts an ext4 loop image on a directory whose
// name needs escaping and waits for the watcher to report it, then to
// report it gone after unmounting.
func TestRealWatcherSeesMount(t *testing.T) {
	testutil.RequiresRoot(t)
	testutil.RequiresTool(t, "mkfs.ext4", "losetup")
	dev := testutil.AttachLoop(t, testutil.LoopImage(t, 32, "mkfs.ext4", "-q"))
	var st unix.Stat_t
	if err := unix.Stat(dev, &st); err != nil {
		t.Fatal(err)
	}
	majmin := fmt.Sprintf("%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
	mnt := filepath.Join(t.TempDir(), "mount point\twith tab")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}

	tables := startWatcher(t, &Watcher{Logger: testLogger(t)})
	hasMount := func(ms []Mount) bool {
		return slices.Contains(ByDevice(ms)[majmin], mnt)
	}
	// The first table comes at start, before the mount.
	if first := <-tables; hasMount(first) {
		t.Fatalf("%s already mounted before the test mounted it", dev)
	}

	if err := unix.Mount(dev, mnt, "ext4", 0, ""); err != nil {
		t.Fatalf("mount %s: %v", dev, err)
	}
	mounted := true
	t.Cleanup(func() {
		if mounted {
			_ = unix.Unmount(mnt, unix.MNT_DETACH)
		}
	})
	waitFor(t, tables, majmin+" on "+mnt, hasMount)

	if err := unix.Unmount(mnt, 0); err != nil {
		t.Fatalf("umount: %v", err)
	}
	mounted = false
	waitFor(t, tables, majmin+" gone", func(ms []Mount) bool { return !hasMount(ms) })
}

func BenchmarkRealReread(b *testing.B) {
	fd, err := unix.Open(DefaultPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(fd)
	var buf []byte
	for b.Loop() {
		if buf, err = readAll(fd, buf[:0]); err != nil {
			b.Fatal(err)
		}
		if _, err := parseBytes(buf); err != nil {
			b.Fatal(err)
		}
	}
}
