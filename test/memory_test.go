package test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/diskd/diskd/pkg/testutil"
)

// TestDaemonMemoryAtRest: a daemon started on a state file of 50,000
// disks keeps none of the file resident after loading it, and after a
// burst of `diskctl list --json` its heap comes back down once it is
// quiet: its anonymous RSS returns to within half of what the burst added
// (before the memory policy it stayed where the burst left it: the
// runtime keeps free pages up to its next collection's goal). The burst
// is of lists filtered by label, which keep each disk's reference and
// label while they are made; a whole list writes the store's packs and
// allocates almost nothing.
func TestDaemonMemoryAtRest(t *testing.T) {
	testutil.RequiresRoot(t)
	_, diskctl := testutil.Binaries(t)
	stateDir := filledState(t, 50_000)
	d := testutil.StartDaemon(t, testutil.DaemonOptions{StateDir: stateDir, Args: []string{"--devices", "/dev/nonexistent"}})
	pid := d.Cmd.Process.Pid
	smaps := fmt.Sprintf("/proc/%d/smaps", pid)
	stateFile := filepath.Join(stateDir, "state.db")

	// The load read every page of the file; none of it stays resident.
	if kib := testutil.MappedRssKiB(t, smaps, stateFile); kib != 0 {
		t.Errorf("after the load %d KiB of the state file are resident (-1: not mapped)", kib)
	}
	loaded := rssKiB(t, pid, "RssAnon:")

	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer devnull.Close()
	// The burst: lists until the anonymous RSS has grown by 8 MiB (a few
	// lists today; a list that allocates less needs more of them), at most
	// 100.
	burst, lists := loaded, 0
	for ; lists < 100 && (lists < 10 || burst-loaded < 8<<10); lists++ {
		cmd := exec.Command(diskctl, "--socket", d.Socket, "list", "--json", "--label", "*")
		cmd.Stdout = devnull
		if err := cmd.Run(); err != nil {
			t.Fatalf("list: %v", err)
		}
		burst = rssKiB(t, pid, "RssAnon:")
	}
	t.Logf("anonymous RSS: %d KiB after the load, %d after %d lists", loaded, burst, lists)
	if burst-loaded < 8<<10 {
		t.Fatalf("%d lists grew the anonymous RSS by %d KiB only; the test needs a burst that grows it by 8 MiB or more", lists, burst-loaded)
	}
	var rest int
	testutil.Eventually(t, 60*time.Second, "the heap of the burst returned", func() bool {
		rest = rssKiB(t, pid, "RssAnon:")
		return rest-loaded <= (burst-loaded)/2
	})
	t.Logf("anonymous RSS at rest: %d KiB", rest)
	if kib := testutil.MappedRssKiB(t, smaps, stateFile); kib != 0 {
		t.Errorf("after the lists %d KiB of the state file are resident", kib)
	}
}
